package scion.lowrank;

import java.util.ArrayList;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;
import org.ejml.data.DMatrixRMaj;
import org.ejml.dense.row.CommonOps_DDRM;
import scion.io.InvalidInputException;
import scion.io.arch.Role;
import scion.io.arch.WeightGraph;
import scion.io.arch.WeightGraph.Weight;

/**
 * Low-rank factorisation of linear weights by truncated SVD: a weight {@code W [out, in]} (PyTorch {@code
 * Linear.weight}) becomes {@code B [out, r] · A [r, in]}, which costs {@code r·(out + in)} parameters instead of
 * {@code out·in}.
 *
 * <ul>
 *   <li>{@link Method#SVD}: the exact truncated SVD (EJML, float64). Eckart–Young: {@code ‖W − Ŵ‖_F = √(Σ_{i>r}
 *       σ_i²)}, the smallest error of any rank-r matrix.
 *   <li>{@link Method#RANDOMIZED}: Halko, Martinsson &amp; Tropp (2011): Gaussian sketch of {@code r + p} columns,
 *       {@code q} power iterations with re-orthonormalisation, then a small exact SVD ({@link
 *       LowRankOps#randomizedSvd}); defaults p = 10, q = 4 (q = 2 misses 1 % of the optimum on the flat spectra of MiniLM's attention weights: 1.1 %; q = 4: 0.3 %).
 *   <li>{@link Method#ASVD}: activation-aware SVD (Yuan et al. 2023): {@code S = diag(mean|x_j|^α)} from
 *       calibration inputs of the weight; factor {@code W·S}, then {@code Ŵ = (W·S)_r·S⁻¹} (α = 0.5 as in ASVD).
 *   <li>{@link Method#SVD_LLM}: truncation-aware whitening (Wang et al. 2024): {@code XᵀX = L·Lᵀ} (Cholesky of the
 *       calibration inputs' Gram matrix), factor {@code W·L}, {@code Ŵ = (W·L)_r·L⁻¹}. Then {@code ‖(W − Ŵ)·Xᵀ‖_F =
 *       ‖(W − Ŵ)·L‖_F = √(Σ_{i>r} σ_i(W·L)²)}: each dropped singular value is exactly the output error it causes.
 *       When XᵀX is not positive definite (dead input features, fewer tokens than inputs), a ridge {@code λ·I} is
 *       added ({@link LowRankOps#cholesky}: λ from 1e-8·mean(diag XᵀX), ×10 until it factors) and reported; the
 *       identity then holds for {@code XᵀX + λI}.
 * </ul>
 *
 * <p>The factors are balanced: {@code B = U_r·√Σ_r}, {@code A = √Σ_r·V_rᵀ·S⁻¹} (S = I, diag(mean|x|^α) or L). Rank
 * rules ({@link RankRule}) apply per matrix; a matrix whose rank would be at or above break-even {@code r ≥
 * out·in/(out + in)} is left dense. Energy is measured on the factored matrix ({@code W}, {@code W·S} or {@code
 * W·L}).
 */
public final class SvdLowRank {
    private SvdLowRank() {}

    /** Default oversampling of the randomized SVD. */
    public static final int DEFAULT_OVERSAMPLING = 10;

    /** Default power iterations of the randomized SVD. */
    public static final int DEFAULT_POWER_ITERATIONS = 4;

    /** ASVD's exponent of the activation scaling. */
    public static final double DEFAULT_ALPHA = 0.5;

    /** The factorisation method. */
    public enum Method {
        SVD("svd"),
        RANDOMIZED("randomized"),
        ASVD("asvd"),
        SVD_LLM("svd-llm");

        private final String id;

        Method(String id) {
            this.id = id;
        }

        public String id() {
            return id;
        }

        /** Whether the method needs calibration activations. */
        public boolean needsCalibration() {
            return this == ASVD || this == SVD_LLM;
        }

        public static Method parse(String s) {
            for (Method m : values()) {
                if (m.id.equals(s.trim().toLowerCase(Locale.ROOT))) {
                    return m;
                }
            }
            throw InvalidInputException.of("--method", "unknown method", "svd, randomized, asvd or svd-llm", s);
        }
    }

