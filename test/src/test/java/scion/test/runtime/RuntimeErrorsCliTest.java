package scion.test.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.runtime.SessionFactory;
import scion.test.Fixtures;
import scion.test.cli.CliRun;

/** Devices and bad inputs of {@code validate} and {@code eval}: exit codes 5, 3 and 2 with one-line messages. */
class RuntimeErrorsCliTest {

    /**
     * {@code --device cuda} without CUDA: exit 5 and a message naming what is missing, never a CPU run. On the default
     * (CPU) build the CUDA provider itself is missing; on a -Pgpu build without a GPU, the NVIDIA libraries.
     */
    @Test
    void cudaWithoutCudaExitsFiveWithTheRequirements() {
        boolean gpuBuild = SessionFactory.cudaProviderPresent();
        String m = RuntimeFixtures.miniLm().toString();
        CliRun r = CliRun.of("validate", m, RuntimeFixtures.miniLmF16().toString(), "--device", "cuda");
        if (gpuBuild && r.code() == 0) {
            assertTrue(r.out().contains(", cuda"), "a real GPU: ran on CUDA\n" + r.out());
            return;
        }
        assertEquals(5, r.code(), r.toString());
        assertEquals("", r.out(), "nothing ran");
        String err = r.err().strip();
        assertTrue(
                err.startsWith("scion: --device cuda: CUDA is not available; expected the onnxruntime_gpu 1.23.2"
                        + " build (mvn -Pgpu) with an NVIDIA driver (libcuda.so.1), CUDA 12.x (libcudart.so.12,"
                        + " libcublas.so.12, libcublasLt.so.12, libcufft.so.11, libcurand.so.10) and cuDNN 9.x"
                        + " (libcudnn.so.9) on the library path, found "),
                err);
        if (!gpuBuild) {
            assertTrue(err.contains("found the CPU-only build com.microsoft.onnxruntime:onnxruntime 1.23.2"), err);
            assertEquals(1, err.split("\n").length, err);
        }
        assertTrue(err.endsWith("or run with --device cpu or --device auto"), err);

        CliRun e = CliRun.of(
                "eval", Fixtures.resource("onnx/llama.onnx").toString(), "--random-tokens", "20", "--device", "cuda");
        assertEquals(gpuBuild && e.code() == 0 ? 0 : 5, e.code(), e.toString());
    }

    @Test
    void autoFallsBackToTheCpuAndSaysSo() throws Exception {
        CliRun r = CliRun.of(
                "eval",
                Fixtures.resource("onnx/llama.onnx").toString(),
                "--random-tokens",
                "20",
                "--device",
                "auto",
                "--json");
        assertEquals(0, r.code(), r.toString());
        var model = scion.io.Json.mapper().readTree(r.out()).get("model");
        if (model.get("device").asText().equals("cpu")) {
            assertTrue(model.get("device_note").asText().startsWith("auto: no CUDA ("), model.toString());
        } else {
            assertEquals("cuda", model.get("device").asText());
        }
    }

    @Test
    void badInputsExitThreeWithOneLine(@TempDir Path dir) throws Exception {
        String llama = Fixtures.resource("onnx/llama.onnx").toString();
        String bert = Fixtures.resource("onnx/bert.onnx").toString();
        String m = RuntimeFixtures.miniLm().toString();
        Path accents = dir.resolve("accents.txt");
        Files.writeString(accents, "Un pont très ancien.", StandardCharsets.UTF_8);
        Path latin1 = dir.resolve("latin1.txt");
        Files.write(latin1, new byte[] {'c', 'a', 'f', (byte) 0xE9});
        Path empty = dir.resolve("empty.txt");
        Files.writeString(empty, "  \n");
        Path garbage = dir.resolve("garbage.onnx");
        Files.writeString(garbage, "not a model");
        List<String[]> cases = new ArrayList<>();
        cases.add(new String[] {"text outside a 128-byte vocabulary", "eval", llama, "--text", accents.toString()});
        cases.add(new String[] {"not UTF-8", "eval", llama, "--text", latin1.toString()});
        cases.add(new String[] {"empty text", "eval", llama, "--text", empty.toString()});
        cases.add(new String[] {
            "no text file", "eval", llama, "--text", dir.resolve("none.txt").toString()
        });
        cases.add(new String[] {"no model", "eval", dir.resolve("none.onnx").toString(), "--random-tokens", "9"});
        cases.add(new String[] {"not a model", "eval", garbage.toString(), "--random-tokens", "9"});
        cases.add(new String[] {"bad gate", "validate", llama, llama, "--expect", "close"});
        cases.add(new String[] {"bad device", "validate", llama, llama, "--device", "tpu"});
        cases.add(new String[] {"encoder vs causal LM", "validate", llama, bert});
        cases.add(new String[] {"vocabularies differ", "validate", bert, m});
        cases.add(
                new String[] {"longer than the positions", "eval", bert, "--random-tokens", "9", "--max-length", "65"});
        cases.add(new String[] {"stride 0", "eval", llama, "--random-tokens", "9", "--stride", "0"});
        cases.add(new String[] {"one token", "eval", llama, "--random-tokens", "1"});
        cases.add(new String[] {"batch 0", "eval", llama, "--random-tokens", "9", "--batch", "0"});
        cases.add(new String[] {
            "no tokenizer, big vocabulary", "eval", dir.resolve("m.onnx").toString()
        });
        for (String[] c : cases) {
            if (c[2].endsWith("m.onnx")) {
                Files.createSymbolicLink(dir.resolve("m.onnx"), RuntimeFixtures.miniLm());
                c = new String[] {c[0], "eval", dir.resolve("m.onnx").toString(), "--text", accents.toString()};
            }
            String[] args = java.util.Arrays.copyOfRange(c, 1, c.length);
            CliRun r = CliRun.of(args);
            assertEquals(3, r.code(), c[0] + ": " + r);
            assertEquals("", r.out(), c[0]);
            String err = r.err().strip();
            assertEquals(1, err.split("\n").length, c[0] + ": " + err);
            assertTrue(err.startsWith("scion: ") && err.contains("; expected "), c[0] + ": " + err);
        }
    }

    @Test
    void usageErrorsExitTwo() {
        String llama = Fixtures.resource("onnx/llama.onnx").toString();
        assertEquals(2, CliRun.of("eval", llama).code(), "eval needs --text or --random-tokens");
        assertEquals(
                2,
                CliRun.of("eval", llama, "--text", "a.txt", "--random-tokens", "5")
                        .code());
        assertEquals(2, CliRun.of("validate", llama).code(), "two models");
        assertEquals(
                2, CliRun.of("validate", llama, llama, "--random-tokens", "x").code());
    }
}
