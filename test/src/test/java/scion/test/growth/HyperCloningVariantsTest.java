package scion.test.growth;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.function.Consumer;
import java.util.function.UnaryOperator;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.Json;
import scion.io.Model;
import scion.io.arch.Role;
import scion.io.safetensors.SafetensorsWriter;
import scion.io.tensor.BufferTensor;
import scion.io.tensor.Tensor;
import scion.test.Fixtures;
import scion.test.cli.CliRun;

/**
 * HyperCloning on variants derived from the fixtures: multi-query attention (one key/value head, kept by {@code --kv
 * auto}) and a tied OPT without a final norm (post-LN, {@code do_layer_norm_before = false}), where the head must be
 * untied. Each variant is a valid model of its family; the grown model is judged against it by ONNX Runtime (1e-5
 * relative, as in {@link HyperCloningEquivalenceTest}).
 */
class HyperCloningVariantsTest {
    @TempDir
    Path tmp;

    /** A copy of a fixture with tensors mapped (null drops one) and config.json edited. */
    private Path derive(String family, String name, UnaryOperator<Tensor> tensors, Consumer<ObjectNode> config)
            throws Exception {
        Path src = Fixtures.hf(family);
        Path out = tmp.resolve(name);
        List<Tensor> kept = new ArrayList<>();
        try (Model m = Model.open(src)) {
            for (Tensor t : m.checkpoint().tensors()) {
                Tensor x = tensors.apply(t);
                if (x != null) {
                    kept.add(BufferTensor.ofFloats(x.name(), x.shape(), x.toFloats()));
                }
            }
        }
        Files.createDirectories(out);
        SafetensorsWriter.create().write(out.resolve("model.safetensors"), kept);
        ObjectNode cfg = (ObjectNode) Json.mapper().readTree(Files.readString(src.resolve("config.json")));
        config.accept(cfg);
        Files.writeString(out.resolve("config.json"), Json.mapper().writeValueAsString(cfg));
        return out;
    }

    @Test
    void multiQueryAttentionKeepsItsSingleKvHead() throws Exception {
        // llama fixture: 4 query heads, 2 kv heads of 16; keep the first kv head only.
        Path mqa = derive(
                "llama",
                "llama-mqa",
                t -> {
                    if (t.name().endsWith("k_proj.weight") || t.name().endsWith("v_proj.weight")) {
                        float[] v = t.toFloats();
                        long in = t.shape()[1];
                        return BufferTensor.ofFloats(t.name(), new long[] {16, in}, Arrays.copyOf(v, (int) (16 * in)));
                    }
                    return t;
                },
                c -> c.put("num_key_value_heads", 1));
        Path out = HyperCloningEquivalenceTest.grow(mqa, tmp.resolve("mqa-w2"), "--width", "2");
        try (Model m = Model.open(out)) {
            assertEquals(8, m.graph().dims().heads());
            assertEquals(1, m.graph().dims().kvHeads(), "auto keeps MQA's single kv head");
        }
        HyperCloningEquivalenceTest.assertCopies(HyperCloningEquivalenceTest.validate(mqa, out, "close:1e-5"), 2);
        Path grown = HyperCloningEquivalenceTest.grow(mqa, tmp.resolve("mqa-w2-grow"), "--width", "2", "--kv", "grow");
        try (Model m = Model.open(grown)) {
            assertEquals(2, m.graph().dims().kvHeads(), "--kv grow");
        }
        HyperCloningEquivalenceTest.validate(mqa, grown, "close:1e-5");
    }

    @Test
    void tiedHeadWithoutFinalNormIsUntied() throws Exception {
        Path post = derive(
                "opt",
                "opt-post-ln",
                t -> t.name().startsWith("model.decoder.final_layer_norm.") ? null : t,
                c -> c.put("do_layer_norm_before", false));
        CliRun r = CliRun.of("grow", post.toString(), tmp.resolve("opt-w2").toString(), "--width", "2");
        assertEquals(0, r.code(), r.toString());
        assertTrue(r.out().contains("UNTIED"), "the report says so: " + r.out());
        Path out = tmp.resolve("opt-w2");
        JsonNode cfg = Json.mapper().readTree(Files.readString(out.resolve("config.json")));
        assertFalse(cfg.get("tie_word_embeddings").asBoolean());
        try (Model m = Model.open(out)) {
            assertFalse(m.graph().dims().tied());
            assertEquals(1, m.graph().byRole(Role.LM_HEAD).size(), "lm_head stored");
        }
        HyperCloningEquivalenceTest.validate(post, out, "close:1e-5");
    }
}