    /**
     * How the rank of each matrix is chosen; every rule applies per matrix.
     *
     * @param kind fixed rank, energy threshold or parameter ratio
     * @param value R (≥ 1), E (kept fraction of Σσ², in (0, 1]) or P (factored parameters / dense parameters of the
     *     matrix, in (0, 1]: r = max(1, ⌊P·out·in/(out + in)⌋))
     */
    public record RankRule(Kind kind, double value) {
        /** The rule's kind. */
        public enum Kind {
            RANK,
            ENERGY,
            RATIO
        }

        public RankRule {
            switch (kind) {
                case RANK:
                    if (value < 1 || value != Math.rint(value)) {
                        throw InvalidInputException.of("--rank", "not a positive integer", "R ≥ 1", fmt(value));
                    }
                    break;
                case ENERGY:
                    if (!(value > 0 && value <= 1)) {
                        throw InvalidInputException.of(
                                "--energy", "out of range", "a kept fraction E in (0, 1]", fmt(value));
                    }
                    break;
                default:
                    if (!(value > 0 && value <= 1)) {
                        throw InvalidInputException.of(
                                "--ratio", "out of range", "a parameter ratio P in (0, 1]", fmt(value));
                    }
            }
        }

        /** {@code rank=R}, {@code energy=E} or {@code ratio=P}. */
        public String describe() {
            return kind.name().toLowerCase(Locale.ROOT) + "=" + fmt(value);
        }

        private static String fmt(double v) {
            return v == Math.rint(v) && Math.abs(v) < 1e9 ? Long.toString((long) v) : Double.toString(v);
        }
    }

    /**
     * What to do.
     *
     * @param method the factorisation
     * @param rule the rank rule
     * @param alpha ASVD's exponent α
     * @param oversampling randomized SVD's p
     * @param powerIterations randomized SVD's q
     * @param seed randomized SVD's seed (each matrix uses {@code seed} mixed with its name)
     */
    public record Params(Method method, RankRule rule, double alpha, int oversampling, int powerIterations, long seed) {
        public Params {
            if (oversampling < 0 || powerIterations < 0) {
                throw InvalidInputException.of(
                        "randomized SVD",
                        "negative oversampling or power iterations",
                        "p ≥ 0 and q ≥ 0",
                        oversampling + " and " + powerIterations);
            }
            if (!(alpha >= 0 && alpha <= 4)) {
                throw InvalidInputException.of("--alpha", "out of range", "α in [0, 4]", alpha);
            }
        }

        /** Defaults: α = 0.5, p = 10, q = 4, seed 0. */
        public static Params of(Method method, RankRule rule) {
            return new Params(method, rule, DEFAULT_ALPHA, DEFAULT_OVERSAMPLING, DEFAULT_POWER_ITERATIONS, 0);
        }

        /** The parameters for provenance. */
        public Map<String, String> describe() {
            Map<String, String> m = new LinkedHashMap<>();
            m.put("method", method.id());
            m.put("rule", rule.describe());
            if (method == Method.ASVD) {
                m.put("alpha", Double.toString(alpha));
            }
            if (method == Method.RANDOMIZED) {
                m.put("oversampling", Integer.toString(oversampling));
                m.put("power_iterations", Integer.toString(powerIterations));
                m.put("seed", Long.toString(seed));
            }
            return m;
        }
    }

