package scion.io.runtime.export;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.arch.Architecture;
import scion.io.arch.Dims;
import scion.io.config.ModelConfig;
import scion.io.config.ModelConfig.Field;

/**
 * What a transformer computes for one model, read from its architecture and config.json the way Hugging Face
 * transformers 5 reads them: norm kind and epsilon, activation, residual layout, positions, RoPE inverse frequencies,
 * attention scale and sliding windows per layer. The exported graph is built from it; other code that re-implements
 * a family's forward pass reads the same settings through the public accessors ({@link #read(Model, List)}), so there
 * is one reading of config.json. Everything it cannot reproduce is collected and refused at once.
 */
public final class FamilySettings {
    enum Norm {
        /** {@code x / sqrt(mean(x²) + eps) · γ}. */
        RMS,
        /** Gemma: {@code x / sqrt(mean(x²) + eps) · (1 + γ)}. */
        RMS_PLUS_ONE,
        /** LayerNorm with weight and bias. */
        LAYER
    }

    /** The MLP activation, as transformers' {@code ACT2FN} computes it. */
    public enum Activation {
        SILU,
        /** {@code 0.5·x·(1 + erf(x/√2))}: transformers' {@code gelu}. */
        GELU_ERF,
        /** {@code 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))}: {@code gelu_new}, {@code gelu_pytorch_tanh}. */
        GELU_TANH,
        /** {@code x·σ(1.702·x)}. */
        QUICK_GELU,
        RELU
    }

    enum Positions {
        /** Rotary embeddings at positions 0..S-1. */
        ROPE,
        /** A learned table at positions 0..S-1 (gpt2, bert). */
        LEARNED,
        /** OPT: a learned table at {@code cumsum(mask)·mask − 1 + offset}. */
        LEARNED_FROM_MASK
    }

    final String family;
    final boolean causal;
    final Norm norm;
    /** Post-LN blocks: {@code x = LN(x + f(x))} (bert, OPT with {@code do_layer_norm_before = false}). */
    final boolean postLn;
    /** GPT-NeoX: {@code x + attn(ln1(x)) + mlp(ln2(x))}. */
    final boolean parallelResidual;

    final Activation activation;
    final boolean gated;
    final float eps;
    /** Gemma multiplies token embeddings by √hidden; 0 for none. */
    final float embeddingScale;

    final Positions positions;
    final int positionOffset;
    /** RoPE: the inverse frequencies ({@code rotaryDim / 2} of them); null without RoPE. */
    final float[] invFreq;

    final int rotaryDim;
    /** Per layer: the sliding attention window (a key is seen when {@code q − k < window}), 0 for none. */
    final int[] window;
    /** Per layer: the factor on {@code q·kᵀ}. */
    final float[] attentionScale;
    /** OPT multiplies the query by the scale before {@code q·kᵀ} (transformers keeps that order). */
    final boolean scaleQuery;
    /** Soft-cap {@code c} of the attention scores, {@code c·tanh(s/c)} (Gemma 2); 0 for none. */
    final float attentionSoftcap;
    /** Soft-cap of the output logits (Gemma 2); 0 for none. */
    final float logitSoftcap;

    final boolean tokenTypes;

    private FamilySettings(Builder b) {
        family = b.family;
        causal = b.causal;
        norm = b.norm;
        postLn = b.postLn;
        parallelResidual = b.parallelResidual;
        activation = b.activation;
        gated = b.gated;
        eps = b.eps;
        embeddingScale = b.embeddingScale;
        positions = b.positions;
        positionOffset = b.positionOffset;
        invFreq = b.invFreq;
        rotaryDim = b.rotaryDim;
        window = b.window;
        attentionScale = b.attentionScale;
        scaleQuery = b.scaleQuery;
        attentionSoftcap = b.attentionSoftcap;
        logitSoftcap = b.logitSoftcap;
        tokenTypes = b.tokenTypes;
    }

