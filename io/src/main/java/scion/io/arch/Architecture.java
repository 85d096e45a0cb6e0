package scion.io.arch;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import scion.io.Json;
import scion.io.config.ModelConfig;

/**
 * A transformer family described as data: its tensor names, their roles and axis spaces, and the few structural
 * facts operators need (norm style, MLP style, position encoding). Loaded from {@code /scion/arch/<family>.json}.
 *
 * @param family the family id ({@code llama}, {@code bert}, ...)
 * @param modelTypes the config.json {@code model_type} values it covers
 * @param kind {@code causal_lm} or {@code encoder}
 * @param norm {@code rms}, {@code rms_plus_one} (Gemma's {@code (1+γ)}), {@code layer} (pre-LN), {@code layer_post}
 *     (post-LN, BERT)
 * @param mlp {@code gated}, {@code gated_gelu}, {@code plain_gelu}, {@code plain_relu}
 * @param position {@code rope} or {@code learned}
 * @param positionOffset rows of the learned position table before position 0 (OPT: 2)
 * @param embeddingScale {@code none} or {@code sqrt_hidden} (Gemma multiplies embeddings by √hidden)
 * @param prefixes the module prefixes checkpoints use (e.g. {@code model.} for a CausalLM, none for a bare model)
 * @param tieDefault whether embeddings are tied when config.json does not say
 * @param ffnDefaultFactor intermediate size = factor × hidden when config.json does not say (gpt2's {@code n_inner})
 * @param groupedKv whether transformers' attention reads a key/value head count of its own ({@code
 *     num_key_value_heads}), so key/value heads can differ from query heads
 * @param configHeadDim whether transformers reads {@code head_dim} from config.json (else hidden / heads)
 * @param slidingWindow which layers use config.json's {@code sliding_window}: {@code none}, {@code every_layer}
 *     (Mistral) or {@code layer_types} (Qwen: when {@code use_sliding_window}, the layers {@code layer_types} marks
 *     {@code sliding_attention}, else those from {@code max_window_layers} on)
 * @param slidingWindowSwitch for {@code layer_types}: the config.json boolean that must be true for any window (Qwen's
 *     {@code use_sliding_window}, false when absent), or empty when windows need no switch (Gemma 2)
 * @param slidingLayersDefault for {@code layer_types} without that list in config.json: {@code from_max_window_layers}
 *     (Qwen) or {@code alternate} (Gemma 2: layers 0, 2, 4, ... slide)
 * @param attentionScaleKey the config.json number whose {@code -1/2} power scales {@code q·kᵀ} (Gemma 2's {@code
 *     query_pre_attn_scalar}), or empty for {@code head_dim^-1/2}
 * @param attentionSoftcapKey the config.json number {@code c} of a soft-cap {@code c·tanh(s/c)} on the attention scores
 *     (Gemma 2's {@code attn_logit_softcapping}; none when null), or empty
 * @param logitSoftcapKey the same for the output logits (Gemma 2's {@code final_logit_softcapping}), or empty
 * @param configFlags config.json booleans that switch a computation, by meaning: {@code parallel_residual} (GPT-NeoX
 *     {@code use_parallel_residual}), {@code pre_ln} (OPT {@code do_layer_norm_before}; false: post-LN), {@code
 *     attention_scaled} (gpt2 {@code scale_attn_weights}; false: no {@code 1/√head_dim}), {@code
 *     attention_scaled_by_layer} (gpt2 {@code scale_attn_by_inverse_layer_idx}: scores also divided by layer + 1)
 * @param requires config.json values the family's implementation needs (absent is fine): any other value is refused
 * @param scaleQueryFirst the query is multiplied by the attention scale before {@code q·kᵀ} (OPT keeps that order)
 * @param positionsFromMask learned positions at {@code cumsum(mask)·mask − 1 + offset} (OPT), not {@code 0..S-1}
 * @param activation the MLP activation when config.json names none (transformers' {@code ACT2FN} name)
 * @param normEps the norms' epsilon when config.json gives none
 * @param normEpsFromConfig whether transformers reads the epsilon from config.json at all (OPT's does not)
 * @param weights every tensor the family may hold
 */