    /**
     * The outcome for one matrix.
     *
     * @param name the weight's Hugging Face name
     * @param out rows of W
     * @param in columns of W
     * @param rank the kept rank, or 0 when left dense
     * @param breakEven {@code out·in/(out + in)}: ranks at or above it save nothing
     * @param note why it was left dense, or the ridge / clamping applied; empty otherwise
     * @param spectrum the singular values of the factored matrix (W, W·S or W·L), descending (for randomized: the
     *     sketch's ℓ values)
     * @param keptEnergy {@code Σ_{i≤r} σ_i² / Σ σ_i²} of the factored matrix (total energy exact: ‖·‖_F²)
     * @param relativeError {@code ‖W − Ŵ‖_F / ‖W‖_F} (0 when dense)
     * @param tail {@code √(Σ_{i>r} σ_i²) / ‖M‖_F} of the factored matrix M: for svd the Eckart–Young bound that
     *     relativeError reaches; for svd-llm the relative output error {@code ‖(W − Ŵ)Xᵀ‖ / ‖W·Xᵀ‖} on the calibration
     *     inputs
     * @param ridge the ridge added to XᵀX (svd-llm), else 0
     * @param a the input-side factor {@code [r, in]}, null when dense
     * @param b the output-side factor {@code [out, r]}, null when dense
     */
    public record Result(
            String name,
            int out,
            int in,
            int rank,
            double breakEven,
            String note,
            double[] spectrum,
            double keptEnergy,
            double relativeError,
            double tail,
            double ridge,
            DMatrixRMaj a,
            DMatrixRMaj b) {
        public boolean dense() {
            return rank == 0;
        }

        public long parametersBefore() {
            return (long) out * in;
        }

        public long parametersAfter() {
            return dense() ? parametersBefore() : (long) rank * (out + in);
        }

        /** {@code B·A} (float64), or null when dense (or when the factors were dropped). */
        public DMatrixRMaj reconstruction() {
            return dense() || a == null ? null : LowRankOps.multiply(b, a);
        }

        /** The same report without the factors (what a streamed run keeps once the factors are written). */
        public Result withoutFactors() {
            return new Result(
                    name, out, in, rank, breakEven, note, spectrum, keptEnergy, relativeError, tail, ridge, null, null);
        }
    }

    /**
     * The rank rule's decision from the matrix's shape alone (no data read): the rank to keep, 0 when the matrix
     * stays dense (rank at or above break-even), or −1 when the rule needs the spectrum ({@code --energy}). Agrees
     * with {@link #factor} for every method.
     */
    public static int rankFromShape(Params p, int out, int in) {
        int r = shapeRank(p, out, in);
        if (r < 0) {
            return -1;
        }
        return r >= (double) out * in / (out + in) ? 0 : r;
    }

    /** The report of a matrix that {@link #rankFromShape} leaves dense: the break-even note, no spectrum. */
    public static Result denseFromShape(String name, int out, int in, Params p) {
        int r = shapeRank(p, out, in);
        if (r < 0 || rankFromShape(p, out, in) != 0) {
            throw new IllegalArgumentException("'" + name + "' is not left dense by its shape under " + p.rule());
        }
        return dense(name, out, in, (double) out * in / (out + in), r, new StringBuilder(), new double[0], 0);
    }

