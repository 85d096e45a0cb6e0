package scion.test.export;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onnx.proto.OnnxMl.TensorProto;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtSession;
import com.fasterxml.jackson.databind.JsonNode;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import scion.io.Model;
import scion.io.onnx.OnnxModel;
import scion.io.onnx.OnnxReader;
import scion.io.onnx.OnnxWriter;
import scion.io.runtime.export.OnnxExporter;
import scion.io.runtime.export.OnnxExporter.Exported;
import scion.io.tensor.BufferTensor;
import scion.io.tensor.DType;
import scion.io.tensor.Tensor;
import scion.test.Fixtures;

/**
 * {@link OnnxExporter#write}: the model file and its external data are written, ONNX Runtime runs the file, and its
 * outputs equal the in-memory path's bit for bit (same graph, same weights: nothing may differ). Also: weights split
 * into row blocks compute the same function.
 */
class ExportWriteTest {
    @TempDir
    Path tmp;

    @ParameterizedTest
    @ValueSource(strings = {"llama", "llama-bf16", "gpt2", "gpt_neox", "bert"})
    void writtenModelRunsAndEqualsInMemoryBitForBit(String fixture) throws Exception {
        JsonNode expected = ExportRun.json(Fixtures.hf(fixture).resolve("expected.json"));
        Path out = tmp.resolve(fixture + ".onnx");
        try (Model model = Model.open(Fixtures.hf(fixture))) {
            OnnxExporter.Options opts = OnnxExporter.Options.defaults().withResidualStreamOutputs(true);
            Exported e = OnnxExporter.export(model, opts);
            OnnxWriter.Written w = OnnxExporter.write(e, out, opts);
            assertTrue(Files.isRegularFile(out));
            Path data = w.dataFile().orElseThrow();
            assertEquals(out.resolveSibling(fixture + ".onnx.data"), data);
            assertTrue(Files.size(data) > 0);
            // The graph file holds no weight bytes: only stubs, names and small constants.
            assertTrue(Files.size(out) < 64 * 1024, "model file " + Files.size(out) + " bytes");

            // What was written reads back with every weight in its stored dtype, bytes equal to the checkpoint's.
            try (OnnxModel written = OnnxReader.open(out)) {
                for (Map.Entry<String, Tensor> t : e.initializers().entrySet()) {
                    Tensor back = written.find(t.getKey()).orElseThrow();
                    assertEquals(t.getValue().dtype(), back.dtype(), t.getKey());
                    assertArrayEquals(t.getValue().shape(), back.shape(), t.getKey());
                    assertArrayEquals(t.getValue().toFloats(), back.toFloats(), t.getKey());
                }
                assertEquals("export", written.metadata().get("scion.operator"));
                assertTrue(written.metadata().get("scion.input").contains("sha256:"));
            }
            if (fixture.equals("llama-bf16")) {
                assertTrue(e.initializers().values().stream().allMatch(t -> t.dtype() == DType.BF16));
            }

            Map<String, long[][]> inputs = ExportRun.fixtureInputs(e, expected);
            Map<String, float[]> memory = ExportRun.runInMemory(e, inputs, OnnxExporter.Handover.MEMORY);
            Map<String, float[]> references = ExportRun.runInMemory(e, inputs, OnnxExporter.Handover.FILE_REFERENCES);
            // In-memory copies of the weights (no file behind them) go through addExternalInitializers either way.
            Map<String, Tensor> copies = new LinkedHashMap<>();
            for (Map.Entry<String, Tensor> t : e.initializers().entrySet()) {
                copies.put(t.getKey(), copy(t.getValue()));
            }
            Map<String, float[]> fromCopies = ExportRun.runInMemory(
                    new Exported(e.model(), copies), inputs, OnnxExporter.Handover.FILE_REFERENCES);
            OrtEnvironment env = OrtEnvironment.getEnvironment();
            Map<String, float[]> file;
            try (OrtSession.SessionOptions o = ExportRun.options();
                    OrtSession s = env.createSession(out.toString(), o)) {
                file = ExportRun.run(env, s, inputs);
            }
            assertEquals(memory.keySet(), file.keySet());
            for (String k : memory.keySet()) {
                assertArrayEquals(memory.get(k), file.get(k), k + ": file and in-memory outputs differ");
                assertArrayEquals(references.get(k), file.get(k), k + ": file and file-reference outputs differ");
                assertArrayEquals(fromCopies.get(k), file.get(k), k + ": file and copied-weight outputs differ");
            }
            String name = expected.get("output_name").asText();
            float[] ref = ExportRun.flat(expected.get("outputs").get(name).get("data"));
            assertTrue(ExportRun.relativeError(file.get(name), ref) <= ExportEquivalenceTest.TOLERANCE);
        }
    }

