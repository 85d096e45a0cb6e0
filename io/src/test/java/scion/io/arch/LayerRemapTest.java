package scion.io.arch;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.Json;
import scion.io.Model;
import scion.io.arch.WeightGraph.Weight;
import scion.io.config.ModelConfig;
import scion.io.safetensors.SafetensorsWriter;
import scion.io.tensor.BufferTensor;
import scion.io.tensor.Tensor;

/** LayerRemap on a small stored checkpoint: output order and names, zero-copy views, the config's per-layer lists. */
class LayerRemapTest {
    @TempDir
    Path tmp;

    /** A stored checkpoint of {@code family} with every required tensor; each tensor's values encode its name. */
    private Path checkpoint(String family, int layers, String extraConfig) {
        Architecture arch = Architectures.byFamily(family).orElseThrow();
        String cfg = "{\"model_type\": \"" + arch.modelTypes().get(0) + "\", \"hidden_size\": 8,"
                + " \"num_hidden_layers\": " + layers + ", \"num_attention_heads\": 2, \"intermediate_size\": 16,"
                + " \"vocab_size\": 12, \"max_position_embeddings\": 16" + extraConfig + "}";
        Dims d = Dims.of(arch, ModelConfig.parse(cfg, "config.json"));
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
                java.util.Arrays.fill(v, name.hashCode() % 1000);
                ts.add(BufferTensor.ofFloats(name, shape, v));
            }
        }
        Path dir = tmp.resolve(family + "-" + layers);
        try (SafetensorsWriter.Output o = SafetensorsWriter.create().open(dir)) {
            o.writeTensors(ts);
            o.addFile("config.json", cfg.getBytes(StandardCharsets.UTF_8));
            o.commit();
        }
        return dir;
    }

    @Test
    void blocksAreRenumberedInOrderAsStoredViews() {
        try (Model m = Model.open(checkpoint("llama", 4, ""))) {
            WeightGraph g = m.graph();
            List<Tensor> out = LayerRemap.tensors(g, new int[] {3, 0, 0});
            int perLayer = g.layer(0).size();
            assertEquals(g.weights().size() - 4 * perLayer + 3 * perLayer, out.size());
            List<String> names = new ArrayList<>();
            for (Tensor t : out) {
                names.add(t.name());
            }
            for (int i = 0; i < 3; i++) {
                assertTrue(names.contains("model.layers." + i + ".self_attn.q_proj.weight"), names.toString());
            }
            assertTrue(names.stream().noneMatch(n -> n.startsWith("model.layers.3.")), names.toString());
            for (Tensor t : out) {
                String src = t.name().startsWith("model.layers.0.")
                        ? t.name().replace("model.layers.0.", "model.layers.3.")
                        : t.name().replaceAll("model\\.layers\\.[12]\\.", "model.layers.0.");
                Weight w = g.find(src).orElseThrow();
                assertArrayEquals(w.tensor().toFloats(), t.toFloats(), t.name());
                assertEquals(w.tensor().fileRegion(), t.fileRegion(), "zero-copy: " + t.name());
                if (t.name().equals(w.tensor().name())) {
                    assertSame(w.tensor(), t, "unchanged names are the stored tensor itself");
                }
            }
            assertThrows(IllegalArgumentException.class, () -> LayerRemap.tensors(g, new int[] {4}));
            assertThrows(IllegalArgumentException.class, () -> LayerRemap.tensors(g, new int[0]));
        }
    }

    @Test
    void configRewritesTheLayerCountAndPerLayerLists() throws Exception {
        try (Model m = Model.open(checkpoint(
                "qwen2",
                4,
                ", \"layer_types\": [\"full_attention\", \"sliding_attention\", \"full_attention\","
                        + " \"sliding_attention\"]"))) {
            JsonNode c = Json.mapper()
                    .readTree(LayerRemap.config(m.graph(), new int[] {0, 3}).toJson());
            assertEquals(2, c.get("num_hidden_layers").asInt());
            assertEquals(
                    "[\"full_attention\",\"sliding_attention\"]",
                    c.get("layer_types").toString());
        }
        // qwen2 with use_sliding_window and no list: written out from max_window_layers, so no block changes kind.
        try (Model m = Model.open(checkpoint("qwen2", 3, ", \"use_sliding_window\": true, \"max_window_layers\": 2"))) {
            JsonNode c = Json.mapper()
                    .readTree(LayerRemap.config(m.graph(), new int[] {2, 0}).toJson());
            assertEquals(2, c.get("num_hidden_layers").asInt());
            assertEquals(
                    "[\"sliding_attention\",\"full_attention\"]",
                    c.get("layer_types").toString());
        }
        // gpt2 keeps its own key for the layer count.
        try (Model m = Model.open(checkpoint("gpt2", 3, ""))) {
            ModelConfig cfg = m.config();
            String key = cfg.keyFor(ModelConfig.Field.LAYERS);
            JsonNode c = Json.mapper()
                    .readTree(LayerRemap.config(m.graph(), new int[] {1}).toJson());
            assertEquals(1, c.get(key).asInt(), c.toString());
        }
    }
}