    private static int shapeRank(Params p, int out, int in) {
        switch (p.rule().kind()) {
            case RANK:
                return (int) Math.min(Math.min(out, in), p.rule().value());
            case RATIO:
                return ratioRank(p.rule().value(), out, in);
            default:
                return -1;
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Targets

    /** The default targets: every attention and MLP projection. */
    public static final String DEFAULT_TARGETS = "attention,mlp";

    private static final Set<Role> ATTENTION =
            EnumSet.of(Role.ATTN_Q, Role.ATTN_K, Role.ATTN_V, Role.ATTN_QKV, Role.ATTN_O);
    private static final Set<Role> MLP = EnumSet.of(Role.MLP_GATE, Role.MLP_UP, Role.MLP_DOWN);

    /**
     * The weights {@code spec} names, in storage order: a comma-separated list of groups ({@code attention} = q, k,
     * v, fused qkv, o; {@code mlp} = gate, up, down), role ids ({@code attn_q}, {@code mlp_down}, {@code lm_head},
     * ...: {@link Role#id()}), or name patterns ({@code *} matches any run of characters; e.g. {@code
     * *.layers.3.*}). Only linear projections are factorised: a pattern selects the linear weights among the names it
     * matches (biases, norms and embeddings are skipped); a role, or a pattern that matches only embeddings or norms,
     * is refused, since this version factors matrices that multiply activations only.
     */
    public static List<Weight> targets(WeightGraph g, String spec) {
        Set<Role> roles = EnumSet.noneOf(Role.class);
        List<Pattern> patterns = new ArrayList<>();
        List<String> patternTexts = new ArrayList<>();
        for (String raw : spec.split(",", -1)) {
            String item = raw.trim();
            if (item.isEmpty()) {
                throw InvalidInputException.of("--targets", "empty item", "roles, groups or name patterns", spec);
            }
            String lower = item.toLowerCase(Locale.ROOT);
            if (lower.equals("attention")) {
                roles.addAll(ATTENTION);
            } else if (lower.equals("mlp")) {
                roles.addAll(MLP);
            } else if (lower.matches("[a-z_]+") && !item.contains(".")) {
                Role r;
                try {
                    r = Role.fromId(lower);
                } catch (IllegalArgumentException e) {
                    throw InvalidInputException.of(
                            "--targets",
                            "unknown role '" + item + "'",
                            "attention, mlp, a linear role (attn_q, attn_k, attn_v, attn_qkv, attn_o, mlp_gate,"
                                    + " mlp_up, mlp_down, lm_head) or a name pattern with '*' or '.'",
                            item);
                }
                if (!r.isLinear()) {
                    throw InvalidInputException.of(
                            "--targets",
                            "role '" + item + "' is not a linear projection (embeddings and norms are not factored)",
                            "a linear role (attn_*, mlp_*, lm_head)",
                            item);
                }
                roles.add(r);
            } else {
                patterns.add(glob(item));
                patternTexts.add(item);
            }
        }
        Set<Weight> chosen = new LinkedHashSet<>();
        for (Weight w : g.weights()) {
            if (!w.isBias() && roles.contains(w.role()) && w.tensor().shape().length == 2) {
                chosen.add(w);
            }
        }
        for (int i = 0; i < patterns.size(); i++) {
            int matched = 0;
            List<String> refused = new ArrayList<>();
            for (Weight w : g.weights()) {
                if (!patterns.get(i).matcher(w.name()).matches() || w.isBias()) {
                    continue;
                }
                if (!w.role().isLinear() || w.tensor().shape().length != 2) {
                    refused.add(w.name() + " (" + w.role().id() + ")");
                    continue;
                }
                chosen.add(w);
                matched++;
            }
            if (!refused.isEmpty() && matched == 0) {
                throw InvalidInputException.of(
                        "--targets",
                        "pattern '" + patternTexts.get(i) + "' names weights that are not linear projections"
                                + " (embeddings and norms are not factored)",
                        "linear weights only",
                        String.join(", ", refused.subList(0, Math.min(3, refused.size())))
                                + (refused.size() > 3 ? ", ..." : ""));
            }
            if (matched == 0 && refused.isEmpty()) {
                throw InvalidInputException.of(
                        "--targets",
                        "pattern '" + patternTexts.get(i) + "' matches no weight",
                        "a pattern over Hugging Face names such as 'model.layers.0.mlp.*'",
                        "no match");
            }
        }
        List<Weight> out = new ArrayList<>();
        for (Weight w : g.weights()) {
            if (chosen.contains(w)) {
                out.add(w);
            }
        }
        if (out.isEmpty()) {
            throw InvalidInputException.of("--targets", "no weight to factor", "at least one linear projection", spec);
        }
        return out;
    }

    private static Pattern glob(String s) {
        String[] parts = s.split("\\*", -1);
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < parts.length; i++) {
            if (i > 0) {
                b.append(".*");
            }
            if (!parts[i].isEmpty()) {
                b.append(Pattern.quote(parts[i]));
            }
        }
        return Pattern.compile(b.toString());
    }

    /** Whether weight {@code w} is stored {@code [in, out]} (ONNX MatMul storage, gpt2 Conv1D). */
    public static boolean storedInOut(Weight w) {
        return w.transposed() != w.spec().inOut();
    }

    /** {@code {out, in}} of weight {@code w} (W [out, in]), from its stored shape. */
    public static int[] outIn(Weight w) {
        long[] s = w.tensor().shape();
        int r = Math.toIntExact(s[0]);
        int c = Math.toIntExact(s[1]);
        return storedInOut(w) ? new int[] {c, r} : new int[] {r, c};
    }

    /** The weight as {@code W [out, in]} in float64. */
    public static DMatrixRMaj read(Weight w) {
        long[] s = w.tensor().shape();
        int rows = Math.toIntExact(s[0]);
        int cols = Math.toIntExact(s[1]);
        float[] f = w.tensor().toFloats();
        DMatrixRMaj m = new DMatrixRMaj(rows, cols);
        for (int i = 0; i < f.length; i++) {
            m.data[i] = f[i];
        }
        return storedInOut(w) ? CommonOps_DDRM.transpose(m, null) : m;
    }

    // ---------------------------------------------------------------------------------------------------------------
    // One matrix

    /**
     * Factors one matrix.
     *
     * @param name for the report
     * @param w {@code [out, in]}
     * @param meanAbs mean |x_j| per input column (ASVD), else null
     * @param gram XᵀX {@code [in, in]} of the calibration inputs (SVD-LLM), else null
     * @param products the kernel of the randomized SVD's large products
     */
    public static Result factor(
            String name, DMatrixRMaj w, Params p, double[] meanAbs, DMatrixRMaj gram, LowRankOps.Products products) {
        int out = w.numRows;
        int in = w.numCols;
        int k = Math.min(out, in);
        double breakEven = (double) out * in / (out + in);
        StringBuilder note = new StringBuilder();
        double ridge = 0;

        // M = W·S: the matrix whose truncated SVD is taken; unscale applies S⁻¹ to the right factor.
        DMatrixRMaj m = w;
        double[] scale = null; // ASVD: S_j
        DMatrixRMaj lower = null; // SVD-LLM: L
        if (p.method() == Method.ASVD) {
            if (meanAbs == null || meanAbs.length != in) {
                throw new IllegalArgumentException("ASVD of '" + name + "' needs mean |x| of its " + in + " inputs");
            }
            scale = new double[in];
            double max = 0;
            for (double v : meanAbs) {
                max = Math.max(max, v);
            }
            double floor = max > 0 ? 1e-6 * max : 1;
            int clamped = 0;
            for (int j = 0; j < in; j++) {
                double v = meanAbs[j];
                if (!(v >= floor)) {
                    v = floor;
                    clamped++;
                }
                scale[j] = Math.pow(v, p.alpha());
            }
            if (clamped > 0) {
                note.append(clamped).append(" dead input(s): mean|x| raised to 1e-6·max");
            }
            m = w.copy();
            for (int i = 0; i < out; i++) {
                for (int j = 0; j < in; j++) {
                    m.data[i * in + j] *= scale[j];
                }
            }
        } else if (p.method() == Method.SVD_LLM) {
            if (gram == null || gram.numRows != in || gram.numCols != in) {
                throw new IllegalArgumentException("SVD-LLM of '" + name + "' needs XᵀX [" + in + ", " + in + "]");
            }
            LowRankOps.Cholesky c = LowRankOps.cholesky(gram);
            lower = c.lower();
            ridge = c.ridge();
            if (ridge > 0) {
                note.append(String.format(
                        Locale.ROOT, "XᵀX not positive definite: ridge %.3g·I added (1e-8·mean diag ×10ᵏ)", ridge));
            }
            m = LowRankOps.multiply(w, lower);
        }
        double total = 0;
        for (int i = 0; i < m.getNumElements(); i++) {
            total += m.data[i] * m.data[i];
        }

        // Spectrum and rank.
        LowRankOps.Svd svd;
        int r;
        double[] spectrum;
        if (p.method() == Method.RANDOMIZED) {
            int want;
            switch (p.rule().kind()) {
                case RANK:
                    want = (int) Math.min(k, p.rule().value());
                    break;
                case RATIO:
                    want = ratioRank(p.rule().value(), out, in);
                    break;
                default:
                    // energy: sketch up to the largest rank below break-even, then pick the rank from the sketch
                    want = Math.max(1, Math.min(k, (int) Math.ceil(breakEven) - 1));
            }
            if (want >= breakEven) {
                return dense(name, out, in, breakEven, want, note, new double[0], ridge);
            }
            long seed = p.seed() ^ (name.hashCode() * 0x9E3779B97F4A7C15L);
            svd = LowRankOps.randomizedSvd(m, want, p.oversampling(), p.powerIterations(), seed, products);
            spectrum = svd.s();
            r = p.rule().kind() == RankRule.Kind.ENERGY
                    ? energyRank(spectrum, total, p.rule().value())
                    : want;
            if (r < 0) {
                note.append("energy ").append(p.rule().value()).append(" not reached below break-even");
                return dense(name, out, in, breakEven, k, note, spectrum, ridge);
            }
        } else {
            svd = LowRankOps.exactSvd(m);
            spectrum = svd.s();
            switch (p.rule().kind()) {
                case RANK:
                    r = (int) Math.min(k, p.rule().value());
                    break;
                case RATIO:
                    r = ratioRank(p.rule().value(), out, in);
                    break;
                default:
                    r = energyRank(spectrum, total, p.rule().value());
            }
        }
        if (r >= breakEven) {
            return dense(name, out, in, breakEven, r, note, spectrum, ridge);
        }
        LowRankOps.Svd t = svd.truncate(r);
        double kept = 0;
        for (int i = 0; i < r; i++) {
            kept += t.s()[i] * t.s()[i];
        }
        double keptEnergy = total > 0 ? Math.min(1, kept / total) : 1;
        double tail = total > 0 ? Math.sqrt(Math.max(0, total - kept) / total) : 0;
        if (p.method() != Method.RANDOMIZED) {
            tail = total > 0 ? LowRankOps.tail(spectrum, r) / Math.sqrt(total) : 0;
        }

        DMatrixRMaj b = t.u().copy(); // [out, r]
        DMatrixRMaj a = t.vt().copy(); // [r, in]
        for (int j = 0; j < r; j++) {
            double sq = Math.sqrt(t.s()[j]);
            for (int i = 0; i < out; i++) {
                b.data[i * r + j] *= sq;
            }
            for (int i = 0; i < in; i++) {
                a.data[j * in + i] *= sq;
            }
        }
        if (scale != null) {
            for (int j = 0; j < r; j++) {
                for (int i = 0; i < in; i++) {
                    a.data[j * in + i] /= scale[i];
                }
            }
        } else if (lower != null) {
            a = LowRankOps.solveLowerRight(a, lower);
        }
        DMatrixRMaj rec = LowRankOps.multiply(b, a);
        double wn = 0;
        double en = 0;
        for (int i = 0; i < w.getNumElements(); i++) {
            double d = w.data[i] - rec.data[i];
            wn += w.data[i] * w.data[i];
            en += d * d;
        }
        double rel = wn > 0 ? Math.sqrt(en / wn) : 0;
        return new Result(name, out, in, r, breakEven, note.toString(), spectrum, keptEnergy, rel, tail, ridge, a, b);
    }

    private static Result dense(
            String name,
            int out,
            int in,
            double breakEven,
            int wouldBe,
            StringBuilder note,
            double[] spectrum,
            double ridge) {
        String why = String.format(
                Locale.ROOT,
                "left dense: rank %d ≥ break-even %d·%d/(%d+%d) = %.1f",
                wouldBe,
                out,
                in,
                out,
                in,
                breakEven);
        String n = note.length() == 0 ? why : why + "; " + note;
        return new Result(name, out, in, 0, breakEven, n, spectrum, 1, 0, 0, ridge, null, null);
    }

    /** {@code max(1, ⌊P·out·in/(out + in)⌋)}: the rank whose factors hold a fraction P of the dense parameters. */
    public static int ratioRank(double ratio, int out, int in) {
        return (int) Math.max(1, Math.floor(ratio * out * in / (out + in) + 1e-9));
    }

    /** The smallest r with {@code Σ_{i<r} s_i² ≥ E·total}; −1 when the given values never reach it. */
    static int energyRank(double[] s, double total, double e) {
        if (total <= 0) {
            return 1;
        }
        double kept = 0;
        for (int i = 0; i < s.length; i++) {
            kept += s[i] * s[i];
            if (kept >= e * total * (1 - 1e-12)) {
                return i + 1;
            }
        }
        return -1;
    }
}