    private static Tensor copy(Tensor t) {
        ByteBuffer b = ByteBuffer.allocate((int) t.byteSize()).order(ByteOrder.LITTLE_ENDIAN);
        t.readBytes(0, b);
        b.flip();
        BufferTensor c = new BufferTensor(t.name(), t.dtype(), t.shape(), b);
        assertTrue(c.fileRegion().isEmpty());
        return c;
    }

    @Test
    void inlineWhenAskedAndNoDataFile() throws Exception {
        Path out = tmp.resolve("inline.onnx");
        try (Model model = Model.open(Fixtures.hf("qwen2"))) {
            OnnxExporter.Options opts = OnnxExporter.Options.defaults().withExternalData(OnnxWriter.ExternalData.OFF);
            OnnxWriter.Written w = OnnxExporter.write(model, out, opts);
            assertTrue(w.dataFile().isEmpty());
            assertFalse(Files.exists(out.resolveSibling("inline.onnx.data")));
            assertTrue(Files.size(out) > model.graph().parameterCount() * 4);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"llama", "qwen2", "gpt2", "opt", "bert"})
    void rowBlocksComputeTheSameFunction(String fixture) throws Exception {
        JsonNode expected = ExportRun.json(Fixtures.hf(fixture).resolve("expected.json"));
        try (Model model = Model.open(Fixtures.hf(fixture))) {
            OnnxExporter.Options whole = OnnxExporter.Options.defaults();
            // 5000 bytes: the [128, 64] f32 embedding (32 KiB) becomes 7 blocks of 19 rows, every [128, 64] linear
            // weight too; norms and biases stay whole.
            Exported split = OnnxExporter.export(model, whole.withMaxInitializerBytes(5000));
            Exported one = OnnxExporter.export(model, whole);
            long blocks = split.model().getGraph().getInitializerList().stream()
                    .map(TensorProto::getName)
                    .filter(n -> n.contains("/rows_"))
                    .count();
            assertTrue(blocks >= 7, "row blocks: " + blocks);
            for (Tensor t : split.initializers().values()) {
                assertTrue(t.byteSize() <= 5000 || t.shape().length < 2, t.describe());
                assertTrue(t.fileRegion().isPresent(), t.name() + " should stay a view of the file");
            }
            Map<String, long[][]> inputs = ExportRun.fixtureInputs(one, expected);
            String name = expected.get("output_name").asText();
            float[] a = ExportRun.runInMemory(split, inputs, OnnxExporter.Handover.MEMORY)
                    .get(name);
            float[] a2 = ExportRun.runInMemory(split, inputs).get(name);
            assertArrayEquals(a, a2, "row blocks from memory and by file reference");
            float[] b = ExportRun.runInMemory(one, inputs).get(name);
            // Gather is exact; a split Gemm sums each output element over the same inputs, so the two agree to a
            // few float32 ulps at most (kernel blocking may differ with the matrix width).
            assertTrue(ExportRun.relativeError(a, b) <= 1e-6, "split vs whole: " + ExportRun.relativeError(a, b));
        }
    }
}
