package scion.merge.fisher;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Optional;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.arch.Architecture;
import scion.io.arch.Dims;
import scion.io.config.ModelConfig;
import scion.io.config.ModelConfig.Field;

/**
 * What {@link GradientNet} computes for one model, read from its architecture and config.json as transformers (and
 * {@code scion.io.runtime.export.OnnxExporter}) read them. Supported: the BERT encoder (post-LN, erf GELU, learned
 * absolute positions, token type 0) and the llama-style decoders llama, mistral and qwen2 (RMSNorm, rotary positions
 * with the default or linear scaling, grouped-query attention, SiLU-gated MLP, optional projection biases, sliding
 * windows). Everything else is refused at once, naming the family or the setting.
 */
final class NetSettings {
    final String family;
    final boolean causal;
    final float eps;
    /** RoPE inverse frequencies ({@code rotaryDim / 2}); null for BERT. */
    final float[] invFreq;

    final int rotaryDim;
    /** Per layer: the sliding attention window ({@code q − k < window}), 0 for none. */
    final int[] window;

    final float scale;

    private NetSettings(
            String family, boolean causal, float eps, float[] invFreq, int rotaryDim, int[] window, float scale) {
        this.family = family;
        this.causal = causal;
        this.eps = eps;
        this.invFreq = invFreq;
        this.rotaryDim = rotaryDim;
        this.window = window;
        this.scale = scale;
    }

    static NetSettings of(Model model) {
        Architecture arch = model.graph().architecture();
        ModelConfig cfg = model.config();
        Dims d = model.graph().dims();
        String where = cfg.source();
        String family = arch.family();
        if (!List.of("bert", "llama", "mistral", "qwen2").contains(family)) {
            throw InvalidInputException.of(
                    where,
                    "the Fisher estimate has no gradient implementation for the " + family + " family",
                    "one of bert, llama, mistral, qwen2",
                    family + "; hint: use a merge method without calibration (linear, ties, ...)");
        }
        List<String> problems = new ArrayList<>();
        boolean bert = "bert".equals(family);
        String act = null;
        for (String key : List.of("hidden_activation", "hidden_act", "activation_function")) {
            Optional<JsonNode> v = cfg.get(key);
            if (v.isPresent() && v.get().isTextual()) {
                act = v.get().asText().toLowerCase(Locale.ROOT);
                break;
            }
        }
        String expectedAct = bert ? "gelu" : "silu";
        if (act != null && !act.equals(expectedAct) && !(!bert && act.equals("swish"))) {
            problems.add("activation '" + act + "' (supported for " + family + ": " + expectedAct + ")");
        }
        float eps =
                (float) cfg.number(Field.NORM_EPS).orElse(bert ? 1e-12 : 1e-6).doubleValue();
        float[] inv = null;
        int rot = 0;
        int[] window = new int[d.layers()];
        if (bert) {
            String pet =
                    cfg.get("position_embedding_type").map(JsonNode::asText).orElse("absolute");
            if (!"absolute".equals(pet)) {
                problems.add("position_embedding_type '" + pet + "' (supported: absolute)");
            }
            if (cfg.get("is_decoder").map(JsonNode::asBoolean).orElse(false)) {
                problems.add("is_decoder = true (supported: an encoder)");
            }
        } else {
            double theta = cfg.number(Field.ROPE_THETA).orElse(10000.0);
            double partial = cfg.number(Field.PARTIAL_ROTARY).orElse(1.0);
            rot = (int) (d.headDim() * partial);
            if (rot <= 0 || rot % 2 != 0 || rot > d.headDim()) {
                problems.add("rotary dimension " + rot + " (an even number in 2.." + d.headDim() + ")");
                rot = d.headDim();
            }
            inv = new float[rot / 2];
            for (int i = 0; i < inv.length; i++) {
                inv[i] = 1.0f / (float) Math.pow((float) theta, (float) (2 * i) / (float) rot);
            }
            Optional<JsonNode> params = Optional.empty();
            for (String key : List.of("rope_parameters", "rope_scaling")) {
                Optional<JsonNode> v = cfg.get(key);
                if (v.isPresent() && v.get().isObject()) {
                    params = v;
                    break;
                }
            }
            String type = params.map(
                            p -> p.path("rope_type").asText(p.path("type").asText("default")))
                    .orElse("default");
            if ("linear".equals(type)) {
                double factor = params.get().path("factor").asDouble(0);
                if (factor <= 0) {
                    problems.add("rope type 'linear' without a positive 'factor'");
                } else {
                    for (int i = 0; i < inv.length; i++) {
                        inv[i] = (float) (inv[i] / factor);
                    }
                }
            } else if (!"default".equals(type)) {
                problems.add("rope type '" + type + "' (supported: default, linear)");
            }
            window = windows(family, cfg, d.layers(), problems);
        }
        if (!problems.isEmpty()) {
            throw InvalidInputException.of(
                    where,
                    "the Fisher gradient pass cannot reproduce this " + family + " model",
                    "the settings of transformers' " + family + " it implements",
                    String.join("; ", problems));
        }
        return new NetSettings(
                family, arch.isCausalLm(), eps, inv, rot, window, (float) (1.0 / Math.sqrt(d.headDim())));
    }

    /** Sliding windows as transformers applies them: every mistral layer; qwen2 layers per {@code layer_types}. */
    private static int[] windows(String family, ModelConfig cfg, int layers, List<String> problems) {
        int[] w = new int[layers];
        Optional<JsonNode> sw = cfg.get("sliding_window");
        if (sw.isEmpty() || sw.get().isNull()) {
            return w;
        }
        if (!sw.get().canConvertToInt() || sw.get().asInt() <= 0) {
            problems.add("sliding_window " + sw.get() + " (a positive integer or null)");
            return w;
        }
        int window = sw.get().asInt();
        if ("mistral".equals(family)) {
            Arrays.fill(w, window);
        } else if ("qwen2".equals(family)) {
            if (!cfg.get("use_sliding_window").map(JsonNode::asBoolean).orElse(false)) {
                return w;
            }
            Optional<JsonNode> types = cfg.get("layer_types");
            int from = cfg.get("max_window_layers").map(JsonNode::asInt).orElse(28);
            for (int l = 0; l < layers; l++) {
                boolean sliding = types.isPresent()
                                && types.get().isArray()
                                && l < types.get().size()
                        ? "sliding_attention".equals(types.get().get(l).asText())
                        : l >= from;
                w[l] = sliding ? window : 0;
            }
        }
        return w;
    }
}