    private static final class Builder {
        String family;
        boolean causal;
        Norm norm;
        boolean postLn;
        boolean parallelResidual;
        Activation activation;
        boolean gated;
        float eps;
        float embeddingScale;
        Positions positions;
        int positionOffset;
        float[] invFreq;
        int rotaryDim;
        int[] window;
        float[] attentionScale;
        boolean scaleQuery;
        float attentionSoftcap;
        float logitSoftcap;
        boolean tokenTypes;
    }

    /** Reads the settings; every unsupported setting is reported in one {@link InvalidInputException}. */
    static FamilySettings of(Model model) {
        Architecture arch = model.graph().architecture();
        List<String> problems = new ArrayList<>();
        FamilySettings s = read(model, problems);
        if (!problems.isEmpty()) {
            throw InvalidInputException.of(
                    model.config().source(),
                    "cannot export this " + arch.family() + " model to ONNX ("
                            + (problems.size() == 1
                                    ? "1 unsupported setting"
                                    : problems.size() + " unsupported settings")
                            + ")",
                    "the settings of transformers' " + arch.family() + " that the export reproduces",
                    String.join("; ", problems));
        }
        return s;
    }

    /**
     * Reads the settings of {@code model} as transformers does, adding one line to {@code problems} for every setting
     * that cannot be reproduced (an unknown activation or RoPE type, a malformed field, ...); the caller refuses the
     * model when any were added, in its own words. With problems, the settings hold a default in their place.
     */
    public static FamilySettings read(Model model, List<String> problems) {
        Architecture arch = model.graph().architecture();
        ModelConfig cfg = model.config();
        Dims d = model.graph().dims();
        String where = cfg.source();
        Builder b = new Builder();
        b.family = arch.family();
        b.causal = arch.isCausalLm();
        b.tokenTypes = arch.weights().stream().anyMatch(w -> w.role() == scion.io.arch.Role.TOKEN_TYPE_EMBEDDING);
        switch (arch.norm()) {
            case "rms":
                b.norm = Norm.RMS;
                break;
            case "rms_plus_one":
                b.norm = Norm.RMS_PLUS_ONE;
                break;
            case "layer":
                b.norm = Norm.LAYER;
                break;
            case "layer_post":
                b.norm = Norm.LAYER;
                b.postLn = true;
                break;
            default:
                problems.add("norm '" + arch.norm() + "' of family " + arch.family() + " is not supported by export");
        }
        // Some families' norms never read an epsilon from config.json (OPT's nn.LayerNorm).
        b.eps = arch.normEpsFromConfig()
                ? (float) cfg.number(Field.NORM_EPS).orElse(arch.normEps()).doubleValue()
                : (float) arch.normEps();
        b.gated = arch.mlp().startsWith("gated");
        b.activation = activation(cfg, arch, problems);
        b.embeddingScale = "sqrt_hidden".equals(arch.embeddingScale()) ? (float) Math.sqrt(d.hidden()) : 0f;

        b.parallelResidual = flag(arch, cfg, "parallel_residual", false, problems, where);
        b.scaleQuery = arch.scaleQueryFirst();
        if (!flag(arch, cfg, "pre_ln", true, problems, where)) {
            b.postLn = true;
        }
        for (Map.Entry<String, JsonNode> r : arch.requires().entrySet()) {
            Optional<JsonNode> v = cfg.get(r.getKey());
            if (v.isPresent() && !v.get().equals(r.getValue())) {
                problems.add(
                        r.getKey() + " " + (v.get().isTextual() ? "'" + v.get().asText() + "'" : v.get())
                                + " is not supported; expected "
                                + (r.getValue().isTextual() ? "'" + r.getValue().asText() + "'" : r.getValue()));
            }
        }

        if ("rope".equals(arch.position())) {
            b.positions = Positions.ROPE;
            rope(b, cfg, d, problems);
        } else {
            b.positions = arch.positionsFromMask() ? Positions.LEARNED_FROM_MASK : Positions.LEARNED;
            b.positionOffset = arch.positionOffset();
        }

        b.attentionScale = new float[d.layers()];
        double scale = 1.0 / Math.sqrt(d.headDim());
        if (!arch.attentionScaleKey().isEmpty()) {
            double scalar = positive(cfg, arch.attentionScaleKey(), d.headDim(), problems);
            scale = 1.0 / Math.sqrt(scalar);
        }
        b.attentionSoftcap = arch.attentionSoftcapKey().isEmpty()
                ? 0f
                : (float) positive(cfg, arch.attentionSoftcapKey(), 0, problems);
        b.logitSoftcap =
                arch.logitSoftcapKey().isEmpty() ? 0f : (float) positive(cfg, arch.logitSoftcapKey(), 0, problems);
        if (!flag(arch, cfg, "attention_scaled", true, problems, where)) {
            scale = 1.0;
        }
        boolean byLayer = flag(arch, cfg, "attention_scaled_by_layer", false, problems, where);
        for (int l = 0; l < d.layers(); l++) {
            b.attentionScale[l] = (float) (byLayer ? scale / (l + 1) : scale);
        }
        b.window = windows(arch, cfg, d.layers(), problems);
        return new FamilySettings(b);
    }

