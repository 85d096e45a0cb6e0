package scion.test.prune;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onnx.proto.OnnxMl.NodeProto;
import ai.onnx.proto.OnnxMl.TensorProto;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import scion.io.Model;
import scion.io.arch.WeightGraph.Weight;
import scion.io.onnx.OnnxWriter;
import scion.io.runtime.Device;
import scion.io.runtime.RuntimeModel;
import scion.io.runtime.calibration.Calibration;
import scion.io.runtime.calibration.Rows;
import scion.prune.LayerDrop;
import scion.prune.OnnxLayerDrop;
import scion.test.Fixtures;
import scion.test.cli.CliRun;

/**
 * ONNX in, ONNX out: the removed blocks are cut out of the graph and the residual stream is rewired. Judged by ONNX
 * Runtime against an independent route to the same function — the safetensors checkpoint the PyTorch export was made
 * from, pruned by name ({@code LayerRemap}) and exported by Scion's own exporter.
 */
class LayerDropOnnxTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path tmp;

    private static long[][] fixtureIds(String family) throws IOException {
        JsonNode n = JSON.readTree(
                        Fixtures.resource("onnx/" + family + ".expected.json").toFile())
                .get("inputs")
                .get("input_ids")
                .get("data");
        long[][] ids = new long[n.size()][];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = new long[n.get(i).size()];
            for (int j = 0; j < ids[i].length; j++) {
                ids[i][j] = n.get(i).get(j).asLong();
            }
        }
        return ids;
    }

    private static double relativeError(float[] ref, float[] out) {
        assertEquals(ref.length, out.length, "element count");
        double diff = 0;
        double scale = 0;
        for (int i = 0; i < ref.length; i++) {
            diff = Math.max(diff, Math.abs(ref[i] - out[i]));
            scale = Math.max(scale, Math.abs(ref[i]));
        }
        return diff / scale;
    }

    private static Map<String, RuntimeModel.Output> run(Path model, long[][] ids) {
        try (RuntimeModel m = RuntimeModel.open(model, Device.CPU)) {
            return m.run(ids);
        }
    }

    /**
     * PyTorch's exports (legacy TorchScript exporter) of the llama, gpt2 and BERT fixtures with one of their two blocks
     * cut out equal Scion's export of the same fixture pruned as safetensors. Tolerance 1e-5 relative: the two graphs
     * are different exports of the same weights (observed: bit-identical for llama and BERT, 3e-7 for gpt2, whose
     * exports order the attention sums differently). The unpruned model differs by more than 1e-2, so the cut did
     * something.
     */
    @ParameterizedTest
    @CsvSource({"llama,0", "llama,1", "gpt2,0", "gpt2,1", "bert,0", "bert,1"})
    void graphCutEqualsPrunedCheckpointExport(String family, int drop) throws IOException {
        Path onnxOut = tmp.resolve(family + "-" + drop + ".onnx");
        int sourceNodes;
        try (Model m = Model.open(Fixtures.resource("onnx/" + family + ".onnx"))) {
            sourceNodes = m.onnx().orElseThrow().graph().getNodeCount();
            LayerDrop.Plan plan = LayerDrop.plan(m.graph(), new int[] {drop}, null);
            OnnxLayerDrop.write(m, plan, onnxOut, OnnxWriter.Options.defaults());
        }
        Path hfOut = tmp.resolve(family + "-" + drop);
        CliRun r = CliRun.of("prune", Fixtures.hf(family).toString(), hfOut.toString(), "--drop", "" + drop);
        assertEquals(0, r.code(), r.toString());

        try (Model pruned = Model.open(onnxOut)) {
            assertEquals(1, pruned.graph().dims().layers(), "the cut graph traces as one block");
            for (Weight w : pruned.graph().weights()) {
                assertTrue(w.layer() <= 0, "renumbered: " + w.name());
            }
            int nodes = pruned.onnx().orElseThrow().graph().getNodeCount();
            assertTrue(nodes < sourceNodes * 0.8, nodes + " of " + sourceNodes + " nodes left");
        }
        long[][] ids = fixtureIds(family);
        Map<String, RuntimeModel.Output> cut = run(onnxOut, ids);
        Map<String, RuntimeModel.Output> reference = run(hfOut, ids);
        Map<String, RuntimeModel.Output> source = run(Fixtures.resource("onnx/" + family + ".onnx"), ids);
        String name = cut.keySet().iterator().next();
        float[] ref = reference.get(reference.keySet().iterator().next()).data();
        double err = relativeError(ref, cut.get(name).data());
        assertTrue(err <= 1e-5, family + " drop " + drop + ": graph cut vs pruned export, relative error " + err);
        double moved = relativeError(ref, source.get(name).data());
        assertTrue(moved > 1e-2, family + ": pruning changed the output only by " + moved);
    }

    /**
     * all-MiniLM-L6-v2 without its last block outputs exactly the residual stream that entered that block in the
     * original (post-LN BERT: the stream entering block 5 is block 4's output LayerNorm), tapped by ONNX Runtime.
     * Tolerance 1e-6 relative (same kernels on the same values; ORT may fuse the two graphs differently).
     */
    @Test
    void miniLmWithoutItsLastBlockOutputsTheStreamEnteringIt() {
        Path src = Fixtures.miniLmOnnx();
        Path out = tmp.resolve("minilm-5.onnx");
        CliRun r = CliRun.of("prune", src.toString(), out.toString(), "--drop", "5");
        assertEquals(0, r.code(), r.toString());
        long[][] ids = {{101, 1996, 2543, 2829, 4419, 14523, 2058, 1996, 13971, 3899, 1012, 102}};
        float[] tap;
        try (Model m = Model.open(src);
                Calibration c = Calibration.open(
                        m,
                        Calibration.Request.of(Calibration.Positions.ALL_TOKENS).withResidualStream(5),
                        Calibration.Options.defaults().withThreads(1))) {
            float[][] got = new float[1][];
            c.run(ids, b -> {
                Rows rows = b.residual(5);
                got[0] = rows.data().clone();
            });
            tap = got[0];
        }
        float[] cut = run(out, ids).get("last_hidden_state").data();
        double err = relativeError(tap, cut);
        assertTrue(err <= 1e-6, "pruned output vs the original's stream entering block 5: " + err);
        float[] full = run(src, ids).get("last_hidden_state").data();
        assertTrue(relativeError(full, cut) > 1e-2, "block 5 changes the output");
    }

    /**
     * Several runs at once (blocks 0 and 3,4 of MiniLM): every removed block's initializers and nodes go, the rest are
     * renumbered 0..2 in initializer and node names, inputs and outputs keep their names, and ONNX Runtime runs it.
     */
    @Test
    void miniLmNonContiguousDropRenumbersTheKeptBlocks() throws IOException {
        Path src = Fixtures.miniLmOnnx();
        Path out = tmp.resolve("minilm-034.onnx");
        CliRun r = CliRun.of("prune", src.toString(), out.toString(), "--drop", "0,4,3", "--json");
        assertEquals(0, r.code(), r.toString());
        com.fasterxml.jackson.databind.JsonNode j = JSON.readTree(r.out());
        assertEquals("0,3,4", j.get("dropped").asText(), r.out());
        assertEquals("1,2,5 (source blocks, renumbered 0..2)", j.get("kept").asText(), r.out());
        try (Model m = Model.open(out)) {
            assertEquals(3, m.graph().dims().layers());
            for (TensorProto t : m.onnx().orElseThrow().graph().getInitializerList()) {
                assertFalse(t.getName().matches(".*layer\\.[3-9].*"), "not renumbered: " + t.getName());
                assertFalse(t.getName().contains("pruned"), t.getName());
            }
            for (NodeProto n : m.onnx().orElseThrow().graph().getNodeList()) {
                assertFalse(n.getName().matches(".*/layer\\.[3-9]/.*"), "not renumbered: " + n.getName());
            }
            assertEquals(
                    java.util.List.of("input_ids", "attention_mask", "token_type_ids"),
                    m.onnx().orElseThrow().inputNames());
            assertEquals(
                    java.util.List.of("last_hidden_state"),
                    m.onnx().orElseThrow().outputNames());
        }
        long[][] ids = {{101, 7592, 2088, 102}};
        float[] cut = run(out, ids).get("last_hidden_state").data();
        assertEquals(4 * 384, cut.length);
        for (float v : cut) {
            assertTrue(Float.isFinite(v));
        }
    }

    /**
     * A graph whose removed block feeds something besides the residual stream (here: a second graph output reading
     * layer 0's query projection) cannot lose that block: refused with the weight named, exit code 3, nothing written.
     */
    @Test
    void blocksThatAreNotSeparableAreRefused() {
        Path src = Fixtures.resource("onnx/llama.onnx");
        Path tapped = tmp.resolve("llama-extra-output.onnx");
        try (Model m = Model.open(src)) {
            ai.onnx.proto.OnnxMl.ModelProto p = m.onnx().orElseThrow().proto();
            String q = p.getGraph().getNodeList().stream()
                    .filter(n -> n.getName().equals("/model/layers.0/self_attn/q_proj/MatMul"))
                    .findFirst()
                    .orElseThrow()
                    .getOutput(0);
            ai.onnx.proto.OnnxMl.ModelProto extra = p.toBuilder()
                    .setGraph(p.getGraph().toBuilder()
                            .addOutput(ai.onnx.proto.OnnxMl.ValueInfoProto.newBuilder()
                                    .setName(q)))
                    .build();
            OnnxWriter.write(m.onnx().orElseThrow(), extra, Map.of(), tapped, OnnxWriter.Options.defaults());
        }
        Path out = tmp.resolve("cut.onnx");
        CliRun r = CliRun.of("prune", tapped.toString(), out.toString(), "--drop", "0");
        assertEquals(3, r.code(), r.toString());
        assertTrue(r.err().contains("not separable at the residual stream"), r.err());
        assertTrue(r.err().contains("'model.layers.0.self_attn.q_proj.weight'"), r.err());
        assertFalse(java.nio.file.Files.exists(out));
        r = CliRun.of("prune", tapped.toString(), out.toString(), "--drop", "1");
        assertEquals(0, r.code(), r.toString());
    }
}
