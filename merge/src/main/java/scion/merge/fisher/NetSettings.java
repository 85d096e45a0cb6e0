package scion.merge.fisher;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.arch.Architecture;
import scion.io.arch.Dims;
import scion.io.config.ModelConfig;
import scion.io.runtime.export.FamilySettings;

/**
 * What {@link GradientNet} computes for one model: the family's settings as {@link FamilySettings} reads them from
 * config.json (the same reading as the ONNX export), narrowed to what the gradient pass implements. Supported: the
 * BERT encoder (post-LN, erf GELU, learned absolute positions, token type 0) and the llama-style decoders llama,
 * mistral and qwen2 (RMSNorm, rotary positions with the default, linear or llama3 scaling, grouped-query attention,
 * SiLU-gated MLP, optional projection biases, sliding windows). Everything else is refused at once, naming the family
 * or the setting.
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
        FamilySettings fs = FamilySettings.read(model, problems);
        boolean bert = "bert".equals(family);
        FamilySettings.Activation expected = bert ? FamilySettings.Activation.GELU_ERF : FamilySettings.Activation.SILU;
        if (fs.activation() != expected) {
            problems.add(
                    "activation " + name(fs.activation()) + " (supported for " + family + ": " + name(expected) + ")");
        }
        if (!problems.isEmpty()) {
            throw InvalidInputException.of(
                    where,
                    "the Fisher gradient pass cannot reproduce this " + family + " model",
                    "the settings of transformers' " + family + " it implements",
                    String.join("; ", problems));
        }
        return new NetSettings(family, fs.causal(), fs.eps(), fs.invFreq(), fs.rotaryDim(), fs.window(), (float)
                (1.0 / Math.sqrt(d.headDim())));
    }

    private static String name(FamilySettings.Activation a) {
        return a.name().toLowerCase(Locale.ROOT);
    }
}
