package scion.growth;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.arch.Architecture;
import scion.io.arch.Architectures;
import scion.io.arch.Dims;
import scion.io.arch.WeightSpec;
import scion.io.config.ModelConfig;
import scion.io.safetensors.SafetensorsWriter;
import scion.io.tensor.BufferTensor;
import scion.io.tensor.Tensor;

/** DepthGrowth on specs: layouts, refusals (all problems at once), the lazy tensors and the config. */
class DepthGrowthTest {
    @TempDir
    Path tmp;

    /** A tiny checkpoint of {@code family} with every required tensor (values = a hash of name and index). */
    private Path checkpoint(String family, int layers, String extraConfig) {
        Architecture arch = Architectures.byFamily(family).orElseThrow();
        String cfg = "{\"model_type\": \"" + arch.modelTypes().get(0) + "\", \"hidden_size\": 8,"
                + " \"num_hidden_layers\": " + layers + ", \"num_attention_heads\": 2, \"intermediate_size\": 16,"
                + " \"vocab_size\": 12, \"max_position_embeddings\": 16, \"type_vocab_size\": 2"
                + extraConfig + "}";
        ModelConfig config = ModelConfig.parse(cfg, "config.json");
        Dims d = Dims.of(arch, config);
        String prefix = arch.prefixes().get(0);
        List<Tensor> ts = new ArrayList<>();
        for (WeightSpec s : arch.weights()) {
            if (s.optional() || s.tiedTo().isPresent() && d.tied()) {
                continue;
            }
            for (int l = 0; l < (s.perLayer() ? layers : 1); l++) {
                String name = s.name(prefix, l);
                long[] shape = new long[s.axes().size()];
                int n = 1;
                for (int i = 0; i < shape.length; i++) {
                    shape[i] = d.size(s.axes().get(i));
                    n *= (int) shape[i];
                }
                float[] v = new float[n];
                for (int i = 0; i < n; i++) {
                    v[i] = 0.01f * ((name.hashCode() + 31 * i) % 97);
                }
                ts.add(BufferTensor.ofFloats(name, shape, v));
            }
        }
        Path dir = tmp.resolve(family + "-" + layers + "-" + Math.abs(extraConfig.hashCode()));
        if (java.nio.file.Files.isDirectory(dir)) {
            return dir; // made by an earlier call of this test
        }
        try (SafetensorsWriter.Output o = SafetensorsWriter.create().open(dir)) {
            o.writeTensors(ts);
            o.addFile("config.json", cfg.getBytes(StandardCharsets.UTF_8));
            o.commit();
        }
        return dir;
    }

    private DepthGrowth.Plan plan(String family, int layers, int depth, String method, String positions) {
        try (Model m = Model.open(checkpoint(family, layers, ""))) {
            return DepthGrowth.plan(m.graph(), DepthGrowth.Params.parse(depth, method, positions));
        }
    }

    @Test
    void identitySpreadsNewBlocksEvenly() {
        assertEquals("0 +0 1 +1 2 +2 3 +3", plan("llama", 4, 8, null, null).layout());
        assertEquals("0 1 2 +2 3", plan("llama", 4, 5, null, null).layout());
        assertEquals("0 1 +1 2 3 +3", plan("llama", 4, 6, "identity", null).layout());
        assertEquals("0 +0 +0 1 +1 +1", plan("llama", 2, 6, null, null).layout());
        assertTrue(plan("llama", 4, 5, null, null).functionPreserving());
    }

    @Test
    void stackRepeatsTheMiddleBlocksAsSolarDoes() {
        assertEquals("0 1 2 +1 +2 3", plan("llama", 4, 6, "stack", null).layout());
        assertEquals("0 1 2 3 +0 +1 +2 +3", plan("llama", 4, 8, "stack", null).layout());
        DepthGrowth.Plan p = plan("llama", 4, 6, "stack", null);
        assertFalse(p.functionPreserving());
        assertTrue(
                p.notes().get(0).contains("NOT function-preserving"), p.notes().toString());
        InvalidInputException e = assertThrows(InvalidInputException.class, () -> plan("llama", 4, 9, "stack", null));
        assertTrue(e.getMessage().contains("at most 8"), e.getMessage());
    }

    @Test
    void explicitPositionsAreSortedAndRepeatable() {
        assertEquals("0 +0 1 2 3 +3", plan("llama", 4, 6, null, "3,0").layout());
        assertEquals("0 1 +1 +1 2 3", plan("llama", 4, 6, "stack", "1, 1").layout());
    }

    @Test
    void everyProblemIsReportedAtOnce() {
        InvalidInputException e = assertThrows(InvalidInputException.class, () -> plan("llama", 4, 6, null, "0,9,-1"));
        assertTrue(e.getMessage().startsWith("3 problems;"), e.getMessage());
        assertTrue(e.getMessage().contains("--positions: one position per new block"), e.getMessage());
        assertTrue(e.getMessage().contains("found 9"), e.getMessage());
        InvalidInputException fewer = assertThrows(InvalidInputException.class, () -> plan("llama", 4, 3, null, null));
        assertTrue(fewer.getMessage().contains("scion prune"), fewer.getMessage());
        InvalidInputException same = assertThrows(InvalidInputException.class, () -> plan("llama", 4, 4, null, null));
        assertTrue(same.getMessage().startsWith("--depth:"), same.getMessage());
        InvalidInputException method =
                assertThrows(InvalidInputException.class, () -> DepthGrowth.Params.parse(6, "clone", null));
        assertTrue(method.getMessage().startsWith("--depth-method: unknown method"), method.getMessage());
        InvalidInputException pos =
                assertThrows(InvalidInputException.class, () -> DepthGrowth.Params.parse(6, null, "1;2"));
        assertTrue(pos.getMessage().startsWith("--positions:"), pos.getMessage());
    }

