package scion.test.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtSession;
import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.Checkpoint;
import scion.io.Json;
import scion.io.Model;
import scion.io.tensor.DType;
import scion.io.tensor.HalfPrecisionOps;
import scion.io.tensor.Tensor;
import scion.test.Fixtures;

/** {@code scion convert}: bit-exact round trips, re-typing, re-sharding, and the output loads where it must. */
class ConvertCliTest {

    static byte[] bytes(Tensor t) {
        ByteBuffer b = ByteBuffer.allocate(Math.toIntExact(t.byteSize()));
        t.readBytes(0, b);
        return b.array();
    }

    static void assertSameTensors(Checkpoint a, Checkpoint b) {
        assertEquals(a.tensors().size(), b.tensors().size());
        for (Tensor t : a.tensors()) {
            Tensor u = b.find(t.name()).orElseThrow(() -> new AssertionError("missing " + t.name()));
            assertEquals(t.dtype(), u.dtype(), t.name());
            assertArrayEquals(t.shape(), u.shape(), t.name());
            assertArrayEquals(bytes(t), bytes(u), t.name());
        }
    }

    @Test
    void safetensorsSingleToShardedToSingleIsBitExact(@TempDir Path dir) throws Exception {
        Path sharded = dir.resolve("sharded");
        CliRun r = CliRun.of("convert", Fixtures.hf("llama").toString(), sharded.toString(), "--shard-size", "100kB");
        assertEquals(0, r.code(), r.toString());
        assertTrue(Files.exists(sharded.resolve("model.safetensors.index.json")));
        try (Stream<Path> s = Files.list(sharded)) {
            assertTrue(s.filter(p -> p.toString().endsWith(".safetensors")).count() >= 3, "at least 3 shards");
        }
        Path single = dir.resolve("single");
        r = CliRun.of("convert", sharded.toString(), single.toString());
        assertEquals(0, r.code(), r.toString());
        try (Model src = Model.open(Fixtures.hf("llama"));
                Model a = Model.open(sharded);
                Model b = Model.open(single)) {
            assertSameTensors(src.checkpoint(), a.checkpoint());
            assertSameTensors(src.checkpoint(), b.checkpoint());
            assertEquals("convert", b.checkpoint().metadata().get("scion.operator"));
            assertTrue(b.checkpoint().metadata().get("scion.input").startsWith("sharded sha256:"));
        }
        JsonNode cfgIn = Json.mapper()
                .readTree(Fixtures.hf("llama").resolve("config.json").toFile());
        JsonNode cfgOut = Json.mapper().readTree(single.resolve("config.json").toFile());
        assertEquals(cfgIn, cfgOut, "config.json unchanged when nothing changed");
        assertTrue(Files.exists(single.resolve("scion-recipe.json")));
    }

    @Test
    void theHfShardedFixtureConvertsToOneFileBitExact(@TempDir Path dir) {
        Path out = dir.resolve("one.safetensors");
        // A lone .safetensors output needs its config beside it to be opened again: check the tensors directly.
        CliRun r = CliRun.of("convert", Fixtures.hf("llama-sharded").toString(), out.toString());
        assertEquals(0, r.code(), r.toString());
        try (Model src = Model.open(Fixtures.hf("llama-sharded"));
                Checkpoint c = scion.io.safetensors.SafetensorsReader.open(out)) {
            assertSameTensors(src.checkpoint(), c);
        }
    }

    @Test
    void bf16ConversionRoundsEveryValueToNearestEven(@TempDir Path dir) throws Exception {
        Path out = dir.resolve("bf16");
        CliRun r = CliRun.of("convert", Fixtures.hf("qwen2").toString(), out.toString(), "--dtype", "bf16", "--json");
        assertEquals(0, r.code(), r.toString());
        try (Model src = Model.open(Fixtures.hf("qwen2"));
                Model m = Model.open(out)) {
            for (Tensor t : src.checkpoint().tensors()) {
                Tensor u = m.checkpoint().find(t.name()).orElseThrow();
                assertEquals(DType.BF16, u.dtype());
                float[] a = t.toFloats();
                float[] b = u.toFloats();
                for (int i = 0; i < a.length; i++) {
                    assertEquals(HalfPrecisionOps.bf16ToF32(HalfPrecisionOps.f32ToBf16(a[i])), b[i], t.name());
                }
            }
            assertEquals(
                    "bfloat16",
                    m.config().string(scion.io.config.ModelConfig.Field.DTYPE).orElseThrow());
        }
        JsonNode cfgIn = Json.mapper()
                .readTree(Fixtures.hf("qwen2").resolve("config.json").toFile());
        JsonNode cfgOut = Json.mapper().readTree(out.resolve("config.json").toFile());
        ((com.fasterxml.jackson.databind.node.ObjectNode) cfgIn).put("dtype", "bfloat16");
        assertEquals(cfgIn, cfgOut, "only the dtype field changed");
    }