    /** Whether attention is causal (a decoder-only language model). */
    public boolean causal() {
        return causal;
    }

    /** The norms' epsilon: config.json's, else transformers' default for the family. */
    public float eps() {
        return eps;
    }

    /** The MLP activation: config.json's, else the family's default. */
    public Activation activation() {
        return activation;
    }

    /** The RoPE inverse frequencies ({@link #rotaryDim()} / 2, in float32 as transformers computes them), or null. */
    public float[] invFreq() {
        return invFreq == null ? null : invFreq.clone();
    }

    /** How many leading dimensions of each head RoPE rotates ({@code head_dim × partial_rotary_factor}); 0 without. */
    public int rotaryDim() {
        return rotaryDim;
    }

    /** Per layer: the sliding attention window (a key is seen when {@code q − k < window}), 0 for none. */
    public int[] window() {
        return window.clone();
    }

    /** A positive number of config.json, {@code dflt} when absent or null. */
    private static double positive(ModelConfig cfg, String key, double dflt, List<String> problems) {
        Optional<JsonNode> v = cfg.get(key);
        if (v.isEmpty()) {
            return dflt;
        }
        if (!v.get().isNumber() || !(v.get().asDouble() > 0)) {
            problems.add("field '" + key + "' is " + v.get() + ", not a positive number");
            return dflt;
        }
        return v.get().asDouble();
    }

    /** The family's config flag with this meaning ({@code fixed} when it has none), malformed values reported. */
    private static boolean flag(
            Architecture arch, ModelConfig cfg, String meaning, boolean fixed, List<String> problems, String where) {
        Architecture.ConfigFlag f = arch.configFlags().get(meaning);
        return f == null ? fixed : flag(cfg, f.key(), f.dflt(), problems, where);
    }

    private static boolean flag(ModelConfig cfg, String key, boolean dflt, List<String> problems, String where) {
        Optional<JsonNode> v = cfg.get(key);
        if (v.isEmpty()) {
            return dflt;
        }
        if (!v.get().isBoolean()) {
            problems.add("field '" + key + "' is " + v.get() + ", not a boolean");
            return dflt;
        }
        return v.get().booleanValue();
    }

    private static Activation activation(ModelConfig cfg, Architecture arch, List<String> problems) {
        String name = null;
        for (String key : List.of("hidden_activation", "hidden_act", "activation_function")) {
            Optional<JsonNode> v = cfg.get(key);
            if (v.isPresent() && v.get().isTextual()) {
                name = v.get().asText();
                break;
            }
        }
        if (name == null) {
            name = arch.activation();
        }
        switch (name.toLowerCase(Locale.ROOT)) {
            case "silu":
            case "swish":
                return Activation.SILU;
            case "gelu":
                return Activation.GELU_ERF;
            case "gelu_new":
            case "gelu_pytorch_tanh":
            case "gelu_fast":
                return Activation.GELU_TANH;
            case "quick_gelu":
                return Activation.QUICK_GELU;
            case "relu":
                return Activation.RELU;
            default:
                problems.add("activation '" + name
                        + "' is not supported (supported: silu, gelu, gelu_new, gelu_pytorch_tanh, gelu_fast,"
                        + " quick_gelu, relu)");
                return Activation.SILU;
        }
    }

