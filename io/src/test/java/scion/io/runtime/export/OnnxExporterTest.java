package scion.io.runtime.export;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onnx.proto.OnnxMl.AttributeProto;
import ai.onnx.proto.OnnxMl.GraphProto;
import ai.onnx.proto.OnnxMl.NodeProto;
import ai.onnx.proto.OnnxMl.TensorProto;
import ai.onnx.proto.OnnxMl.ValueInfoProto;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtSession;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.Model;
import scion.io.safetensors.SafetensorsWriter;
import scion.io.tensor.BufferTensor;
import scion.io.tensor.DType;
import scion.io.tensor.Tensor;

/**
 * The structure of exported graphs on small synthetic checkpoints (numerical agreement with transformers is checked
 * on the Hugging Face fixtures in {@code scion.test.export}): weights referenced by name and never copied, a tied head
 * computed from the embedding without a transposed copy, dtype casts, dynamic axes, the residual-stream outputs, and
 * row blocks as views of the file.
 */
class OnnxExporterTest {
    @TempDir
    Path tmp;

    static final int H = 32;
    static final int FFN = 48;
    static final int V = 50;
    static final int L = 2;

    /** A tied llama with GQA (4 query heads, 2 kv heads) whose weights are {@code dtype}. */
    private Path tinyLlama(DType dtype) {
        Random r = new Random(7);
        List<Tensor> ts = new ArrayList<>();
        ts.add(rand("model.embed_tokens.weight", dtype, r, V, H));
        for (int l = 0; l < L; l++) {
            String p = "model.layers." + l + ".";
            ts.add(rand(p + "input_layernorm.weight", dtype, r, H));
            ts.add(rand(p + "self_attn.q_proj.weight", dtype, r, H, H));
            ts.add(rand(p + "self_attn.k_proj.weight", dtype, r, H / 2, H));
            ts.add(rand(p + "self_attn.v_proj.weight", dtype, r, H / 2, H));
            ts.add(rand(p + "self_attn.o_proj.weight", dtype, r, H, H));
            ts.add(rand(p + "post_attention_layernorm.weight", dtype, r, H));
            ts.add(rand(p + "mlp.gate_proj.weight", dtype, r, FFN, H));
            ts.add(rand(p + "mlp.up_proj.weight", dtype, r, FFN, H));
            ts.add(rand(p + "mlp.down_proj.weight", dtype, r, H, FFN));
        }
        ts.add(rand("model.norm.weight", dtype, r, H));
        String config = "{\"model_type\": \"llama\", \"hidden_size\": " + H + ", \"intermediate_size\": " + FFN
                + ", \"num_hidden_layers\": " + L + ", \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
                + " \"vocab_size\": " + V + ", \"max_position_embeddings\": 64, \"tie_word_embeddings\": true}";
        Path dir = tmp.resolve("llama-" + dtype.shortName());
        try (SafetensorsWriter.Output out = SafetensorsWriter.create().open(dir)) {
            out.writeTensors(ts);
            out.addFile("config.json", config.getBytes(StandardCharsets.UTF_8));
            out.commit();
        }
        return dir;
    }

