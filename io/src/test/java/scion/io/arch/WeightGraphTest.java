package scion.io.arch;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;
import scion.io.Checkpoint;
import scion.io.InvalidInputException;
import scion.io.config.ModelConfig;
import scion.io.tensor.BufferTensor;
import scion.io.tensor.DType;
import scion.io.tensor.Tensor;

/** Role assignment and the checks against config.json, on in-memory checkpoints built from the architecture. */
class WeightGraphTest {
    static final String LLAMA_CONFIG = "{\"model_type\": \"llama\", \"hidden_size\": 16, \"intermediate_size\": 24,"
            + " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
            + " \"vocab_size\": 10, \"rms_norm_eps\": 1e-6, \"tie_word_embeddings\": false, \"custom\": [1, 2]}";

    record MemCheckpoint(List<Tensor> tensors) implements Checkpoint {
        @Override
        public Path location() {
            return Path.of("mem.safetensors");
        }

        @Override
        public Map<String, String> metadata() {
            return Map.of();
        }

        @Override
        public List<Path> dataFiles() {
            return List.of();
        }

        @Override
        public void close() {}
    }

    static Tensor tensor(String name, long... shape) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        return new BufferTensor(name, DType.F32, shape, ByteBuffer.allocate((int) n * 4));
    }

    /** Every non-optional tensor of the family, with the shapes the config implies. */
    static List<Tensor> complete(Architecture arch, Dims d, String prefix) {
        List<Tensor> out = new ArrayList<>();
        for (WeightSpec s : arch.weights()) {
            if (s.optional()) {
                continue;
            }
            for (int l = 0; l < (s.perLayer() ? d.layers() : 1); l++) {
                long[] shape = s.axes().stream()
                        .mapToLong(a -> a == Axis.ANY ? d.hidden() : d.size(a))
                        .toArray();
                out.add(tensor(s.name(prefix, l), shape));
            }
        }
        return out;
    }

    @Test
    void everyTensorOfACompleteLlamaGetsItsRole() {
        Architecture arch = Architectures.byFamily("llama").orElseThrow();
        ModelConfig cfg = ModelConfig.parse(LLAMA_CONFIG, "config.json");
        Dims d = Dims.of(arch, cfg);
        assertEquals(8, d.kvHeads() * d.headDim());
        WeightGraph g =
                WeightGraph.build(new MemCheckpoint(complete(arch, d, "model.")), arch, cfg, Map.of(), Set.of());
        assertEquals(3 + 9 * 2, g.weights().size());
        assertEquals("model.", g.prefix());
        assertEquals(2, g.byRole(Role.ATTN_Q).size());
        assertEquals(Role.LM_HEAD, g.find("lm_head.weight").orElseThrow().role());
        assertEquals(
                1, g.find("model.layers.1.mlp.up_proj.weight").orElseThrow().layer());
        long expected = 10 * 16 * 2 + 16 + 2 * (16 + 16 * 16 + 8 * 16 * 2 + 16 * 16 + 16 + 3 * 24 * 16);
        assertEquals(expected, g.parameterCount());
    }

    @Test
    void everyFamilyAcceptsItsOwnCompleteCheckpoint() {
        for (Architecture arch : Architectures.all()) {
            String cfgText = "{\"model_type\": \"" + arch.modelTypes().get(0) + "\", \"hidden_size\": 16,"
                    + " \"intermediate_size\": 24, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
                    + " \"vocab_size\": 10, \"max_position_embeddings\": 12, \"type_vocab_size\": 2}";
            ModelConfig cfg = ModelConfig.parse(cfgText, "config.json");
            Dims d = Dims.of(arch, cfg);
            WeightGraph g = WeightGraph.build(
                    new MemCheckpoint(complete(arch, d, arch.prefixes().get(0))), arch, cfg, Map.of(), Set.of());
            assertFalse(g.byRole(Role.EMBEDDING).isEmpty(), arch.family());
            assertTrue(g.weights().stream().allMatch(w -> w.role() != null), arch.family());
        }
    }

    @Test
    void problemsAreReportedAtOnceNamingTensorsExpectedAndFound() {
        Architecture arch = Architectures.byFamily("llama").orElseThrow();
        ModelConfig cfg = ModelConfig.parse(LLAMA_CONFIG, "config.json");
        List<Tensor> ts = complete(arch, Dims.of(arch, cfg), "model.");
        ts.removeIf(t -> t.name().equals("model.layers.1.self_attn.k_proj.weight"));
        ts.replaceAll(t -> t.name().equals("model.layers.0.mlp.up_proj.weight") ? tensor(t.name(), 25, 16) : t);
        ts.add(tensor("model.layers.0.mlp.extra.weight", 3));
        ts.add(tensor("model.layers.2.mlp.up_proj.weight", 24, 16));
        InvalidInputException e = assertThrows(
                InvalidInputException.class,
                () -> WeightGraph.build(new MemCheckpoint(ts), arch, cfg, Map.of(), Set.of()));
        String m = e.getMessage();
        assertTrue(m.startsWith("4 problems; "), m);
        assertTrue(m.contains("missing tensor 'model.layers.1.self_attn.k_proj.weight'"), m);
        assertTrue(
                m.contains(
                        "'model.layers.0.mlp.up_proj.weight' does not match config.json; expected [24, 16] (ffn × residual),"
                                + " found [25, 16]"),
                m);
        assertTrue(m.contains("'model.layers.0.mlp.extra.weight' is not part of the llama architecture"), m);
        assertTrue(m.contains("belongs to layer 2; expected layers 0..1"), m);
    }

    @Test
    void tiedHeadMayBeAbsentButAnUntiedOneMayNot() {
        Architecture arch = Architectures.byFamily("llama").orElseThrow();
        ModelConfig untied = ModelConfig.parse(LLAMA_CONFIG, "config.json");
        List<Tensor> ts = complete(arch, Dims.of(arch, untied), "model.");
        ts.removeIf(t -> t.name().equals("lm_head.weight"));
        InvalidInputException e = assertThrows(
                InvalidInputException.class,
                () -> WeightGraph.build(new MemCheckpoint(ts), arch, untied, Map.of(), Set.of()));
        assertTrue(e.getMessage().contains("missing tensor 'lm_head.weight'"), e.getMessage());
        ModelConfig tied = untied.with(ModelConfig.Field.TIE_EMBEDDINGS, true);
        WeightGraph g = WeightGraph.build(new MemCheckpoint(ts), arch, tied, Map.of(), Set.of());
        assertTrue(g.dims().tied());
        assertTrue(g.byRole(Role.LM_HEAD).isEmpty());
    }

    @Test
    void unknownModelTypeListsTheKnownOnes() {
        InvalidInputException e =
                assertThrows(InvalidInputException.class, () -> Architectures.forModelType("mamba", "x/config.json"));
        assertEquals(
                "x/config.json: unsupported architecture (model_type); expected one of [llama, mistral, mixtral_dense,"
                        + " qwen2, qwen3, gemma, gemma2, gpt2, gpt_neox, opt, bert], found 'mamba'",
                e.getMessage());
    }

    @Test
    void configKeepsUnknownFieldsAndRewritesOnlyChangedOnes() {
        ModelConfig cfg = ModelConfig.parse(LLAMA_CONFIG, "config.json");
        ModelConfig wider = cfg.with(ModelConfig.Field.HIDDEN, 32).with(ModelConfig.Field.HEADS, 8);
        String out = wider.toJson();
        ModelConfig back = ModelConfig.parse(out, "out");
        assertEquals(32, back.require(ModelConfig.Field.HIDDEN));
        assertEquals(8, back.require(ModelConfig.Field.HEADS));
        assertEquals(24, back.require(ModelConfig.Field.INTERMEDIATE));
        assertEquals("[1,2]", back.get("custom").orElseThrow().toString());
        assertEquals(cfg.keys(), back.keys());
        assertEquals(16, cfg.require(ModelConfig.Field.HIDDEN), "the original is not mutated");
        // gpt2 names: n_embd is rewritten under its own key, not hidden_size.
        ModelConfig gpt2 = ModelConfig.parse("{\"model_type\":\"gpt2\",\"n_embd\":8,\"n_head\":2}", "c");
        String g = gpt2.with(ModelConfig.Field.HIDDEN, 16).toJson();
        assertTrue(g.contains("\"n_embd\" : 16") && !g.contains("hidden_size"), g);
    }

    @Test
    void duplicateKeysInConfigAreRejected() {
        InvalidInputException e = assertThrows(
                InvalidInputException.class,
                () -> ModelConfig.parse("{\"hidden_size\": 1, \"hidden_size\": 2}", "dir/config.json"));
        assertTrue(
                e.getMessage().startsWith("dir/config.json: not valid JSON; expected a JSON object, found "),
                e.getMessage());
        assertTrue(e.getMessage().contains("Duplicate field 'hidden_size'"), e.getMessage());
    }
}
