package scion.merge.fisher;

import java.util.List;
import scion.merge.MergeMethod;
import scion.merge.TensorMerge;

/**
 * Fisher-weighted averaging (Matena &amp; Raffel 2022, eq. 3 with the diagonal Fisher): per element,
 *
 * <pre>  θ* = Σᵢ λᵢ Fᵢ θᵢ / Σᵢ λᵢ Fᵢ</pre>
 *
 * <p>where {@code Fᵢ} is model {@code i}'s diagonal Fisher ({@link FisherEstimator}, supplied through {@link
 * TensorMerge#importance()} by a {@link FisherImportance}) and {@code λᵢ} its {@code weight} parameter (default 1).
 * Following the paper's implementation, {@code ε} ({@code epsilon}, default 1e-8) is added to every {@code Fᵢ}, so an
 * element that no model's Fisher covers ({@code Σᵢ λᵢ Fᵢ = 0}: buffers, embedding rows no calibration token touched,
 * exactly-zero gradients such as BERT's key biases) falls back to the λ-weighted plain average. Sums are in double.
 *
 * <p>YAML: {@code merge_method: fisher}, {@code weight} per model, and the calibration settings {@code calib_text},
 * {@code calib_tokens} (default 4096), {@code calib_length} (default 128) and {@code fisher} ({@code true} or {@code
 * empirical}) as top-level parameters; {@code scion merge --method fisher A B OUT --calib TEXT [--tokens T]} gives
 * them on the command line. The estimate itself runs before the merge, one model at a time.
 */
public final class FisherMerge implements MergeMethod {
    /** Parameter: the calibration text. */
    public static final String CALIB_TEXT = "calib_text";

    /** Parameter: the token budget per model. */
    public static final String CALIB_TOKENS = "calib_tokens";

    /** Parameter: tokens per sequence. */
    public static final String CALIB_LENGTH = "calib_length";

    /** Parameter: {@code true} or {@code empirical}. */
    public static final String FISHER = "fisher";

    /** Default token budget per model: the estimate runs at tens to hundreds of tokens per second on a CPU. */
    public static final long DEFAULT_TOKENS = 4096;

    @Override
    public String id() {
        return "fisher";
    }

    @Override
    public String summary() {
        return "Fisher-weighted average, diagonal Fisher estimated on calibration text (Matena & Raffel 2022)";
    }

    @Override
    public BaseUse baseUse() {
        return BaseUse.UNUSED;
    }

    @Override
    public List<Param> params() {
        return List.of(
                Param.perModel("weight", 1.0, "the model's λ (scales its Fisher)"),
                Param.global("epsilon", 1e-8, "added to every Fisher element (plain average where all are zero)"),
                Param.global(
                        CALIB_TEXT, "", "calibration text file (UTF-8, one paragraph per line); --calib overrides"),
                Param.global(CALIB_TOKENS, (double) DEFAULT_TOKENS, "calibration tokens per model; --tokens overrides"),
                Param.global(CALIB_LENGTH, 128.0, "tokens per calibration sequence; --calib-length overrides"),
                Param.global(FISHER, "true", "causal LMs: 'true' (sampled targets) or 'empirical' (next tokens)"));
    }

    @Override
    public boolean needsImportance() {
        return true;
    }

    @Override
    public float[] merge(TensorMerge t) {
        int models = t.models();
        double[] lambda = new double[models];
        for (int m = 0; m < models; m++) {
            lambda[m] = t.modelParams().get(m).number("weight");
        }
        return merge(t.values(), t.importance(), lambda, t.params().number("epsilon"));
    }

    /** The formula above on plain arrays. */
    public static float[] merge(List<float[]> values, List<float[]> fisher, double[] lambda, double epsilon) {
        int n = values.get(0).length;
        float[] out = new float[n];
        int models = values.size();
        for (int i = 0; i < n; i++) {
            double num = 0;
            double den = 0;
            for (int m = 0; m < models; m++) {
                double w = lambda[m] * (fisher.get(m)[i] + epsilon);
                num += w * values.get(m)[i];
                den += w;
            }
            out[i] = (float) (num / den);
        }
        return out;
    }
}
