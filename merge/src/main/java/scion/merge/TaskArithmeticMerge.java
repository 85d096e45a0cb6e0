package scion.merge;

import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

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
        if (t.nonBase().length == 0) {
            return t.base().clone();
        }
        // The whole tensor is one block: the same code as the block-wise form, so both give the same values.
        Kernel k = new Kernel(TensorSpec.of(t), t.shape().length >= 2 ? t.numel() / t.rows() : t.numel());
        for (int p = 0; p < k.passes(); p++) {
            List<float[]> copies = new ArrayList<>();
            for (float[] v : t.values()) {
                copies.add(v.clone());
            }
            k.accept(p, k.observe(p, new ChunkedMerge.Block(0, t.numel(), 0, t.rows(), copies, t.base())));
            k.endPass(p);
        }
        return k.apply(new ChunkedMerge.Block(0, t.numel(), 0, t.rows(), t.values(), t.base()));
    }

    @Override
    public ChunkedMerge chunked(TensorSpec t) {
        if (t.nonBase().length == 0 || sparsify == Sparsify.DELLA_MAGPRUNE && t.shape().length < 2) {
            return null; // a copy of the base; or della over a vector, whose one "row" is the whole tensor
        }
        return new Kernel(t, scion.io.tensor.BlockedTensor.rowLength(t.shape()));
    }

    /**
     * The method on one tensor, block by block. Passes (each only when needed): the magnitude bounds of every task
     * vector's kept ranks are found exactly over the whole tensor ({@link RankSelect}: high bits, low bits, then equal
     * counts per block when a bound splits its equals), then the L1 norms before and after sparsifying for {@code
     * rescale}. Random masks come from a counter-based generator ({@link MergeOps#uniform}): each element's draw is a
     * function of the seed, the model and the element's index, so blocks can be drawn in any order.
     */
    private final class Kernel implements ChunkedMerge {
        private static final int HIGH = 0;
        private static final int LOW = 1;
        private static final int EQUAL = 2;
        private static final int L1 = 3;

        private final TensorSpec t;
        private final long rowLength;
        private final int[] tasks;
        private final double[] density;
        private final RankSelect[] select; // per task: magnitude rank selection, or null
        private final boolean rescale;
        private final int[] passes;
        private final long[] seeds;
        private final double[] l1Before;
        private final double[] l1After;
        private float[] scale;

        Kernel(TensorSpec t, long rowLength) {
            this.t = t;
            long n = t.numel();
            this.rowLength = rowLength;
            this.tasks = t.nonBase();
            int m = tasks.length;
            density = new double[m];
            select = new RankSelect[m];
            seeds = new long[m];
            boolean anySelect = false;
            boolean anySparse = false;
            for (int k = 0; k < m; k++) {
                MergeParams p = t.modelParams().get(tasks[k]);
                density[k] = p.number("density");
                seeds[k] = t.seed() ^ (0x9E3779B97F4A7C15L * (tasks[k] + 1));
                boolean sparse = sparsify != Sparsify.NONE && density[k] < 1;
                anySparse |= sparse;
                if (sparse && sparsify == Sparsify.MAGNITUDE) {
                    long keep = (long) (density[k] * n);
                    if (keep <= 0) {
                        throw new scion.io.InvalidInputException(
                                "parameter 'density': " + density[k] + " keeps no element of a tensor of " + n
                                        + "; expected density ≥ 1/" + n + ", found " + density[k]);
                    }
                    select[k] = new RankSelect(n, n - keep, n);
                } else if (sparse && sparsify == Sparsify.MAGNITUDE_OUTLIERS) {
                    long target = (long) (density[k] * n);
                    long top = (long) (p.number("gamma") * n);
                    long bot = n - target - top;
                    if (bot < 0) {
                        top += bot;
                        bot = 0;
                    }
                    select[k] = new RankSelect(n, bot, n - top);
                } else if (sparse && sparsify == Sparsify.DELLA_MAGPRUNE && density[k] > 0) {
                    double eps = p.number("epsilon");
                    if (density[k] + eps >= 1 || density[k] - eps <= 0) {
                        throw scion.io.InvalidInputException.of(
                                "parameter 'epsilon'",
                                "density ± epsilon leaves (0, 1)",
                                "0 < density − epsilon and density + epsilon < 1",
                                "density " + density[k] + ", epsilon " + eps);
                    }
                }
                anySelect |= select[k] != null && !select[k].keepsAll();
            }
            rescale = t.params().flag("rescale") && anySparse;
            List<Integer> ps = new ArrayList<>();
            if (anySelect) {
                ps.add(HIGH);
                ps.add(LOW);
                ps.add(EQUAL);
            }
            if (rescale) {
                ps.add(L1);
            }
            passes = ps.stream().mapToInt(Integer::intValue).toArray();
            l1Before = new double[m];
            l1After = new double[m];
        }

        @Override
        public int passes() {
            return passes.length;
        }

        @Override
        public boolean skip(int pass) {
            if (passes[pass] != EQUAL) {
                return false;
            }
            for (RankSelect r : select) {
                if (r != null && r.needsEqualCounts()) {
                    return false;
                }
            }
            return true;
        }

        /** The task vector of task {@code k} over block {@code b}: {@code θ − base}, in the block's own array. */
        private float[] delta(Block b, int k) {
            float[] d = b.values().get(tasks[k]);
            MergeOps.subInPlace(d, b.base());
            return d;
        }

        private boolean selects(int k) {
            return select[k] != null && !select[k].keepsAll();
        }

        @Override
        public Object observe(int pass, Block b) {
            int m = tasks.length;
            Object[] partial = new Object[m];
            for (int k = 0; k < m; k++) {
                switch (passes[pass]) {
                    case HIGH:
                        partial[k] = selects(k) ? RankSelect.highPartial(delta(b, k)) : null;
                        break;
                    case LOW:
                        partial[k] = selects(k) ? select[k].lowPartial(delta(b, k)) : null;
                        break;
                    case EQUAL:
                        partial[k] = selects(k) ? select[k].equalPartial(delta(b, k)) : null;
                        break;
                    case L1: {
                        float[] d = delta(b, k);
                        double before = MergeOps.l1(d);
                        mask(k, d, b);
                        partial[k] = new double[] {before, MergeOps.l1(d)};
                        break;
                    }
                    default:
                        throw new IllegalStateException("pass " + pass);
                }
            }
            return new Object[] {b.start(), partial};
        }

        @Override
        public void accept(int pass, Object partial) {
            long start = (Long) ((Object[]) partial)[0];
            Object[] p = (Object[]) ((Object[]) partial)[1];
            for (int k = 0; k < tasks.length; k++) {
                if (p[k] == null) {
                    continue;
                }
                switch (passes[pass]) {
                    case HIGH:
                        select[k].addHigh((int[]) p[k]);
                        break;
                    case LOW:
                        select[k].addLow((int[][]) p[k]);
                        break;
                    case EQUAL:
                        select[k].addEqual(start, (long[]) p[k]);
                        break;
                    case L1:
                        l1Before[k] += ((double[]) p[k])[0];
                        l1After[k] += ((double[]) p[k])[1];
                        break;
                    default:
                        throw new IllegalStateException("pass " + pass);
                }
            }
        }

        @Override
        public void endPass(int pass) {
            for (int k = 0; k < tasks.length; k++) {
                if (passes[pass] == HIGH && selects(k)) {
                    select[k].endHigh();
                } else if (passes[pass] == LOW && selects(k)) {
                    select[k].endLow();
                }
            }
            if (passes[pass] == L1) {
                scale = new float[tasks.length];
                for (int k = 0; k < tasks.length; k++) {
                    boolean skip = l1Before[k] < 1e-7 || l1After[k] < 1e-7;
                    scale[k] = skip ? 1f : (float) (l1Before[k] / l1After[k]);
                }
            }
        }

        /** Zeroes the elements of task {@code k}'s vector {@code d} (block {@code b}) that its sparsification drops. */
        private void mask(int k, float[] d, Block b) {
            if (sparsify == Sparsify.NONE || density[k] >= 1) {
                return;
            }
            long start = b.start();
            switch (sparsify) {
                case MAGNITUDE:
                case MAGNITUDE_OUTLIERS:
                    select[k].keep(d, start);
                    break;
                case RANDOM:
                    for (int i = 0; i < d.length; i++) {
                        if (!(MergeOps.uniform(seeds[k], start + i) < density[k])) {
                            d[i] = 0f;
                        }
                    }
                    break;
                case DELLA_MAGPRUNE: {
                    if (density[k] <= 0) {
                        java.util.Arrays.fill(d, 0f);
                        return;
                    }
                    double eps = t.modelParams().get(tasks[k]).number("epsilon");
                    int c = Math.toIntExact(rowLength);
                    for (int off = 0; off < d.length; off += c) {
                        int[] rank = MergeOps.magnitudeRanks(d, off, c);
                        for (int j = 0; j < c; j++) {
                            double norm = c > 1 ? rank[j] / (double) (c - 1) : 0;
                            double prob = density[k] - eps + norm * 2 * eps;
                            if (!(MergeOps.uniform(seeds[k], start + off + j) < prob)) {
                                d[off + j] = 0f;
                            }
                        }
                    }
                    break;
                }
                default:
                    throw new IllegalStateException(sparsify.name());
            }
        }

        @Override
        public float[] apply(Block b) {
            int m = tasks.length;
            float[] w = new float[m];
            float[][] dd = new float[m][];
            for (int k = 0; k < m; k++) {
                float[] d = delta(b, k);
                mask(k, d, b);
                if (rescale && scale[k] != 1f) {
                    float s = scale[k];
                    for (int i = 0; i < d.length; i++) {
                        d[i] *= s;
                    }
                }
                w[k] = (float) t.modelParams().get(tasks[k]).number("weight");
                for (int i = 0; i < d.length; i++) {
                    d[i] *= w[k];
                }
                dd[k] = d;
            }
            return combine(b.base(), dd, w);
        }

        /** {@code base + λ·Δ} with sign consensus and normalisation, written over the base's block. */
        private float[] combine(float[] base, float[][] dd, float[] w) {
            boolean normalize = t.params().flag("normalize");
            float lambda = (float) t.params().number("lambda");
            float[] out = base;
            float wsum = 0;
            for (float x : w) {
                wsum += x;
            }
            float plainDivisor = Math.abs(wsum) < 1e-8f ? 1f : wsum;
            int m = dd.length;
            for (int i = 0; i < base.length; i++) {
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
    }
}
