package scion.test.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import scion.test.Fixtures;
import scion.test.cli.CliRun;

/** Inputs of the runtime tests: MiniLM with its tokenizer beside it, its f16 conversion, the sample English text. */
final class RuntimeFixtures {
    private RuntimeFixtures() {}

    private static Path dir;

    /** A folder with {@code all-minilm-l6-v2.onnx} (a link to the test copy) and {@code all-minilm-l6-v2-tokenizer.json}. */
    static synchronized Path miniLmDir() {
        if (dir == null) {
            try {
                Path d = Files.createTempDirectory("scion-runtime");
                Files.createSymbolicLink(d.resolve("all-minilm-l6-v2.onnx"), Fixtures.miniLmOnnx());
                try (InputStream in = RuntimeFixtures.class.getResourceAsStream("/all-minilm-l6-v2-tokenizer.json")) {
                    Files.copy(in, d.resolve("all-minilm-l6-v2-tokenizer.json"));
                }
                CliRun r = CliRun.of(
                        "convert",
                        d.resolve("all-minilm-l6-v2.onnx").toString(),
                        d.resolve("half.onnx").toString(),
                        "--dtype",
                        "f16");
                assertEquals(0, r.code(), r.toString());
                for (String f :
                        new String[] {"all-minilm-l6-v2.onnx", "all-minilm-l6-v2-tokenizer.json", "half.onnx"}) {
                    d.resolve(f).toFile().deleteOnExit();
                }
                d.toFile().deleteOnExit();
                dir = d;
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
        return dir;
    }

    static Path miniLm() {
        return miniLmDir().resolve("all-minilm-l6-v2.onnx");
    }

    /** MiniLM with every weight stored in f16 ({@code scion convert --dtype f16}). */
    static Path miniLmF16() {
        return miniLmDir().resolve("half.onnx");
    }

    private static Path english;

    /**
     * Four paragraphs of plain English about the history of bridges (written for Scion, 2.4 kB ASCII): the demo's
     * text, a resource of the cli jar, copied once per test JVM to a file.
     */
    static synchronized Path englishText() {
        if (english == null) {
            try (java.io.InputStream in = RuntimeFixtures.class.getResourceAsStream("/scion/demo/bridges.txt")) {
                Path f = java.nio.file.Files.createTempFile("scion-bridges", ".txt");
                f.toFile().deleteOnExit();
                java.nio.file.Files.copy(in, f, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
                english = f;
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        }
        return english;
    }
}
