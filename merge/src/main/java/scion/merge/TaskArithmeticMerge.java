package scion.merge;

import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.SplittableRandom;

/**
 * mergekit's generalized task arithmetic: task arithmetic (Ilharco et al. 2023), TIES (Yadav et al. 2023), DARE (Yu
 * et al. 2024), Model Breadcrumbs (Davari &amp; Belilovsky 2023) and DELLA (Deep et al. 2024), one formula with two
 * switches.
 *
 * <p>For every non-base model {@code i}: the task vector {@code δᵢ = θᵢ − θ_base} is sparsified with density {@code
 * dᵢ} (per-model {@code density}, default 1 = keep all):
 *
 * <ul>
 *   <li>{@code magnitude} (ties): keep the {@code ⌊d·n⌋} largest {@code |δ|};
 *   <li>{@code random} (dare): keep each element with probability {@code d} (Bernoulli, from the seed);
 *   <li>{@code magnitude_outliers} (breadcrumbs): drop the {@code ⌊γ·n⌋} largest and then the smallest, keeping
 *       {@code ⌊d·n⌋} ({@code gamma}, default 0.01);
 *   <li>{@code della_magprune} (della): per row, keep element {@code j} with probability {@code d − ε + 2ε·r_j/(c−1)},
 *       {@code r_j} its ascending magnitude rank among the row's {@code c} elements ({@code epsilon}, default 0.15).
 * </ul>
 *
 * With {@code rescale} (default true for dare and della), the kept vector is scaled to the L1 norm of {@code δᵢ}
 * (mergekit's rescale; not DARE's {@code 1/d}, which it equals in expectation). Then, with per-model {@code weight}
 * {@code wᵢ}: {@code Δ = Σ wᵢδᵢ·mᵢ}, where with sign consensus (ties, dare_ties, breadcrumbs_ties, della) {@code mᵢ =
 * [sign(wᵢδᵢ) = sign(Σⱼ wⱼδⱼ)]} (ties at zero go to +) and otherwise {@code mᵢ = 1}; with {@code normalize},
 * {@code Δ /= Σ wᵢmᵢ} (a zero divisor reads 1; without consensus, {@code |Σ wᵢ| < 1e-8} reads 1). Result: {@code
 * θ_base + λ·Δ} ({@code lambda}, default 1). {@code int8_mask} is accepted and does not change the values.
 */
public final class TaskArithmeticMerge implements MergeMethod {
    /** How task vectors are sparsified. */
    public enum Sparsify {
        NONE,
        MAGNITUDE,
        RANDOM,
        MAGNITUDE_OUTLIERS,
        DELLA_MAGPRUNE
    }

    private final String id;
    private final String summary;
    private final Sparsify sparsify;
    private final boolean consensus;
    private final boolean defaultNormalize;
    private final boolean defaultRescale;

    public TaskArithmeticMerge(
            String id,
            String summary,
            Sparsify sparsify,
            boolean consensus,
            boolean defaultNormalize,
            boolean defaultRescale) {
        this.id = id;
        this.summary = summary;
        this.sparsify = sparsify;
        this.consensus = consensus;
        this.defaultNormalize = defaultNormalize;
        this.defaultRescale = defaultRescale;
    }

    /** The eight methods mergekit registers, with its defaults. */
    public static List<MergeMethod> all() {
        return List.of(
                new TaskArithmeticMerge(
                        "task_arithmetic", "base + Σ wᵢ(θᵢ − base)", Sparsify.NONE, false, false, false),
                new TaskArithmeticMerge(
                        "ties", "TIES: top-density task vectors, sign election", Sparsify.MAGNITUDE, true, true, false),
                new TaskArithmeticMerge(
                        "dare_ties", "DARE drop-and-rescale + TIES sign election", Sparsify.RANDOM, true, false, true),
                new TaskArithmeticMerge(
                        "dare_linear", "DARE drop-and-rescale, summed", Sparsify.RANDOM, false, false, true),
                new TaskArithmeticMerge(
                        "breadcrumbs",
                        "Model Breadcrumbs: drop outliers and small deltas",
                        Sparsify.MAGNITUDE_OUTLIERS,
                        false,
                        false,
                        false),
                new TaskArithmeticMerge(
                        "breadcrumbs_ties",
                        "Model Breadcrumbs + TIES sign election",
                        Sparsify.MAGNITUDE_OUTLIERS,
                        true,
                        false,
                        false),
                new TaskArithmeticMerge(
                        "della",
                        "DELLA magnitude-ranked dropout + sign election",
                        Sparsify.DELLA_MAGPRUNE,
                        true,
                        true,
                        true),
                new TaskArithmeticMerge(
                        "della_linear",
                        "DELLA magnitude-ranked dropout, summed",
                        Sparsify.DELLA_MAGPRUNE,
                        false,
                        false,
                        true));
    }

    @Override
    public String id() {
        return id;
    }

    @Override
    public String summary() {
        return summary;
    }

    @Override
    public BaseUse baseUse() {
        return BaseUse.REQUIRED;
    }

    @Override
    public boolean randomized() {
        return sparsify == Sparsify.RANDOM || sparsify == Sparsify.DELLA_MAGPRUNE;
    }