    @Test
    void onnxRoundTripIsBitExactAndRunsIdentically(@TempDir Path dir) throws Exception {
        Path out = dir.resolve("copy.onnx");
        CliRun r = CliRun.of("convert", Fixtures.miniLmOnnx().toString(), out.toString());
        assertEquals(0, r.code(), r.toString());
        try (Model a = Model.open(Fixtures.miniLmOnnx());
                Model b = Model.open(out)) {
            List<Tensor> wa = a.graph().weights().stream().map(w -> w.tensor()).toList();
            for (Tensor t : wa) {
                assertArrayEquals(bytes(t), bytes(b.checkpoint().find(t.name()).orElseThrow()), t.name());
            }
            assertEquals("convert", b.checkpoint().metadata().get("scion.operator"));
        }
        float[] x = run(Fixtures.miniLmOnnx());
        float[] y = run(out);
        assertArrayEquals(x, y, "ONNX Runtime gives identical outputs on the written file");

        Path ext = dir.resolve("ext.onnx");
        r = CliRun.of("convert", Fixtures.miniLmOnnx().toString(), ext.toString(), "--external-data", "on");
        assertEquals(0, r.code(), r.toString());
        assertTrue(Files.size(ext) < 1_000_000, "weights moved out of the .onnx");
        assertTrue(Files.exists(dir.resolve("ext.onnx.data")));
        assertArrayEquals(x, run(ext), "external data: identical outputs");

        Path half = dir.resolve("half.onnx");
        r = CliRun.of("convert", Fixtures.miniLmOnnx().toString(), half.toString(), "--dtype", "f16");
        assertEquals(0, r.code(), r.toString());
        assertTrue(Files.size(half) < 0.55 * Files.size(Fixtures.miniLmOnnx()), "about half the size");
        float[] z = run(half);
        double dot = 0, nx = 0, nz = 0;
        for (int i = 0; i < x.length; i++) {
            dot += x[i] * z[i];
            nx += x[i] * x[i];
            nz += z[i] * z[i];
        }
        assertTrue(dot / Math.sqrt(nx * nz) > 0.9999, "f16 weights: cosine " + dot / Math.sqrt(nx * nz));
    }

    /** last_hidden_state of MiniLM for fixed token ids. */
    static float[] run(Path onnx) throws Exception {
        OrtEnvironment env = OrtEnvironment.getEnvironment();
        long[][] ids = {{101, 7592, 2088, 1010, 2023, 2003, 1037, 3231, 102}};
        long[][] mask = {{1, 1, 1, 1, 1, 1, 1, 1, 1}};
        long[][] types = new long[1][9];
        try (OrtSession s = env.createSession(onnx.toString(), new OrtSession.SessionOptions());
                OnnxTensor a = OnnxTensor.createTensor(env, ids);
                OnnxTensor b = OnnxTensor.createTensor(env, mask);
                OnnxTensor c = OnnxTensor.createTensor(env, types);
                OrtSession.Result res = s.run(Map.of("input_ids", a, "attention_mask", b, "token_type_ids", c))) {
            float[][][] out = (float[][][]) res.get(0).getValue();
            float[] flat = new float[out[0].length * out[0][0].length];
            for (int i = 0; i < out[0].length; i++) {
                System.arraycopy(out[0][i], 0, flat, i * out[0][0].length, out[0][0].length);
            }
            return flat;
        }
    }

    /** Our safetensors output loads in Hugging Face transformers and computes the fixture's outputs. */
    @Test
    void convertedCheckpointsLoadInTransformers(@TempDir Path dir) throws Exception {
        Path python = Path.of(System.getProperty("scion.python", "/work/venv/bin/python"));
        assumeTrue(Files.isExecutable(python), "Python with transformers not available: interop check skipped");
        for (String family : List.of("llama", "gpt2", "gpt_neox", "bert")) {
            Path out = dir.resolve(family);
            CliRun r = CliRun.of("convert", Fixtures.hf(family).toString(), out.toString(), "--shard-size", "150kB");
            assertEquals(0, r.code(), r.toString());
            Path script = Fixtures.repoRoot().resolve("test/fixtures/check_hf_load.py");
            Process p = new ProcessBuilder(
                            python.toString(),
                            script.toString(),
                            out.toString(),
                            "--reference",
                            Fixtures.hf(family).toString())
                    .redirectErrorStream(true)
                    .start();
            String log = new String(p.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
            assertTrue(p.waitFor(300, TimeUnit.SECONDS), "python timed out");
            assertEquals(0, p.exitValue(), family + ":\n" + log);
        }
    }

    @Test
    void existingOutputIsRefusedWithoutForceAndReplacedWithIt(@TempDir Path dir) throws IOException {
        Path out = dir.resolve("out");
        Files.createDirectories(out);
        Files.writeString(out.resolve("keep.txt"), "mine");
        CliRun r = CliRun.of("convert", Fixtures.hf("opt").toString(), out.toString());
        assertEquals(3, r.code(), r.toString());
        assertTrue(r.err().contains("output already exists"), r.err());
        assertEquals("mine", Files.readString(out.resolve("keep.txt")), "untouched");
        r = CliRun.of("convert", Fixtures.hf("opt").toString(), out.toString(), "--force");
        assertEquals(0, r.code(), r.toString());
        assertFalse(Files.exists(out.resolve("keep.txt")));
        assertTrue(Files.exists(out.resolve("model.safetensors")));
    }
}