    private static Tensor rand(String name, DType dtype, Random r, long... shape) {
        int n = 1;
        for (long s : shape) {
            n *= (int) s;
        }
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) (r.nextGaussian() * 0.1);
        }
        return BufferTensor.encode(name, dtype, shape, v);
    }

    private static List<NodeProto> nodes(GraphProto g, String op) {
        return g.getNodeList().stream().filter(n -> n.getOpType().equals(op)).collect(Collectors.toList());
    }

    private static long intAttr(NodeProto n, String name) {
        for (AttributeProto a : n.getAttributeList()) {
            if (a.getName().equals(name)) {
                return a.getI();
            }
        }
        return 0;
    }

    @Test
    void weightsAreReferencedByNameNeverCopied() throws Exception {
        try (Model m = Model.open(tinyLlama(DType.F32))) {
            OnnxExporter.Exported e = OnnxExporter.export(m, OnnxExporter.Options.defaults());
            GraphProto g = e.model().getGraph();
            assertEquals(OnnxExporter.OPSET, e.model().getOpsetImport(0).getVersion());
            assertEquals(
                    m.graph().weights().size(),
                    g.getInitializerCount(),
                    "one initializer per checkpoint weight (tied: no head)");
            for (TensorProto stub : g.getInitializerList()) {
                assertEquals(TensorProto.DataLocation.EXTERNAL, stub.getDataLocation(), stub.getName());
                assertTrue(stub.getRawData().isEmpty(), stub.getName());
                Tensor t = e.initializers().get(stub.getName());
                // The very tensor of the checkpoint (a lazy view of its file), not a copy.
                assertSame(m.checkpoint().find(stub.getName()).orElseThrow(), t);
                assertTrue(t.fileRegion().isPresent());
                assertArrayEquals(
                        t.shape(),
                        stub.getDimsList().stream().mapToLong(Long::longValue).toArray());
            }
            long weightBytes = e.initializers().values().stream()
                    .mapToLong(Tensor::byteSize)
                    .sum();
            assertTrue(e.model().getSerializedSize() < weightBytes, "the graph holds no weight bytes");
            assertEquals("export", e.metadata().get("scion.operator"));
        }
    }

    @Test
    void tiedHeadIsTheEmbeddingUnderGemmTransB() throws Exception {
        try (Model m = Model.open(tinyLlama(DType.F32))) {
            GraphProto g = OnnxExporter.export(m, OnnxExporter.Options.defaults())
                    .model()
                    .getGraph();
            Set<String> inits = new HashSet<>();
            g.getInitializerList().forEach(t -> inits.add(t.getName()));
            assertFalse(inits.contains("lm_head.weight"));
            List<NodeProto> gemms = nodes(g, "Gemm");
            NodeProto head = gemms.stream()
                    .filter(n -> n.getInput(1).equals("model.embed_tokens.weight"))
                    .findFirst()
                    .orElseThrow();
            assertEquals(1, intAttr(head, "transB"));
            // Every linear layer is a Gemm on the stored [out, in] weight: 7 per layer + the head, no Transpose of a
            // weight anywhere.
            assertEquals(7 * L + 1, gemms.size());
            for (NodeProto t : nodes(g, "Transpose")) {
                assertFalse(inits.contains(t.getInput(0)), "Transpose of initializer " + t.getInput(0));
            }
            assertEquals(
                    1,
                    nodes(g, "Gather").stream()
                            .filter(n -> n.getInput(0).equals("model.embed_tokens.weight"))
                            .count());
        }
    }

    @Test
    void dynamicAxesAndResidualStreamOutputs() throws Exception {
        try (Model m = Model.open(tinyLlama(DType.F32))) {
            OnnxExporter.Exported e =
                    OnnxExporter.export(m, OnnxExporter.Options.defaults().withResidualStreamOutputs(true));
            assertEquals(List.of("input_ids", "attention_mask"), e.inputNames());
            List<String> outs = e.outputNames();
            assertEquals(List.of("logits", "hidden_states.0", "hidden_states.1", "hidden_states.2"), outs);
            for (ValueInfoProto v : e.model().getGraph().getInputList()) {
                assertEquals(
                        "batch",
                        v.getType().getTensorType().getShape().getDim(0).getDimParam());
                assertEquals(
                        "sequence",
                        v.getType().getTensorType().getShape().getDim(1).getDimParam());
            }
            // Runs at two batch sizes and lengths with the same session.
            OrtEnvironment env = OrtEnvironment.getEnvironment();
            try (OrtSession.SessionOptions o = new OrtSession.SessionOptions();
                    OrtSession s = OnnxExporter.openSession(env, e, o)) {
                for (int[] bs : new int[][] {{1, 3}, {3, 11}}) {
                    long[][] ids = new long[bs[0]][bs[1]];
                    long[][] mask = new long[bs[0]][bs[1]];
                    for (int i = 0; i < bs[0]; i++) {
                        for (int j = 0; j < bs[1]; j++) {
                            ids[i][j] = (i * 7 + j * 3) % V;
                            mask[i][j] = 1;
                        }
                    }
                    try (OnnxTensor a = OnnxTensor.createTensor(env, ids);
                            OnnxTensor b = OnnxTensor.createTensor(env, mask);
                            OrtSession.Result r = s.run(Map.of("input_ids", a, "attention_mask", b))) {
                        assertArrayEquals(
                                new long[] {bs[0], bs[1], V},
                                ((OnnxTensor) r.get("logits").orElseThrow())
                                        .getInfo()
                                        .getShape());
                        assertArrayEquals(
                                new long[] {bs[0], bs[1], H},
                                ((OnnxTensor) r.get("hidden_states.2").orElseThrow())
                                        .getInfo()
                                        .getShape());
                    }
                }
            }
        }
    }

    @Test
    void halfPrecisionWeightsStayStoredBehindCasts() throws Exception {
        try (Model f32 = Model.open(tinyLlama(DType.F32));
                Model bf16 = Model.open(tinyLlama(DType.BF16))) {
            OnnxExporter.Exported e = OnnxExporter.export(bf16, OnnxExporter.Options.defaults());
            GraphProto g = e.model().getGraph();
            for (TensorProto stub : g.getInitializerList()) {
                assertEquals(DType.BF16.onnxCode(), stub.getDataType(), stub.getName());
            }
            Set<String> casted =
                    nodes(g, "Cast").stream().map(n -> n.getInput(0)).collect(Collectors.toSet());
            for (TensorProto stub : g.getInitializerList()) {
                assertTrue(casted.contains(stub.getName()), "no Cast for " + stub.getName());
            }
            assertTrue(
                    nodes(
                                    OnnxExporter.export(f32, OnnxExporter.Options.defaults())
                                            .model()
                                            .getGraph(),
                                    "Cast")
                            .stream()
                            .noneMatch(n -> n.getInput(0).startsWith("model.")));
        }
    }

    @Test
    void rowBlocksAreViewsOfTheFile() throws Exception {
        try (Model m = Model.open(tinyLlama(DType.F32))) {
            // The embedding is 50 × 32 × 4 = 6400 bytes: at most 1000 bytes gives blocks of 7 rows.
            OnnxExporter.Exported e =
                    OnnxExporter.export(m, OnnxExporter.Options.defaults().withMaxInitializerBytes(1000));
            Tensor whole = m.checkpoint().find("model.embed_tokens.weight").orElseThrow();
            Tensor block = e.initializers().get("model.embed_tokens.weight/rows_7_14");
            assertArrayEquals(new long[] {7, H}, block.shape());
            assertEquals(
                    whole.fileRegion().get().offset() + 7L * H * 4,
                    block.fileRegion().get().offset());
            assertEquals(7L * H * 4, block.fileRegion().get().length());
            float[] all = whole.toFloats();
            float[] rows = block.toFloats();
            for (int i = 0; i < rows.length; i++) {
                assertEquals(all[7 * H + i], rows[i]);
            }
            ByteBuffer bytes = OnnxExporter.bytesOf(block.name(), block).order(ByteOrder.LITTLE_ENDIAN);
            assertEquals(7 * H * 4, bytes.remaining());
            assertEquals(all[7 * H], bytes.getFloat(0));
            assertEquals(
                    8,
                    e.initializers().keySet().stream()
                            .filter(k -> k.startsWith("model.embed_tokens.weight/rows_"))
                            .count());
        }
    }
}
