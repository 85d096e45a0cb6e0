package scion.io.onnx;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static scion.io.onnx.OnnxTestSupport.floatRaw;
import static scion.io.onnx.OnnxTestSupport.model;
import static scion.io.onnx.OnnxTestSupport.save;

import ai.onnx.proto.OnnxMl.AttributeProto;
import ai.onnx.proto.OnnxMl.GraphProto;
import ai.onnx.proto.OnnxMl.ModelProto;
import ai.onnx.proto.OnnxMl.NodeProto;
import ai.onnx.proto.OnnxMl.TensorProto;
import ai.onnx.proto.OnnxMl.ValueInfoProto;
import com.google.protobuf.ByteString;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.onnx.OnnxShapeHints.ModelKind;
import scion.io.onnx.OnnxWeightTracer.Result;

class OnnxWeightTracerTest {
    @TempDir
    Path dir;

    private static final List<String> BERT_LINEARS = List.of(
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense");

    /** Every initializer appears in exactly one of the three lists. */
    private static void assertPartition(OnnxModel m, Result r) {
        Set<String> seen = new HashSet<>();
        r.weights().forEach(w -> seen.add(w.initializer()));
        r.constants().forEach(c -> assertTrue(seen.add(c.initializer()), c.initializer()));
        r.unassigned().forEach(u -> assertTrue(seen.add(u.initializer()), u.initializer()));
        for (TensorProto t : m.graph().getInitializerList()) {
            assertTrue(seen.contains(t.getName()), "untraced and unreported: " + t.getName());
        }
    }

    private static void assertMiniLmLinears(Result r, String evidencePrefix) {
        List<TracedWeight> anonymous = r.weights().stream()
                .filter(w -> w.initializer().startsWith("onnx::MatMul_"))
                .collect(Collectors.toList());
        assertEquals(36, anonymous.size());
        Set<String> expected = new HashSet<>();
        for (int layer = 0; layer < 6; layer++) {
            for (String linear : BERT_LINEARS) {
                expected.add("encoder.layer." + layer + "." + linear + ".weight");
            }
        }
        assertEquals(expected, anonymous.stream().map(TracedWeight::hfName).collect(Collectors.toSet()));
        for (TracedWeight w : anonymous) {
            assertTrue(w.transposed(), w + ": MatMul weights are stored [in, out]");
            assertTrue(w.evidence().startsWith(evidencePrefix), w.toString());
        }
    }

    @Test
    void miniLmIsFullyTraced() {
        try (OnnxModel m = OnnxReader.open(OnnxTestSupport.miniLm(dir, "model.onnx"))) {
            Result r = OnnxWeightTracer.trace(m);
            assertEquals(102, r.weights().size());
            assertEquals(List.of(), r.unassigned());
            assertEquals(List.of(), r.constants());
            assertPartition(m, r);
            assertMiniLmLinears(r, "node scope /encoder/layer.");
            TracedWeight q =
                    r.weight("encoder.layer.0.attention.self.query.weight").orElseThrow();
            assertEquals("onnx::MatMul_787", q.initializer());
            assertEquals("node scope /encoder/layer.0/attention/self/query/MatMul", q.evidence());
            TracedWeight emb = r.weight("embeddings.word_embeddings.weight").orElseThrow();
            assertEquals("named", emb.evidence());
            assertFalse(emb.transposed());
            assertTrue(r.weight("embeddings.position_ids").isPresent(), "a known buffer keeps its name");

            OnnxShapeHints h = r.hints();
            assertEquals(12, h.attentionHeads().orElseThrow());
            assertEquals(12, h.keyValueHeads().orElseThrow());
            assertEquals(32, h.headDim().orElseThrow());
            assertEquals(1e-12, h.layerNormEpsilon().orElseThrow(), 1e-18);
            assertEquals(ModelKind.ENCODER, h.kind());
        }
    }

    /** Rule (c): without module paths in node names, the bias Add after each MatMul names the weight. */
    @Test
    void miniLmWithoutNodeNamesIsTracedThroughBiases() {
        try (OnnxModel m = OnnxReader.open(OnnxTestSupport.miniLm(dir, "model.onnx"))) {
            GraphProto.Builder g = m.graph().toBuilder();
            for (NodeProto.Builder n : g.getNodeBuilderList()) {
                n.setName(n.getOpType() + "_" + n.getOutput(0).hashCode());
            }
            Path stripped = save(m.proto().toBuilder().setGraph(g).build(), dir.resolve("stripped.onnx"));
            try (OnnxModel s = OnnxReader.open(stripped)) {
                Result r = OnnxWeightTracer.trace(s);
                assertEquals(List.of(), r.unassigned());
                assertPartition(s, r);
                assertMiniLmLinears(r, "bias Add encoder.layer.");
                assertEquals(
                        "bias Add encoder.layer.0.attention.self.query.bias",
                        r.weight("encoder.layer.0.attention.self.query.weight")
                                .orElseThrow()
                                .evidence());
                assertEquals(12, r.hints().attentionHeads().orElseThrow(), "from the traced query projection");
                assertEquals(32, r.hints().headDim().orElseThrow());
            }
        }
    }

    /** The f16 file written by OnnxWriter (initializers renamed {@code <name>_f16} behind Cast) traces the same. */
    @Test
    void retypedModelTracesThroughCasts() {
        try (OnnxModel m = OnnxReader.open(OnnxTestSupport.miniLm(dir, "model.onnx"))) {
            Path f16 = dir.resolve("f16.onnx");
            OnnxWriter.write(
                    m, Map.of(), f16, OnnxWriter.Options.defaults().withStoreFloatsAs(scion.io.tensor.DType.F16));
            try (OnnxModel h = OnnxReader.open(f16)) {
                Result r = OnnxWeightTracer.trace(h);
                assertEquals(102, r.weights().size());
                assertEquals(List.of(), r.unassigned());
                TracedWeight q =
                        r.weight("encoder.layer.0.attention.self.query.weight").orElseThrow();
                assertEquals("onnx::MatMul_787_f16", q.initializer());
                assertTrue(q.transposed());
                assertEquals(
                        "embeddings.word_embeddings.weight_f16",
                        r.weight("embeddings.word_embeddings.weight")
                                .orElseThrow()
                                .initializer());
                assertEquals(12, r.hints().attentionHeads().orElseThrow());
            }
        }
    }

    // ---------------------------------------------------------------------------------------------------------
    // A hand-built graph exercising the other rules (it is never run, only traced).

    private static NodeProto node(String op, String name, List<String> in, String out, AttributeProto... attrs) {
        NodeProto.Builder n = NodeProto.newBuilder()
                .setOpType(op)
                .setName(name)
                .addAllInput(in)
                .addOutput(out);
        for (AttributeProto a : attrs) {
            n.addAttribute(a);
        }
        return n.build();
    }

    private static AttributeProto ints(String name, long... v) {
        AttributeProto.Builder a = AttributeProto.newBuilder().setName(name).setType(AttributeProto.AttributeType.INTS);
        for (long x : v) {
            a.addInts(x);
        }
        return a.build();
    }

    private static AttributeProto intAttr(String name, long v) {
        return AttributeProto.newBuilder()
                .setName(name)
                .setType(AttributeProto.AttributeType.INT)
                .setI(v)
                .build();
    }

    private static TensorProto longs(String name, long... v) {
        ByteBuffer b = ByteBuffer.allocate(v.length * 8).order(ByteOrder.LITTLE_ENDIAN);
        for (long x : v) {
            b.putLong(x);
        }
        b.flip();
        return TensorProto.newBuilder()
                .setName(name)
                .setDataType(7)
                .addDims(v.length)
                .setRawData(ByteString.copyFrom(b))
                .build();
    }

    private static NodeProto constant(String name, String out, TensorProto value) {
        return NodeProto.newBuilder()
                .setOpType("Constant")
                .setName(name)
                .addOutput(out)
                .addAttribute(AttributeProto.newBuilder()
                        .setName("value")
                        .setType(AttributeProto.AttributeType.TENSOR)
                        .setT(value))
                .build();
    }

    @Test
    void transposeConstantGemmSharedAndUnexplainedTensors() {
        float[] twelve = new float[12];
        float[] four = new float[4];
        List<TensorProto> inits = List.of(
                floatRaw("onnx::Transpose_1", new long[] {3, 4}, twelve), // [out, in] → Transpose → MatMul
                floatRaw("onnx::Gemm_2", new long[] {3, 4}, twelve), // Gemm transB=1: [out, in]
                floatRaw("onnx::Gemm_3", new long[] {3}, 1, 2, 3), // Gemm C
                floatRaw("onnx::MatMul_4", new long[] {4, 3}, twelve), // unscoped MatMul + Add(named bias)
                floatRaw("dec.out.bias", new long[] {3}, 0, 0, 0),
                floatRaw("onnx::MatMul_5", new long[] {4, 3}, twelve), // unscoped MatMul, no bias: unassigned
                floatRaw("a.norm.weight", new long[] {4}, four), // shared by two LayerNorms (deduplicated)
                longs("onnx::Reshape_6", 0, 0, 2, 2), // a head-split shape: plumbing
                floatRaw("onnx::Div_7", new long[] {}, 8f)); // a scalar: plumbing
        List<NodeProto> nodes = List.of(
                node("Transpose", "/enc/proj/Transpose", List.of("onnx::Transpose_1"), "t1", ints("perm", 1, 0)),
                node("MatMul", "/enc/proj/MatMul", List.of("x", "t1"), "y1"),
                constant("/enc/c/Constant", "cw", floatRaw("", new long[] {4, 3}, twelve)),
                node("MatMul", "/enc/c/MatMul", List.of("x", "cw"), "y2"),
                node("Gemm", "/head/Gemm", List.of("x2d", "onnx::Gemm_2", "onnx::Gemm_3"), "y3", intAttr("transB", 1)),
                node("MatMul", "MatMul_9", List.of("x", "onnx::MatMul_4"), "y4"),
                node("Add", "Add_10", List.of("y4", "dec.out.bias"), "y5"),
                node("MatMul", "MatMul_11", List.of("x", "onnx::MatMul_5"), "y6"),
                node("LayerNormalization", "/a/norm/LayerNormalization", List.of("x", "a.norm.weight"), "n1"),
                node("LayerNormalization", "/b/norm/LayerNormalization", List.of("n1", "a.norm.weight"), "n2"),
                node("Reshape", "/enc/attn/Reshape", List.of("y2", "onnx::Reshape_6"), "r1"),
                node("Div", "/enc/attn/Div", List.of("r1", "onnx::Div_7"), "d1"));
        Path p = save(model(inits, nodes), dir.resolve("synthetic.onnx"));
        try (OnnxModel m = OnnxReader.open(p)) {
            Result r = OnnxWeightTracer.trace(m);
            assertPartition(m, r);

            TracedWeight viaT = r.weight("enc.proj.weight").orElseThrow();
            assertEquals("onnx::Transpose_1", viaT.initializer());
            assertFalse(viaT.transposed(), "a Transpose node sits between: stored as the parameter");
            assertTrue(viaT.evidence().contains("through Transpose"), viaT.evidence());

            TracedWeight held = r.weight("enc.c.weight").orElseThrow();
            assertEquals("cw", held.initializer(), "a Constant-held weight, named after the node output");
            assertTrue(held.transposed());

            TracedWeight gemm = r.weight("head.weight").orElseThrow();
            assertEquals("onnx::Gemm_2", gemm.initializer());
            assertFalse(gemm.transposed(), "transB=1: stored [out, in]");
            assertEquals("onnx::Gemm_3", r.weight("head.bias").orElseThrow().initializer());

            TracedWeight biased = r.weight("dec.out.weight").orElseThrow();
            assertEquals("onnx::MatMul_4", biased.initializer());
            assertEquals("bias Add dec.out.bias", biased.evidence());
            assertTrue(biased.transposed());

            List<TracedWeight> shared = r.forInitializer("a.norm.weight");
            assertEquals(
                    List.of("a.norm.weight", "b.norm.weight"),
                    shared.stream().map(TracedWeight::hfName).collect(Collectors.toList()));
            assertTrue(
                    shared.get(1).evidence().startsWith("shared"), shared.get(1).evidence());

            assertEquals(1, r.unassigned().size());
            assertEquals("onnx::MatMul_5", r.unassigned().get(0).initializer());
            assertTrue(
                    r.unassigned().get(0).reason().contains("MatMul MatMul_11"),
                    r.unassigned().get(0).reason());

            List<String> constants = new ArrayList<>();
            r.constants().forEach(c -> constants.add(c.initializer()));
            assertEquals(List.of("onnx::Reshape_6", "onnx::Div_7"), constants);

            assertEquals(2, r.hints().attentionHeads().orElseThrow(), "from the Reshape after a projection");
            assertEquals(2, r.hints().headDim().orElseThrow());
            assertEquals(ModelKind.UNKNOWN, r.hints().kind());
        }
    }

    @Test
    void causalLanguageModelsAreRecognised() {
        ValueInfoProto ids = ValueInfoProto.newBuilder().setName("input_ids").build();
        ModelProto m = model(List.of(), List.of());
        ModelProto lm = m.toBuilder()
                .setGraph(m.getGraph().toBuilder()
                        .addInput(ids)
                        .addOutput(ValueInfoProto.newBuilder().setName("logits")))
                .build();
        try (OnnxModel o = OnnxReader.open(save(lm, dir.resolve("lm.onnx")))) {
            assertEquals(ModelKind.CAUSAL_LM, OnnxWeightTracer.trace(o).hints().kind());
        }
        ModelProto base = m.toBuilder()
                .setGraph(m.getGraph().toBuilder()
                        .addInput(ids)
                        .addNode(node("Trilu", "/model/Trilu", List.of("mask"), "causal"))
                        .addOutput(ValueInfoProto.newBuilder().setName("last_hidden_state")))
                .build();
        try (OnnxModel o = OnnxReader.open(save(base, dir.resolve("base.onnx")))) {
            OnnxShapeHints h = OnnxWeightTracer.trace(o).hints();
            assertEquals(ModelKind.CAUSAL_LM, h.kind(), "a decoder without its LM head: " + h.kindEvidence());
        }
    }
}