    @Test
    void postLnFamiliesRefuseIdentity() {
        for (String family : List.of("bert")) {
            InvalidInputException e =
                    assertThrows(InvalidInputException.class, () -> plan(family, 2, 4, "identity", null));
            assertTrue(e.getMessage().contains("post-LN"), e.getMessage());
        }
        try (Model m = Model.open(checkpoint("opt", 2, ", \"do_layer_norm_before\": false"))) {
            InvalidInputException e = assertThrows(
                    InvalidInputException.class,
                    () -> DepthGrowth.plan(m.graph(), DepthGrowth.Params.parse(4, null, null)));
            assertTrue(e.getMessage().contains("opt is post-LN"), e.getMessage());
        }
        assertEquals(4, plan("opt", 2, 4, "identity", null).layers(), "pre-LN opt (the default) is exact");
    }

    /** gpt2 scaling attention by 1/(index + 1) is exact only when no source block moves. */
    @Test
    void gpt2InverseLayerScalingAllowsOnlyBlocksAtTheEnd() {
        try (Model m = Model.open(checkpoint("gpt2", 2, ", \"scale_attn_by_inverse_layer_idx\": true"))) {
            InvalidInputException e = assertThrows(
                    InvalidInputException.class,
                    () -> DepthGrowth.plan(m.graph(), DepthGrowth.Params.parse(4, null, null)));
            assertTrue(e.getMessage().contains("renumbering block 1 to 2"), e.getMessage());
            assertEquals(
                    "0 1 +1 +1",
                    DepthGrowth.plan(m.graph(), DepthGrowth.Params.parse(4, null, "1,1"))
                            .layout());
        }
    }

    @Test
    void tensorsAreRenamedViewsAndZerosInOutputOrder() {
        try (Model m = Model.open(checkpoint("llama", 2, ""))) {
            DepthGrowth.Plan p = DepthGrowth.plan(m.graph(), DepthGrowth.Params.parse(3, null, "0"));
            List<Tensor> out = DepthGrowth.tensors(p, m.graph(), w -> w.tensor());
            Map<String, Tensor> byName = new HashMap<>();
            for (Tensor t : out) {
                assertTrue(byName.put(t.name(), t) == null, "duplicate " + t.name());
            }
            assertEquals(m.graph().weights().size() + m.graph().layer(0).size(), out.size());
            Tensor src0 = m.graph()
                    .find("model.layers.0.mlp.up_proj.weight")
                    .orElseThrow()
                    .tensor();
            Tensor copy = byName.get("model.layers.1.mlp.up_proj.weight");
            assertEquals(java.util.Arrays.toString(src0.toFloats()), java.util.Arrays.toString(copy.toFloats()));
            assertTrue(copy.fileRegion().isPresent(), "a copy stays file-backed (zero-copy writes)");
            Tensor src1 = m.graph()
                    .find("model.layers.1.self_attn.o_proj.weight")
                    .orElseThrow()
                    .tensor();
            Tensor moved = byName.get("model.layers.2.self_attn.o_proj.weight");
            assertEquals(java.util.Arrays.toString(src1.toFloats()), java.util.Arrays.toString(moved.toFloats()));
            for (String zero :
                    List.of("model.layers.1.self_attn.o_proj.weight", "model.layers.1.mlp.down_proj.weight")) {
                Tensor z = byName.get(zero);
                assertEquals(src0.dtype(), z.dtype());
                for (float v : z.toFloats()) {
                    assertEquals(0f, v, zero);
                }
                java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate((int) z.byteSize());
                z.readBytes(0, b);
                assertFalse(b.hasRemaining());
            }
            int first = out.indexOf(byName.get("model.layers.0.input_layernorm.weight"));
            int last = out.indexOf(byName.get("model.layers.2.mlp.down_proj.weight"));
            assertTrue(first < last, "blocks in their new order");
        }
    }

    @Test
    void configCountsBlocksAndRebuildsLayerTypes() {
        String types = ", \"layer_types\": [\"full_attention\", \"sliding_attention\"]";
        try (Model m = Model.open(checkpoint("llama", 2, types))) {
            DepthGrowth.Plan p = DepthGrowth.plan(m.graph(), DepthGrowth.Params.parse(4, null, "1,0"));
            ModelConfig c = DepthGrowth.config(p, m.config());
            assertEquals(4, c.integer(ModelConfig.Field.LAYERS).orElseThrow());
            assertEquals(
                    "[\"full_attention\",\"full_attention\",\"sliding_attention\",\"sliding_attention\"]",
                    c.get("layer_types").orElseThrow().toString());
        }
        try (Model m = Model.open(checkpoint(
                "qwen2", 2, ", \"use_sliding_window\": true, \"sliding_window\": 4, \"max_window_layers\": 1"))) {
            DepthGrowth.Plan p = DepthGrowth.plan(m.graph(), DepthGrowth.Params.parse(3, null, "0"));
            ModelConfig c = DepthGrowth.config(p, m.config());
            assertEquals(
                    "[\"full_attention\",\"full_attention\",\"sliding_attention\"]",
                    c.get("layer_types").orElseThrow().toString(),
                    "the block kinds max_window_layers implied stay with their blocks");
        }
    }
}
