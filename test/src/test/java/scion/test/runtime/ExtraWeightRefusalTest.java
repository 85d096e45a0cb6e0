package scion.test.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import scion.io.safetensors.SafetensorsCheckpoint;
import scion.io.safetensors.SafetensorsReader;
import scion.io.safetensors.SafetensorsWriter;
import scion.io.tensor.BufferTensor;
import scion.io.tensor.Tensor;
import scion.test.Fixtures;
import scion.test.cli.CliRun;

/**
 * The judge sees every weight: a checkpoint with one weight more than its graph computes with is refused by {@code
 * export}, {@code validate} and {@code eval} (all three build the ONNX graph of the checkpoint), naming that weight,
 * with exit code 3 and nothing written. Two kinds of extra weight, each written at test time into a copy of a fixture
 * with the project's {@link SafetensorsWriter}:
 *
 * <ul>
 *   <li>one the family does not declare at all (a Qwen3-style {@code q_norm} in a llama checkpoint): refused when the
 *       checkpoint is read, before any graph is built;
 *   <li>one the family declares but this model's graph does not read (an {@code lm_head.weight} in a qwen2 checkpoint
 *       whose config ties the head to the embedding): refused by the exporter, which checks that every weight it was
 *       given is an input of the graph it built.
 * </ul>
 */
class ExtraWeightRefusalTest {
    @TempDir
    Path tmp;

    /** A copy of a fixture with {@code extra} added to its weights (rewritten as one safetensors file). */
    private Path withExtra(String fixture, Tensor extra) throws IOException {
        Path src = Fixtures.hf(fixture);
        Path dst = tmp.resolve(fixture + "-extra");
        try (SafetensorsCheckpoint ckpt = SafetensorsReader.open(src)) {
            List<Tensor> tensors = new ArrayList<>(ckpt.tensors());
            tensors.add(extra);
            SafetensorsWriter.create().write(dst, tensors);
        }
        try (Stream<Path> files = Files.list(src)) {
            for (Path f : (Iterable<Path>) files::iterator) {
                if (!f.getFileName().toString().contains(".safetensors")) {
                    Files.copy(f, dst.resolve(f.getFileName()));
                }
            }
        }
        return dst;
    }

    private static Tensor ones(String name, long... shape) {
        int n = 1;
        for (long s : shape) {
            n *= (int) s;
        }
        float[] v = new float[n];
        java.util.Arrays.fill(v, 1f);
        return BufferTensor.ofFloats(name, shape, v);
    }

    private CliRun run(String command, Path model) {
        switch (command) {
            case "export":
                return CliRun.of(
                        "export", model.toString(), tmp.resolve("out.onnx").toString());
            case "validate":
                return CliRun.of(
                        "validate",
                        model.toString(),
                        Fixtures.hf("llama").toString(),
                        "--random-tokens",
                        "16",
                        "--latency-runs",
                        "0");
            case "eval":
                return CliRun.of("eval", model.toString(), "--random-tokens", "16");
            default:
                throw new IllegalArgumentException(command);
        }
    }

    private void assertRefused(CliRun r, String... parts) throws IOException {
        assertEquals(3, r.code(), r.toString());
        for (String p : parts) {
            assertTrue(r.err().contains(p), "stderr should mention '" + p + "': " + r.err());
        }
        assertFalse(Files.exists(tmp.resolve("out.onnx")), "nothing written");
        try (Stream<Path> files = Files.list(tmp)) {
            assertTrue(files.noneMatch(f -> f.getFileName().toString().startsWith("out.onnx")), "no staging left");
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"export", "validate", "eval"})
    void aWeightTheFamilyDoesNotDeclareIsRefusedByName(String command) throws IOException {
        Path model = withExtra("llama", ones("model.layers.0.self_attn.q_norm.weight", 16));
        assertRefused(
                run(command, model),
                "model.safetensors",
                "tensor 'model.layers.0.self_attn.q_norm.weight'",
                "is not part of the llama architecture");
    }

    @ParameterizedTest
    @ValueSource(strings = {"export", "validate", "eval"})
    void aDeclaredWeightTheGraphDoesNotReadIsRefusedByName(String command) throws IOException {
        Path model = withExtra("qwen2", ones("lm_head.weight", 128, 64));
        assertRefused(
                run(command, model),
                "model.safetensors: tensor 'lm_head.weight' is not used by the qwen2 export",
                "expected only the family's declared weights",
                "tie_word_embeddings is true");
    }
}