    @Override
    public List<Param> params() {
        List<Param> p = new ArrayList<>();
        p.add(Param.perModel("weight", null, "the task vector's weight"));
        p.add(Param.perModel("density", 1.0, "fraction of the task vector kept"));
        if (sparsify == Sparsify.MAGNITUDE_OUTLIERS) {
            p.add(Param.perModel("gamma", 0.01, "fraction of the largest deltas removed"));
        }
        if (sparsify == Sparsify.DELLA_MAGPRUNE) {
            p.add(Param.perModel("epsilon", 0.15, "spread of keep probabilities around density"));
        }
        p.add(Param.global("normalize", defaultNormalize, "divide by the sum of the (kept) weights"));
        p.add(Param.global("rescale", defaultRescale, "rescale kept deltas to the task vector's L1 norm"));
        p.add(Param.global("lambda", 1.0, "scale of the merged task vector"));
        p.add(Param.global("int8_mask", false, "accepted; memory option in mergekit, no effect on values"));
        return p;
    }

    @Override
    public Optional<String> checkModels(int models, boolean hasBase) {
        return hasBase ? Optional.empty() : Optional.of(id + " needs a base_model");
    }

    @Override
    public float[] merge(TensorMerge t) {
        float[] base = t.base();
        int n = base.length;
        int[] tasks = t.nonBase();
        if (tasks.length == 0) {
            return base.clone();
        }
        boolean rescale = t.params().flag("rescale");
        float[] w = new float[tasks.length];
        List<float[]> deltas = new ArrayList<>(tasks.length);
        for (int k = 0; k < tasks.length; k++) {
            int m = tasks[k];
            MergeParams p = t.modelParams().get(m);
            float[] d = t.values().get(m); // owned: becomes the task vector
            MergeOps.subInPlace(d, base);
            sparsify(d, p, rescale, t.rows(), new SplittableRandom(t.seed() ^ (0x9E3779B97F4A7C15L * (m + 1))));
            w[k] = (float) p.number("weight");
            for (int i = 0; i < n; i++) {
                d[i] *= w[k];
            }
            deltas.add(d);
        }
        boolean normalize = t.params().flag("normalize");
        float lambda = (float) t.params().number("lambda");
        float[] out = base; // owned by this merge: the result is written over the base's copy
        float wsum = 0;
        for (float x : w) {
            wsum += x;
        }
        float plainDivisor = Math.abs(wsum) < 1e-8f ? 1f : wsum;
        float[][] dd = deltas.toArray(new float[0][]);
        int m = dd.length;
        for (int i = 0; i < n; i++) {
            float mixed = 0;
            float divisor;
            if (consensus) {
                float s = 0;
                for (int k = 0; k < m; k++) {
                    s += dd[k][i];
                }
                boolean positive = s >= 0; // majority sign; zero deltas never vote with it
                divisor = 0;
                for (int k = 0; k < m; k++) {
                    float v = dd[k][i];
                    if (positive ? v > 0 : v < 0) {
                        mixed += v;
                        divisor += w[k];
                    }
                }
                if (divisor == 0) {
                    divisor = 1;
                }
            } else {
                for (int k = 0; k < m; k++) {
                    mixed += dd[k][i];
                }
                divisor = plainDivisor;
            }
            if (normalize) {
                mixed /= divisor;
            }
            out[i] = base[i] + lambda * mixed;
        }
        return out;
    }

    private void sparsify(float[] d, MergeParams p, boolean rescale, int rows, SplittableRandom rng) {
        double density = p.number("density");
        if (sparsify == Sparsify.NONE || density >= 1) {
            return;
        }
        int n = d.length;
        double before = rescale ? MergeOps.l1(d) : 0;
        switch (sparsify) {
            case MAGNITUDE: {
                int k = (int) (density * n);
                if (k <= 0) {
                    throw new scion.io.InvalidInputException(
                            "parameter 'density': " + density + " keeps no element of a tensor of " + n
                                    + "; expected density ≥ 1/" + n + ", found " + density);
                }
                MergeOps.keepMagnitudeRanks(d, n - k, n);
                break;
            }
            case MAGNITUDE_OUTLIERS: {
                int target = (int) (density * n);
                int top = (int) (p.number("gamma") * n);
                int bot = n - target - top;
                if (bot < 0) {
                    top += bot;
                    bot = 0;
                }
                MergeOps.keepMagnitudeRanks(d, bot, n - top);
                break;
            }
            case RANDOM: {
                for (int i = 0; i < n; i++) {
                    if (!(rng.nextDouble() < density)) {
                        d[i] = 0f;
                    }
                }
                break;
            }
            case DELLA_MAGPRUNE: {
                if (density <= 0) {
                    java.util.Arrays.fill(d, 0f);
                    return;
                }
                double eps = p.number("epsilon");
                if (density + eps >= 1 || density - eps <= 0) {
                    throw scion.io.InvalidInputException.of(
                            "parameter 'epsilon'",
                            "density ± epsilon leaves (0, 1)",
                            "0 < density − epsilon and density + epsilon < 1",
                            "density " + density + ", epsilon " + eps);
                }
                int r = n % rows == 0 ? rows : 1;
                int c = n / r;
                for (int row = 0; row < r; row++) {
                    int off = row * c;
                    int[] rank = MergeOps.magnitudeRanks(d, off, c);
                    for (int j = 0; j < c; j++) {
                        double norm = c > 1 ? rank[j] / (double) (c - 1) : 0;
                        double prob = density - eps + norm * 2 * eps;
                        if (!(rng.nextDouble() < prob)) {
                            d[off + j] = 0f;
                        }
                    }
                }
                break;
            }
            default:
                throw new IllegalStateException(sparsify.name());
        }
        if (rescale) {
            MergeOps.rescaleL1(d, before);
        }
    }
}