    /** The RoPE parameters object: {@code rope_parameters} (transformers 5) or {@code rope_scaling} (older). */
    private static Optional<JsonNode> ropeParameters(ModelConfig cfg) {
        for (String key : List.of("rope_parameters", "rope_scaling")) {
            Optional<JsonNode> v = cfg.get(key);
            if (v.isPresent() && v.get().isObject()) {
                return v;
            }
        }
        return Optional.empty();
    }

    private static void rope(Builder b, ModelConfig cfg, Dims d, List<String> problems) {
        double theta = cfg.number(Field.ROPE_THETA).orElse(10000.0);
        double partial = cfg.number(Field.PARTIAL_ROTARY).orElse(1.0);
        int dim = (int) (d.headDim() * partial);
        if (dim <= 0 || dim % 2 != 0 || dim > d.headDim()) {
            problems.add("rotary dimension " + dim + " (head_dim " + d.headDim() + " × partial_rotary_factor " + partial
                    + ") is not an even number in 2.." + d.headDim());
            return;
        }
        // transformers: inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)), in float32.
        float[] inv = new float[dim / 2];
        for (int i = 0; i < inv.length; i++) {
            float exponent = (float) (2 * i) / (float) dim;
            inv[i] = 1.0f / (float) Math.pow((float) theta, exponent);
        }
        Optional<JsonNode> params = ropeParameters(cfg);
        String type = params.map(p -> p.path("rope_type").asText(p.path("type").asText("default")))
                .orElse("default");
        switch (type) {
            case "default":
                break;
            case "linear": {
                double factor = params.get().path("factor").asDouble(0);
                if (factor <= 0) {
                    problems.add("rope type 'linear' needs a positive 'factor'");
                    break;
                }
                for (int i = 0; i < inv.length; i++) {
                    inv[i] = (float) (inv[i] / factor);
                }
                break;
            }
            case "llama3":
                llama3(inv, params.get(), problems);
                break;
            default:
                problems.add("rope type '" + type + "' is not supported (supported: default, linear, llama3)");
        }
        b.invFreq = inv;
        b.rotaryDim = dim;
    }

    /** transformers' {@code _compute_llama3_parameters}: long wavelengths divided by the factor, a smooth band. */
    private static void llama3(float[] inv, JsonNode p, List<String> problems) {
        for (String k : List.of("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")) {
            if (!p.path(k).isNumber()) {
                problems.add("rope type 'llama3' needs a numeric '" + k + "'");
                return;
            }
        }
        double factor = p.get("factor").asDouble();
        double low = p.get("low_freq_factor").asDouble();
        double high = p.get("high_freq_factor").asDouble();
        double old = p.get("original_max_position_embeddings").asDouble();
        double lowWavelen = old / low;
        double highWavelen = old / high;
        for (int i = 0; i < inv.length; i++) {
            float f = inv[i];
            float wavelen = (float) (2 * Math.PI / f);
            float scaled = wavelen > lowWavelen ? (float) (f / factor) : f;
            if (!(wavelen < highWavelen) && !(wavelen > lowWavelen)) {
                float smooth = (float) ((old / wavelen - low) / (high - low));
                scaled = (float) ((1 - smooth) * scaled / factor + smooth * scaled);
            }
            inv[i] = scaled;
        }
    }

    /** The sliding window of each layer, by the family's rule ({@link Architecture#slidingLayers}). */
    private static int[] windows(Architecture arch, ModelConfig cfg, int layers, List<String> problems) {
        int[] w = new int[layers];
        Optional<JsonNode> sw = cfg.get("sliding_window");
        if (sw.isEmpty()) {
            return w;
        }
        if (!sw.get().canConvertToInt() || sw.get().asInt() <= 0) {
            problems.add("sliding_window " + sw.get() + " is not a positive integer");
            return w;
        }
        int window = sw.get().asInt();
        boolean[] sliding = arch.slidingLayers(cfg, layers);
        for (int l = 0; l < layers; l++) {
            w[l] = sliding[l] ? window : 0;
        }
        return w;
    }
}