public record Architecture(
        String family,
        List<String> modelTypes,
        String kind,
        String norm,
        String mlp,
        String position,
        int positionOffset,
        String embeddingScale,
        List<String> prefixes,
        boolean tieDefault,
        int ffnDefaultFactor,
        boolean groupedKv,
        boolean configHeadDim,
        String slidingWindow,
        String slidingWindowSwitch,
        String slidingLayersDefault,
        String attentionScaleKey,
        String attentionSoftcapKey,
        String logitSoftcapKey,
        Map<String, ConfigFlag> configFlags,
        Map<String, JsonNode> requires,
        boolean scaleQueryFirst,
        boolean positionsFromMask,
        String activation,
        double normEps,
        boolean normEpsFromConfig,
        List<WeightSpec> weights) {

    /**
     * A config.json boolean that switches a computation.
     *
     * @param key its config.json key
     * @param dflt its value when config.json does not have it (transformers' default)
     */
    public record ConfigFlag(String key, boolean dflt) {}

    /** The meanings a {@code config_flags} entry may have. */
    public static final Set<String> FLAG_MEANINGS =
            Set.of("parallel_residual", "pre_ln", "attention_scaled", "attention_scaled_by_layer");

    /**
     * The value of the flag with this meaning in {@code cfg} ({@code fixed} when the family has no such flag; its
     * default when config.json does not set it or sets it to something other than a boolean).
     */
    public boolean configFlag(String meaning, ModelConfig cfg, boolean fixed) {
        ConfigFlag f = configFlags.get(meaning);
        if (f == null) {
            return fixed;
        }
        return cfg.get(f.key())
                .filter(JsonNode::isBoolean)
                .map(JsonNode::booleanValue)
                .orElse(f.dflt());
    }

    /** Whether blocks are post-LN ({@code x = LN(x + f(x))}) for this config. */
    public boolean postLn(ModelConfig cfg) {
        return "layer_post".equals(norm) || !configFlag("pre_ln", cfg, true);
    }

    public boolean isCausalLm() {
        return "causal_lm".equals(kind);
    }

    /** The entry with role {@code role} and no {@code {layer}} (e.g. the embedding), if any. */
    public Optional<WeightSpec> global(Role role) {
        for (WeightSpec w : weights) {
            if (w.role() == role && !w.perLayer() && !w.bias()) {
                return Optional.of(w);
            }
        }
        return Optional.empty();
    }

    /**
     * Which layers attend through a sliding window under this family's {@link #slidingWindow()} rule, as transformers
     * decides it (the window's size is config.json's {@code sliding_window}); all false when the family's switch is
     * off.
     */
    public boolean[] slidingLayers(ModelConfig cfg, int layers) {
        boolean[] out = new boolean[layers];
        if ("none".equals(slidingWindow)) {
            return out;
        }
        if ("every_layer".equals(slidingWindow)) {
            Arrays.fill(out, true);
            return out;
        }
        if (!slidingWindowSwitch.isEmpty()
                && !cfg.get(slidingWindowSwitch).map(JsonNode::asBoolean).orElse(false)) {
            return out;
        }
        Optional<JsonNode> types = cfg.get("layer_types");
        int from = cfg.get("max_window_layers").map(JsonNode::asInt).orElse(28);
        for (int l = 0; l < layers; l++) {
            if (types.isPresent() && types.get().isArray() && l < types.get().size()) {
                out[l] = "sliding_attention".equals(types.get().get(l).asText());
            } else {
                out[l] = "alternate".equals(slidingLayersDefault) ? l % 2 == 0 : l >= from;
            }
        }
        return out;
    }

    /** Reads an architecture resource. */
    static Architecture load(String family) {
        String path = "/scion/arch/" + family + ".json";
        try (InputStream in = Architecture.class.getResourceAsStream(path)) {
            if (in == null) {
                throw new IllegalStateException("missing architecture resource " + path);
            }
            return fromJson(Json.mapper().readTree(in), path);
        } catch (IOException e) {
            throw new IllegalStateException("cannot read architecture resource " + path, e);
        }
    }

    private static final Set<String> TOP_KEYS = Set.of(
            "family",
            "model_types",
            "kind",
            "norm",
            "mlp",
            "position",
            "position_offset",
            "embedding_scale",
            "prefixes",
            "tie_default",
            "ffn_default_factor",
            "grouped_kv",
            "config_head_dim",
            "sliding_window",
            "sliding_window_switch",
            "sliding_layers_default",
            "attention_scale_key",
            "attention_softcap_key",
            "logit_softcap_key",
            "config_flags",
            "requires",
            "scale_query_first",
            "positions_from_mask",
            "activation",
            "norm_eps",
            "norm_eps_from_config",
            "weights");

    private static final Set<String> SLIDING_WINDOW = Set.of("none", "every_layer", "layer_types");

    private static final Set<String> WEIGHT_KEYS =
            Set.of("name", "absolute", "role", "axes", "storage", "qkv_layout", "optional", "tied_to");

    static Architecture fromJson(JsonNode n, String where) {
        for (Iterator<String> it = n.fieldNames(); it.hasNext(); ) {
            String k = it.next();
            if (!TOP_KEYS.contains(k)) {
                throw new IllegalStateException(where + ": unknown key '" + k + "'; expected one of " + TOP_KEYS);
            }
        }
        String slidingWindow = n.path("sliding_window").asText("none");
        if (!SLIDING_WINDOW.contains(slidingWindow)) {
            throw new IllegalStateException(
                    where + ": sliding_window '" + slidingWindow + "'; expected one of " + SLIDING_WINDOW);
        }
        Map<String, ConfigFlag> flags = new LinkedHashMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = n.path("config_flags").fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            if (!FLAG_MEANINGS.contains(e.getKey())
                    || !e.getValue().path("key").isTextual()
                    || !e.getValue().path("default").isBoolean()) {
                throw new IllegalStateException(where + ": config_flags entry '" + e.getKey() + "'; expected one of "
                        + FLAG_MEANINGS + " as {\"key\": name, \"default\": boolean}, found " + e.getValue());
            }
            flags.put(
                    e.getKey(),
                    new ConfigFlag(
                            e.getValue().get("key").asText(),
                            e.getValue().get("default").asBoolean()));
        }
        Map<String, JsonNode> requires = new LinkedHashMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = n.path("requires").fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            requires.put(e.getKey(), e.getValue());
        }
        String mlp = n.get("mlp").asText();
        String norm = n.get("norm").asText();
        List<WeightSpec> ws = new ArrayList<>();
        for (JsonNode w : n.get("weights")) {
            for (Iterator<String> it = w.fieldNames(); it.hasNext(); ) {
                String k = it.next();
                if (!WEIGHT_KEYS.contains(k)) {
                    throw new IllegalStateException(where + ": unknown key '" + k + "' in weight " + w);
                }
            }
            String name = w.get("name").asText();
            List<Axis> axes = new ArrayList<>();
            for (JsonNode a : w.get("axes")) {
                axes.add(Axis.fromId(a.asText()));
            }
            ws.add(new WeightSpec(
                    name,
                    w.path("absolute").asBoolean(false),
                    Role.fromId(w.get("role").asText()),
                    name.endsWith(".bias") && !w.get("role").asText().equals("buffer"),
                    List.copyOf(axes),
                    "in_out".equals(w.path("storage").asText("out_in")),
                    Optional.ofNullable(w.get("qkv_layout")).map(JsonNode::asText),
                    w.path("optional").asBoolean(false),
                    Optional.ofNullable(w.get("tied_to")).map(JsonNode::asText)));
        }
        List<String> types = new ArrayList<>();
        n.get("model_types").forEach(t -> types.add(t.asText()));
        List<String> prefixes = new ArrayList<>();
        n.get("prefixes").forEach(t -> prefixes.add(t.asText()));
        return new Architecture(
                n.get("family").asText(),
                List.copyOf(types),
                n.get("kind").asText(),
                norm,
                mlp,
                n.get("position").asText(),
                n.path("position_offset").asInt(0),
                n.path("embedding_scale").asText("none"),
                List.copyOf(prefixes),
                n.get("tie_default").asBoolean(),
                n.path("ffn_default_factor").asInt(0),
                n.path("grouped_kv").asBoolean(false),
                n.path("config_head_dim").asBoolean(false),
                slidingWindow,
                n.path("sliding_window_switch").asText(""),
                n.path("sliding_layers_default").asText("from_max_window_layers"),
                n.path("attention_scale_key").asText(""),
                n.path("attention_softcap_key").asText(""),
                n.path("logit_softcap_key").asText(""),
                Collections.unmodifiableMap(flags),
                Collections.unmodifiableMap(requires),
                n.path("scale_query_first").asBoolean(false),
                n.path("positions_from_mask").asBoolean(false),
                n.path("activation").asText("gated".equals(mlp) ? "silu" : "gelu"),
                n.path("norm_eps").asDouble(norm.startsWith("rms") ? 1e-6 : 1e-5),
                n.path("norm_eps_from_config").asBoolean(true),
                List.copyOf(ws));
    }
}
