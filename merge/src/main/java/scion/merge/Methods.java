package scion.merge;

import static scion.merge.MergeMethod.Param.global;
import static scion.merge.MergeMethod.Param.perModel;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Optional;
import java.util.SplittableRandom;
import scion.io.InvalidInputException;
import scion.merge.MergeMethod.BaseUse;

/**
 * The interpolation, geometric and selection methods of mergekit, each a kernel over one tensor. Conventions as in
 * mergekit (formulas in each factory's comment); {@code others} below means the models that are not the base.
 */
final class Methods {
    private Methods() {}

    private static Optional<String> need(boolean ok, String why) {
        return ok ? Optional.empty() : Optional.of(why);
    }

    /** Models other than the base; the base's listing among the models does not count. */
    private static int others(TensorMerge t) {
        return t.nonBase().length;
    }

    /**
     * SLERP between the base ({@code t = 0}) and the one other model ({@code t = 1}): with {@code v₀, v₁} the
     * flattened tensors and {@code Ω} the angle between them, {@code sin((1−t)Ω)/sin Ω · v₀ + sin(tΩ)/sin Ω · v₁};
     * plain lerp when {@code |cos Ω| > 0.9995}. Norms below {@code 1e-8} are not normalised.
     */
    static MergeMethod slerp() {
        return new SimpleMethod(
                        "slerp",
                        "spherical interpolation between the base (t=0) and one model (t=1)",
                        BaseUse.REQUIRED,
                        List.of(global("t", null, "interpolation factor (0 = base)")),
                        false,
                        (m, b) -> need(b, "slerp needs a base_model (the t = 0 end)"),
                        t -> {
                            int[] o = t.nonBase();
                            if (o.length == 0) {
                                return t.base().clone();
                            }
                            if (o.length != 1) {
                                throw InvalidInputException.of(
                                        "slerp", "merges the base with exactly one model", "1 other model", o.length);
                            }
                            return slerp(
                                    t.params().number("t"), t.base(), t.values().get(o[0]));
                        })
                .withChunks(Methods::slerpChunks);
    }

    static float[] slerp(double t, float[] v0, float[] v1) {
        float[] c = slerpCoefficients(t, MergeOps.dot(v0, v0), MergeOps.dot(v1, v1), MergeOps.dot(v0, v1));
        float[] out = new float[v0.length];
        slerpApply(c, v0, v1, out);
        return out;
    }

    /** SLERP's two float32 coefficients from the squared norms and the dot product of the flattened tensors. */
    private static float[] slerpCoefficients(double t, double n0sq, double n1sq, double dot01) {
        double n0 = Math.sqrt(n0sq);
        double n1 = Math.sqrt(n1sq);
        double s0n = n0 > 1e-8 ? n0 : 1;
        double s1n = n1 > 1e-8 ? n1 : 1;
        double dot = dot01 / (s0n * s1n);
        double a;
        double b;
        if (Math.abs(dot) > 0.9995) {
            a = 1 - t;
            b = t;
        } else {
            double theta0 = Math.acos(dot);
            double sin0 = Math.sin(theta0);
            a = Math.sin(theta0 - theta0 * t) / sin0;
            b = Math.sin(theta0 * t) / sin0;
        }
        return new float[] {(float) a, (float) b};
    }

    private static void slerpApply(float[] c, float[] v0, float[] v1, float[] out) {
        float fa = c[0];
        float fb = c[1];
        for (int i = 0; i < out.length; i++) {
            out[i] = fa * v0[i] + fb * v1[i];
        }
    }

    /** SLERP in blocks: one pass for the norms and the dot product (float64, per statistics block), then lerp. */
    private static ChunkedMerge slerpChunks(TensorSpec s) {
        int[] o = s.nonBase();
        if (o.length != 1 || !s.hasBase()) {
            return null; // the whole-tensor kernel copies the base or refuses
        }
        int other = o[0];
        double t = s.params().number("t");
        return new ChunkedMerge() {
            private final double[] sums = new double[3];
            private float[] coefficients;

            @Override
            public int passes() {
                return 1;
            }

            @Override
            public Object observe(int pass, Block b) {
                float[] v0 = b.base();
                float[] v1 = b.values().get(other);
                return new double[] {MergeOps.dot(v0, v0), MergeOps.dot(v1, v1), MergeOps.dot(v0, v1)};
            }

            @Override
            public void accept(int pass, Object partial) {
                double[] d = (double[]) partial;
                for (int i = 0; i < 3; i++) {
                    sums[i] += d[i];
                }
            }

            @Override
            public void endPass(int pass) {
                coefficients = slerpCoefficients(t, sums[0], sums[1], sums[2]);
            }

            @Override
            public float[] apply(Block b) {
                float[] out = new float[b.length()];
                slerpApply(coefficients, b.base(), b.values().get(other), out);
                return out;
            }
        };
    }

    /**
     * NuSLERP: SLERP of two models with {@code t = w₂/(w₁+w₂)} (per-model {@code weight}; 0.5 when the sum is below
     * 1e-6); with a base, of their task vectors, added back to the base. {@code nuslerp_flatten} (default true): one
     * angle for the whole tensor; else one per row ({@code nuslerp_row_wise} false) or per column (true). Colinear
     * ({@code |sin Ω| < 1e-8}) pairs are lerped.
     */
    static MergeMethod nuslerp() {
        return new SimpleMethod(
                        "nuslerp",
                        "SLERP of two models (or their task vectors) with weights, optionally row/column-wise",
                        BaseUse.OPTIONAL,
                        List.of(
                                perModel("weight", null, "the model's weight; t = w2 / (w1 + w2)"),
                                global("nuslerp_flatten", true, "one angle for the whole tensor"),
                                global("nuslerp_row_wise", false, "per column instead of per row when not flattened")),
                        false,
                        (m, b) -> Optional.empty(),
                        Methods::nuslerpKernel)
                .withChunks(Methods::nuslerpChunks);
    }

    private static float[] nuslerpKernel(TensorMerge t) {
        int[] o = t.nonBase();
        if (o.length == 1 && !t.hasBase()) {
            return t.values().get(o[0]).clone();
        }
        if (o.length != 2) {
            throw InvalidInputException.of("nuslerp", "merges exactly two models (plus an optional base)", 2, o.length);
        }
        double w0 = t.modelParams().get(o[0]).number("weight");
        double w1 = t.modelParams().get(o[1]).number("weight");
        double tt = Math.abs(w0 + w1) < 1e-6 ? 0.5 : w1 / (w0 + w1);
        float[] a = t.values().get(o[0]);
        float[] b = t.values().get(o[1]);
        if (t.hasBase()) {
            MergeOps.subInPlace(a, t.base());
            MergeOps.subInPlace(b, t.base());
        }
        boolean flatten = t.params().flag("nuslerp_flatten");
        boolean rowWise = t.params().flag("nuslerp_row_wise");
        int rows = t.rows();
        int cols = a.length / rows;
        float[] out;
        if (flatten || t.shape().length < 2) {
            out = nuslerpVec(tt, a, b, 0, 1, a.length);
        } else if (!rowWise) {
            out = new float[a.length];
            for (int r = 0; r < rows; r++) {
                float[] part = nuslerpVec(tt, a, b, r * cols, 1, cols);
                System.arraycopy(part, 0, out, r * cols, cols);
            }
        } else {
            out = new float[a.length];
            for (int c = 0; c < cols; c++) {
                float[] part = nuslerpVec(tt, a, b, c, cols, rows);
                for (int r = 0; r < rows; r++) {
                    out[r * cols + c] = part[r];
                }
            }
        }
        if (t.hasBase()) {
            float[] base = t.base();
            for (int i = 0; i < out.length; i++) {
                out[i] += base[i];
            }
        }
        return out;
    }

    /**
     * nuslerp in blocks: per row, each block alone; flattened, two passes (the two norms, then the cosine of the
     * normalised vectors, float64 per statistics block) and an element-wise apply; per column: whole tensors.
     */
    private static ChunkedMerge nuslerpChunks(TensorSpec s) {
        int[] o = s.nonBase();
        boolean flatten = s.params().flag("nuslerp_flatten") || s.shape().length < 2;
        if (o.length == 1 && !s.hasBase()
                || o.length == 2 && !flatten && !s.params().flag("nuslerp_row_wise")) {
            return b -> nuslerpKernel(s.block(b)); // a copy, or one angle per row: rows never straddle blocks
        }
        if (o.length != 2 || !flatten) {
            return null;
        }
        double w0 = s.modelParams().get(o[0]).number("weight");
        double w1 = s.modelParams().get(o[1]).number("weight");
        double tt = Math.abs(w0 + w1) < 1e-6 ? 0.5 : w1 / (w0 + w1);
        return new ChunkedMerge() {
            private double na;
            private double nb;
            private double cos;
            private double ca;
            private double cb;

            @Override
            public int passes() {
                return 2;
            }

            private float[][] pair(Block b) {
                float[] x = b.values().get(o[0]);
                float[] y = b.values().get(o[1]);
                if (s.hasBase()) {
                    MergeOps.subInPlace(x, b.base());
                    MergeOps.subInPlace(y, b.base());
                }
                return new float[][] {x, y};
            }

            @Override
            public Object observe(int pass, Block b) {
                float[][] p = pair(b);
                if (pass == 0) {
                    return new double[] {MergeOps.dot(p[0], p[0]), MergeOps.dot(p[1], p[1])};
                }
                double c = 0;
                for (int i = 0; i < p[0].length; i++) {
                    c += (p[0][i] / na) * (p[1][i] / nb);
                }
                return new double[] {c};
            }

            @Override
            public void accept(int pass, Object partial) {
                double[] d = (double[]) partial;
                if (pass == 0) {
                    na += d[0];
                    nb += d[1];
                } else {
                    cos += d[0];
                }
            }

            @Override
            public void endPass(int pass) {
                if (pass == 0) {
                    na = Math.max(Math.sqrt(na), 1e-7);
                    nb = Math.max(Math.sqrt(nb), 1e-7);
                    return;
                }
                double theta = Math.acos(Math.max(-1, Math.min(1, cos)));
                double sin = Math.sin(theta);
                if (Math.abs(sin) < 1e-8) {
                    ca = 1 - tt;
                    cb = tt;
                } else {
                    ca = Math.sin((1 - tt) * theta) / sin;
                    cb = Math.sin(tt * theta) / sin;
                }
            }

            @Override
            public float[] apply(Block b) {
                float[][] p = pair(b);
                float[] out = new float[b.length()];
                for (int i = 0; i < out.length; i++) {
                    out[i] = (float) (ca * p[0][i] + cb * p[1][i]);
                }
                if (s.hasBase()) {
                    float[] base = b.base();
                    for (int i = 0; i < out.length; i++) {
                        out[i] += base[i];
                    }
                }
                return out;
            }
        };
    }

    /** nuslerp of the strided vectors {@code a[off + k·stride]}, {@code k < n}. */
    private static float[] nuslerpVec(double t, float[] a, float[] b, int off, int stride, int n) {
        double na = 0;
        double nb = 0;
        for (int k = 0; k < n; k++) {
            int i = off + k * stride;
            na += (double) a[i] * a[i];
            nb += (double) b[i] * b[i];
        }
        na = Math.max(Math.sqrt(na), 1e-7);
        nb = Math.max(Math.sqrt(nb), 1e-7);
        double cos = 0;
        for (int k = 0; k < n; k++) {
            int i = off + k * stride;
            cos += (a[i] / na) * (b[i] / nb);
        }
        double theta = Math.acos(Math.max(-1, Math.min(1, cos)));
        double sin = Math.sin(theta);
        double ca;
        double cb;
        if (Math.abs(sin) < 1e-8) {
            ca = 1 - t;
            cb = t;
        } else {
            ca = Math.sin((1 - t) * theta) / sin;
            cb = Math.sin(t * theta) / sin;
        }
        float[] out = new float[n];
        for (int k = 0; k < n; k++) {
            int i = off + k * stride;
            out[k] = (float) (ca * a[i] + cb * b[i]);
        }
        return out;
    }

    /**
     * Multi-SLERP (barycentric interpolation on the hypersphere): with weights {@code wᵢ} (normalised to sum 1 by
     * default), unit vectors {@code uᵢ = vᵢ/(‖vᵢ‖+ε)} of the tensors (task vectors with a base), mean direction {@code
     * μ = normalize(Σ wᵢuᵢ)}, tangent {@code τ = Σ wᵢ(uᵢ − (uᵢ·μ)μ)}: result {@code (cos‖τ‖·μ + sin‖τ‖/‖τ‖·τ) · Σ
     * wᵢ‖vᵢ‖} ({@code ‖τ‖} taken {@code +ε}), plus the base. {@code ε = eps}, default 1e-8.
     */
    static MergeMethod multislerp() {
        return new SimpleMethod(
                "multislerp",
                "barycentric SLERP of any number of models on the hypersphere",
                BaseUse.OPTIONAL,
                List.of(
                        perModel("weight", null, "the model's weight"),
                        global("normalize_weights", true, "scale the weights to sum 1"),
                        global("eps", 1e-8, "numerical floor")),
                false,
                (m, b) -> Optional.empty(),
                t -> {
                    int[] o = t.nonBase();
                    if (o.length == 1) {
                        return t.values().get(o[0]).clone();
                    }
                    double eps = t.params().number("eps");
                    int n = t.numel();
                    double[] w = new double[o.length];
                    double ws = 0;
                    for (int k = 0; k < o.length; k++) {
                        w[k] = t.modelParams().get(o[k]).number("weight");
                        ws += w[k];
                    }
                    if (t.params().flag("normalize_weights")) {
                        for (int k = 0; k < o.length; k++) {
                            w[k] /= ws;
                        }
                    }
                    double[] norms = new double[o.length];
                    List<float[]> v = new ArrayList<>();
                    for (int k = 0; k < o.length; k++) {
                        float[] x = t.values().get(o[k]);
                        if (t.hasBase()) {
                            MergeOps.subInPlace(x, t.base());
                        }
                        norms[k] = MergeOps.norm(x);
                        v.add(x);
                    }
                    double[] mean = new double[n];
                    for (int k = 0; k < o.length; k++) {
                        double s = w[k] / (norms[k] + eps);
                        float[] x = v.get(k);
                        for (int i = 0; i < n; i++) {
                            mean[i] += s * x[i];
                        }
                    }
                    double mn = 0;
                    for (double x : mean) {
                        mn += x * x;
                    }
                    mn = Math.sqrt(mn);
                    if (mn < eps) {
                        if (o.length == 2) {
                            float[] res = new float[n];
                            for (int i = 0; i < n; i++) {
                                res[i] = (float)
                                        (v.get(0)[i] * w[0] + v.get(1)[i] * w[1] + (t.hasBase() ? t.base()[i] : 0));
                            }
                            return res;
                        }
                        throw InvalidInputException.of(
                                "multislerp: tensor '" + t.name() + "'",
                                "the weighted sum of the unit tensors is zero (antipodal inputs)",
                                "weights that do not cancel",
                                "norm " + mn);
                    }
                    for (int i = 0; i < n; i++) {
                        mean[i] /= mn;
                    }
                    double[] tangent = new double[n];
                    for (int k = 0; k < o.length; k++) {
                        float[] x = v.get(k);
                        double inv = 1 / (norms[k] + eps);
                        double d = 0;
                        for (int i = 0; i < n; i++) {
                            d += x[i] * inv * mean[i];
                        }
                        for (int i = 0; i < n; i++) {
                            tangent[i] += w[k] * (x[i] * inv - d * mean[i]);
                        }
                    }
                    double tn = 0;
                    for (double x : tangent) {
                        tn += x * x;
                    }
                    tn = Math.sqrt(tn) + eps;
                    double avgNorm = 0;
                    for (int k = 0; k < o.length; k++) {
                        avgNorm += norms[k] * w[k];
                    }
                    float[] out = new float[n];
                    double c = Math.cos(tn);
                    double s = Math.sin(tn) / tn;
                    for (int i = 0; i < n; i++) {
                        out[i] = (float) ((mean[i] * c + tangent[i] * s) * avgNorm + (t.hasBase() ? t.base()[i] : 0));
                    }
                    return out;
                });
    }

    /**
     * Karcher (Riemannian) mean on the unit sphere with equal weights: directions {@code uᵢ = vᵢ/‖vᵢ‖} (tensors of norm
     * ≤ tol left out), start at the normalised mean, then up to {@code max_iter} (10) steps {@code μ ← cos‖g‖·μ +
     * sin‖g‖·g/‖g‖} with {@code g = Σ αᵢ θᵢ/sin θᵢ (uᵢ − cos θᵢ μ)}, stopping when {@code ‖g‖ < tol} (1e-5); scaled by
     * {@code Σ ‖vᵢ‖/N}. Every listed model takes part, and so does an unlisted {@code base_model} (as in mergekit, see {@link MergePlan}).
     */
    static MergeMethod karcher() {
        return new SimpleMethod(
                        "karcher",
                        "Karcher (Riemannian) mean of the models on the hypersphere",
                        BaseUse.UNUSED,
                        List.of(global("max_iter", 10.0, "iterations"), global("tol", 1e-5, "convergence tolerance")),
                        false,
                        (m, b) -> need(m >= 1, "karcher needs at least one model"),
                        t -> {
                            int m = t.models();
                            if (m == 1) {
                                return t.values().get(0).clone();
                            }
                            int maxIter = (int) t.params().number("max_iter");
                            double tol = t.params().number("tol");
                            int n = t.numel();
                            double[] norms = new double[m];
                            List<Integer> valid = new ArrayList<>();
                            for (int k = 0; k < m; k++) {
                                norms[k] = MergeOps.norm(t.values().get(k));
                                if (norms[k] > tol) {
                                    valid.add(k);
                                }
                            }
                            if (valid.isEmpty()) {
                                return new float[n];
                            }
                            double alpha = 1.0 / valid.size();
                            double[][] u = new double[valid.size()][];
                            for (int j = 0; j < valid.size(); j++) {
                                float[] x = t.values().get(valid.get(j));
                                double inv = 1 / norms[valid.get(j)];
                                u[j] = new double[n];
                                for (int i = 0; i < n; i++) {
                                    u[j][i] = x[i] * inv;
                                }
                            }
                            double[] mean = new double[n];
                            for (double[] uj : u) {
                                for (int i = 0; i < n; i++) {
                                    mean[i] += alpha * uj[i];
                                }
                            }
                            double mn = Math.sqrt(dot(mean, mean));
                            if (mn < tol) {
                                mean = u[0].clone();
                            } else {
                                for (int i = 0; i < n; i++) {
                                    mean[i] /= mn;
                                }
                            }
                            for (int it = 0; it < maxIter; it++) {
                                double[] g = new double[n];
                                for (double[] uj : u) {
                                    double d = Math.max(-1, Math.min(1, dot(mean, uj)));
                                    double theta = Math.acos(d);
                                    if (theta < tol) {
                                        continue;
                                    }
                                    double s = alpha * theta / Math.sin(theta);
                                    for (int i = 0; i < n; i++) {
                                        g[i] += s * (uj[i] - d * mean[i]);
                                    }
                                }
                                double gn = Math.sqrt(dot(g, g));
                                if (gn < tol) {
                                    break;
                                }
                                double c = Math.cos(gn);
                                double s = Math.sin(gn) / gn;
                                for (int i = 0; i < n; i++) {
                                    mean[i] = c * mean[i] + s * g[i];
                                }
                                double un = Math.sqrt(dot(mean, mean));
                                if (un > tol) {
                                    for (int i = 0; i < n; i++) {
                                        mean[i] /= un;
                                    }
                                }
                            }
                            double scale = 0;
                            for (int k = 0; k < m; k++) {
                                scale += norms[k] / m;
                            }
                            float[] out = new float[n];
                            for (int i = 0; i < n; i++) {
                                out[i] = (float) (scale * mean[i]);
                            }
                            return out;
                        })
                .withChunks(Methods::karcherChunks);
    }

    /**
     * Karcher in blocks. The mean stays in the span of the unit inputs {@code uⱼ}, so it is kept as coefficients
     * {@code μ = Σ aⱼuⱼ}: one pass computes the Gram matrix of the inputs (float64 per statistics block), every
     * iteration runs on {@code m} coefficients ({@code μ·uⱼ = (G a)ⱼ}, {@code ‖μ‖² = aᵀGa}, {@code g = Σ sⱼuⱼ − (Σ
     * sⱼdⱼ)μ}), and the apply pass writes {@code scale · Σ aⱼ vⱼ/‖vⱼ‖} element by element. Same iterations as the
     * whole-tensor kernel, in exact arithmetic; rounding differs.
     */
    private static ChunkedMerge karcherChunks(TensorSpec s) {
        int m = s.models();
        if (m < 2) {
            return null; // a copy
        }
        int maxIter = (int) s.params().number("max_iter");
        double tol = s.params().number("tol");
        return new ChunkedMerge() {
            private final double[][] gram = new double[m][m];
            private final double[] coef = new double[m]; // output = Σ coef_k v_k

            @Override
            public int passes() {
                return 1;
            }

            @Override
            public Object observe(int pass, Block b) {
                double[][] g = new double[m][m];
                for (int i = 0; i < m; i++) {
                    for (int j = i; j < m; j++) {
                        g[i][j] = MergeOps.dot(b.values().get(i), b.values().get(j));
                    }
                }
                return g;
            }

            @Override
            public void accept(int pass, Object partial) {
                double[][] g = (double[][]) partial;
                for (int i = 0; i < m; i++) {
                    for (int j = i; j < m; j++) {
                        gram[i][j] += g[i][j];
                    }
                }
            }

            @Override
            public void endPass(int pass) {
                double[] norms = new double[m];
                List<Integer> valid = new ArrayList<>();
                for (int k = 0; k < m; k++) {
                    norms[k] = Math.sqrt(gram[k][k]);
                    if (norms[k] > tol) {
                        valid.add(k);
                    }
                }
                int v = valid.size();
                if (v == 0) {
                    return; // all zero
                }
                double[][] g = new double[v][v]; // Gram matrix of the unit vectors
                for (int i = 0; i < v; i++) {
                    for (int j = 0; j < v; j++) {
                        int a = Math.min(valid.get(i), valid.get(j));
                        int b = Math.max(valid.get(i), valid.get(j));
                        g[i][j] = gram[a][b] / (norms[valid.get(i)] * norms[valid.get(j)]);
                    }
                }
                double alpha = 1.0 / v;
                double[] a = new double[v];
                java.util.Arrays.fill(a, alpha);
                double mn = Math.sqrt(quad(g, a, a));
                if (mn < tol) {
                    java.util.Arrays.fill(a, 0);
                    a[0] = 1;
                } else {
                    scale(a, 1 / mn);
                }
                for (int it = 0; it < maxIter; it++) {
                    double[] ga = times(g, a); // (μ · uⱼ)ⱼ
                    double[] gc = new double[v];
                    double sd = 0;
                    for (int j = 0; j < v; j++) {
                        double d = Math.max(-1, Math.min(1, ga[j]));
                        double theta = Math.acos(d);
                        if (theta < tol) {
                            continue;
                        }
                        double sj = alpha * theta / Math.sin(theta);
                        gc[j] += sj;
                        sd += sj * d;
                    }
                    for (int j = 0; j < v; j++) {
                        gc[j] -= sd * a[j];
                    }
                    double gn = Math.sqrt(Math.max(0, quad(g, gc, gc)));
                    if (gn < tol) {
                        break;
                    }
                    double c = Math.cos(gn);
                    double sn = Math.sin(gn) / gn;
                    for (int j = 0; j < v; j++) {
                        a[j] = c * a[j] + sn * gc[j];
                    }
                    double un = Math.sqrt(Math.max(0, quad(g, a, a)));
                    if (un > tol) {
                        scale(a, 1 / un);
                    }
                }
                double sc = 0;
                for (int k = 0; k < m; k++) {
                    sc += norms[k] / m;
                }
                for (int j = 0; j < v; j++) {
                    coef[valid.get(j)] = sc * a[j] / norms[valid.get(j)];
                }
            }

            @Override
            public float[] apply(Block b) {
                float[] out = new float[b.length()];
                for (int i = 0; i < out.length; i++) {
                    double x = 0;
                    for (int k = 0; k < m; k++) {
                        x += coef[k] * b.values().get(k)[i];
                    }
                    out[i] = (float) x;
                }
                return out;
            }
        };
    }

    private static double quad(double[][] g, double[] x, double[] y) {
        double s = 0;
        for (int i = 0; i < x.length; i++) {
            for (int j = 0; j < y.length; j++) {
                s += x[i] * g[i][j] * y[j];
            }
        }
        return s;
    }

    private static double[] times(double[][] g, double[] x) {
        double[] r = new double[x.length];
        for (int i = 0; i < x.length; i++) {
            for (int j = 0; j < x.length; j++) {
                r[i] += g[i][j] * x[j];
            }
        }
        return r;
    }

    private static void scale(double[] x, double f) {
        for (int i = 0; i < x.length; i++) {
            x[i] *= f;
        }
    }

    private static double dot(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) {
            s += a[i] * b[i];
        }
        return s;
    }

    /**
     * Model Stock (Jang et al. 2024): with {@code N ≥ 2} fine-tuned models {@code wᵢ} and the base {@code w₀},
     * {@code cos θ} the mean pairwise cosine between the offsets {@code wᵢ − w₀} (norm product clamped at 1e-6),
     * {@code t = N cos θ / (1 + (N−1) cos θ)} and the result {@code t · mean(wᵢ) + (1 − t) · w₀}; whole tensor, or per
     * row with {@code filter_wise}.
     */
    static MergeMethod modelStock() {
        return new SimpleMethod(
                        "model_stock",
                        "Model Stock: average pulled toward the base by the angle between task vectors",
                        BaseUse.REQUIRED,
                        List.of(global("filter_wise", false, "one angle per row instead of per tensor")),
                        false,
                        (m, b) -> need(b, "model_stock needs a base_model"),
                        Methods::modelStockKernel)
                .withChunks(Methods::modelStockChunks);
    }

    private static float[] modelStockKernel(TensorMerge t) {
        int[] o = t.nonBase();
        if (o.length < 2) {
            throw InvalidInputException.of(
                    "model_stock", "needs at least two models besides the base", "≥ 2", o.length);
        }
        float[] w0 = t.base();
        int n = w0.length;
        boolean rowsMode = t.params().flag("filter_wise") && t.shape().length >= 1;
        int rows = rowsMode ? t.rows() : 1;
        int cols = n / rows;
        int nm = o.length;
        float[] out = new float[n];
        for (int r = 0; r < rows; r++) {
            int off = r * cols;
            double cosSum = 0;
            int pairs = 0;
            for (int i = 0; i < nm; i++) {
                for (int j = i + 1; j < nm; j++) {
                    float[] a = t.values().get(o[i]);
                    float[] b = t.values().get(o[j]);
                    double ab = 0;
                    double aa = 0;
                    double bb = 0;
                    for (int k = off; k < off + cols; k++) {
                        double da = a[k] - w0[k];
                        double db = b[k] - w0[k];
                        ab += da * db;
                        aa += da * da;
                        bb += db * db;
                    }
                    double c = ab / Math.max(Math.sqrt(aa) * Math.sqrt(bb), 1e-6);
                    cosSum += Math.max(-1, Math.min(1, c));
                    pairs++;
                }
            }
            double cos = cosSum / pairs;
            double tt = nm * cos / (1 + (nm - 1) * cos);
            for (int k = off; k < off + cols; k++) {
                double avg = 0;
                for (int i = 0; i < nm; i++) {
                    avg += t.values().get(o[i])[k];
                }
                avg /= nm;
                out[k] = (float) (tt * avg + (1 - tt) * w0[k]);
            }
        }
        return out;
    }

    /**
     * Model Stock in blocks: per row ({@code filter_wise}), each block alone; per tensor, one pass for every pair's dot
     * product and squared norms of the offsets (float64 per statistics block), then an element-wise apply.
     */
    private static ChunkedMerge modelStockChunks(TensorSpec s) {
        int[] o = s.nonBase();
        if (o.length < 2 || !s.hasBase()) {
            return null; // refused by the kernel
        }
        if (s.params().flag("filter_wise") && s.shape().length >= 2) {
            return b -> modelStockKernel(s.block(b));
        }
        int nm = o.length;
        int pairs = nm * (nm - 1) / 2;
        return new ChunkedMerge() {
            private final double[] sums = new double[3 * pairs];
            private double tt;

            @Override
            public int passes() {
                return 1;
            }

            @Override
            public Object observe(int pass, Block b) {
                double[] p = new double[3 * pairs];
                float[] w0 = b.base();
                int q = 0;
                for (int i = 0; i < nm; i++) {
                    for (int j = i + 1; j < nm; j++) {
                        float[] x = b.values().get(o[i]);
                        float[] y = b.values().get(o[j]);
                        for (int k = 0; k < w0.length; k++) {
                            double da = x[k] - w0[k];
                            double db = y[k] - w0[k];
                            p[q] += da * db;
                            p[q + 1] += da * da;
                            p[q + 2] += db * db;
                        }
                        q += 3;
                    }
                }
                return p;
            }

            @Override
            public void accept(int pass, Object partial) {
                double[] p = (double[]) partial;
                for (int i = 0; i < p.length; i++) {
                    sums[i] += p[i];
                }
            }

            @Override
            public void endPass(int pass) {
                double cosSum = 0;
                for (int q = 0; q < sums.length; q += 3) {
                    double c = sums[q] / Math.max(Math.sqrt(sums[q + 1]) * Math.sqrt(sums[q + 2]), 1e-6);
                    cosSum += Math.max(-1, Math.min(1, c));
                }
                double cos = cosSum / pairs;
                tt = nm * cos / (1 + (nm - 1) * cos);
            }

            @Override
            public float[] apply(Block b) {
                float[] w0 = b.base();
                float[] out = new float[w0.length];
                for (int k = 0; k < out.length; k++) {
                    double avg = 0;
                    for (int i = 0; i < nm; i++) {
                        avg += b.values().get(o[i])[k];
                    }
                    avg /= nm;
                    out[k] = (float) (tt * avg + (1 - tt) * w0[k]);
                }
                return out;
            }
        };
    }

    /**
     * NearSwap: per element, {@code λ = clamp(t / |v₀ − v₁|, 0, 1)} (1 where the difference is 0), result {@code λ v₁
     * + (1 − λ) v₀} with {@code v₀} the base: elements closer than {@code t} take the other model's value.
     */
    static MergeMethod nearswap() {
        return new SimpleMethod(
                        "nearswap",
                        "take the other model's value where it is within t of the base",
                        BaseUse.REQUIRED,
                        List.of(global("t", null, "sameness threshold (> 0)")),
                        false,
                        (m, b) -> need(b, "nearswap needs a base_model"),
                        t -> {
                            int[] o = t.nonBase();
                            if (o.length == 0) {
                                return t.base().clone();
                            }
                            if (o.length != 1) {
                                throw InvalidInputException.of(
                                        "nearswap", "merges the base with one model", 1, o.length);
                            }
                            double th = t.params().number("t");
                            if (th <= 0) {
                                throw InvalidInputException.of("parameter 't'", "nearswap threshold", "t > 0", th);
                            }
                            float[] v0 = t.base();
                            float[] v1 = t.values().get(o[0]);
                            float tf = (float) th;
                            float[] out = new float[v0.length];
                            for (int i = 0; i < out.length; i++) {
                                float l = tf / Math.abs(v0[i] - v1[i]);
                                if (Float.isNaN(l) || Float.isInfinite(l)) {
                                    l = 1f;
                                }
                                l = Math.max(0f, Math.min(1f, l));
                                out[i] = l * v1[i] + (1 - l) * v0[i];
                            }
                            return out;
                        })
                .elementwise();
    }

    /**
     * Arcee Fusion: importance {@code |p − b| · KL(softmax(p) ‖ softmax(b))} (softmax and KL over each row's last
     * axis, {@code +1e-8}), threshold {@code median + 1.5·(q₃ − q₁)} of the importances (quantile {@code q} = the
     * {@code ⌊q(n−1)⌋}-th smallest; above 10⁶ elements, of 10⁶ seeded samples as mergekit does); result {@code b + (p −
     * b)·[importance ≥ threshold]}.
     */
    static MergeMethod arceeFusion() {
        return new SimpleMethod(
                "arcee_fusion",
                "keep the other model's changes only where they matter most (KL-weighted outliers)",
                BaseUse.REQUIRED,
                List.of(),
                true,
                (m, b) -> need(b, "arcee_fusion needs a base_model"),
                t -> {
                    int[] o = t.nonBase();
                    if (o.length != 1) {
                        throw InvalidInputException.of(
                                "arcee_fusion", "merges the base with exactly one model", 1, o.length);
                    }
                    float[] b = t.base();
                    float[] p = t.values().get(o[0]);
                    int n = b.length;
                    int cols = t.shape().length == 0 ? 1 : Math.toIntExact(t.shape()[t.shape().length - 1]);
                    int rows = n / cols;
                    float[] imp = new float[n];
                    for (int r = 0; r < rows; r++) {
                        int off = r * cols;
                        double kl = rowKl(p, b, off, cols);
                        for (int k = off; k < off + cols; k++) {
                            imp[k] = (float) (Math.abs(p[k] - b[k]) * kl);
                        }
                    }
                    float[] sample;
                    if (n > 1_000_000) {
                        SplittableRandom rng = new SplittableRandom(t.seed());
                        sample = new float[1_000_000];
                        for (int i = 0; i < sample.length; i++) {
                            sample[i] = imp[rng.nextInt(n)];
                        }
                    } else {
                        sample = imp.clone();
                    }
                    Arrays.sort(sample);
                    int last = sample.length - 1;
                    float q1 = sample[(int) (0.25f * last)];
                    float med = sample[(int) (0.5f * last)];
                    float q3 = sample[(int) (0.75f * last)];
                    float th = med + 1.5f * (q3 - q1);
                    float[] out = new float[n];
                    for (int i = 0; i < n; i++) {
                        out[i] = imp[i] >= th ? b[i] + (p[i] - b[i]) : b[i];
                    }
                    return out;
                });
    }

    private static double rowKl(float[] p, float[] q, int off, int n) {
        double mp = Double.NEGATIVE_INFINITY;
        double mq = Double.NEGATIVE_INFINITY;
        for (int k = off; k < off + n; k++) {
            mp = Math.max(mp, p[k]);
            mq = Math.max(mq, q[k]);
        }
        double zp = 0;
        double zq = 0;
        for (int k = off; k < off + n; k++) {
            zp += Math.exp(p[k] - mp);
            zq += Math.exp(q[k] - mq);
        }
        double kl = 0;
        for (int k = off; k < off + n; k++) {
            double pp = Math.exp(p[k] - mp) / zp + 1e-8;
            double qq = Math.exp(q[k] - mq) / zq + 1e-8;
            kl += pp * Math.log(pp / qq);
        }
        return kl;
    }

    /**
     * RAM (reinforced agent merging): task vectors {@code δᵢ}, element counted as contributed by model {@code i} when
     * {@code |δᵢ| > epsilon} (1e-5); an element contributed by one model takes its delta, by several the mean of
     * theirs; result {@code base + that}.
     */
    static MergeMethod ram() {
        return new SimpleMethod(
                        "ram",
                        "RAM: unique task-vector entries kept whole, shared ones averaged",
                        BaseUse.REQUIRED,
                        List.of(global("epsilon", 1e-5, "|delta| above which a model contributes")),
                        false,
                        (m, b) -> need(b, "ram needs a base_model"),
                        t -> {
                            int[] o = t.nonBase();
                            float[] base = t.base();
                            float eps = (float) t.params().number("epsilon");
                            int n = base.length;
                            float[] out = new float[n];
                            for (int i = 0; i < n; i++) {
                                float sum = 0;
                                int count = 0;
                                for (int k : o) {
                                    float d = t.values().get(k)[i] - base[i];
                                    if (Math.abs(d) > eps) {
                                        sum += d;
                                        count++;
                                    }
                                }
                                out[i] = base[i] + (count > 1 ? sum / count : sum);
                            }
                            return out;
                        })
                .elementwise();
    }

    /**
     * SCE (select, calculate, erase; Wan et al. 2024): task vectors {@code δᵢ}; with {@code select_topk < 1}, keep only
     * the {@code ⌊k·z⌋} elements of largest variance across models ({@code z} = elements of non-zero variance);
     * per-model weights {@code ‖δᵢ‖²/n} normalised to sum 1; erase elements whose sign differs from that of {@code Σδ};
     * result {@code base + Σ wᵢmᵢδᵢ / Σ wᵢmᵢ} (zero divisor reads 1).
     */
    static MergeMethod sce() {
        return new SimpleMethod(
                        "sce",
                        "SCE: variance-selected, energy-weighted, sign-erased task vectors",
                        BaseUse.REQUIRED,
                        List.of(
                                global("select_topk", 1.0, "fraction of highest-variance elements kept"),
                                global("int8_mask", false, "accepted; no effect on values")),
                        false,
                        (m, b) -> need(b, "sce needs a base_model"),
                        t -> {
                            int[] o = t.nonBase();
                            float[] base = t.base();
                            int n = base.length;
                            if (o.length == 0) {
                                return base.clone();
                            }
                            List<float[]> d = new ArrayList<>();
                            for (int k : o) {
                                float[] x = t.values().get(k);
                                MergeOps.subInPlace(x, base);
                                d.add(x);
                            }
                            double topk = t.params().number("select_topk");
                            if (topk < 1) {
                                float[] var = new float[n];
                                int nonzero = 0;
                                for (int i = 0; i < n; i++) {
                                    double mean = 0;
                                    for (float[] x : d) {
                                        mean += x[i];
                                    }
                                    mean /= d.size();
                                    double v = 0;
                                    for (float[] x : d) {
                                        v += (x[i] - mean) * (x[i] - mean);
                                    }
                                    var[i] = (float) (v / d.size());
                                    if (var[i] != 0) {
                                        nonzero++;
                                    }
                                }
                                int k = (int) (Math.abs(topk) * nonzero);
                                float[] keep = var.clone();
                                MergeOps.keepMagnitudeRanks(keep, n - k, n);
                                for (int i = 0; i < n; i++) {
                                    if (keep[i] == 0 || k == 0) {
                                        for (float[] x : d) {
                                            x[i] = 0;
                                        }
                                    }
                                }
                            }
                            double[] w = new double[d.size()];
                            double ws = 0;
                            for (int k = 0; k < d.size(); k++) {
                                w[k] = MergeOps.dot(d.get(k), d.get(k)) / n;
                                ws += w[k];
                            }
                            for (int k = 0; k < d.size(); k++) {
                                w[k] = ws == 0 ? 1.0 / d.size() : w[k] / ws;
                            }
                            float[] out = new float[n];
                            for (int i = 0; i < n; i++) {
                                float s = 0;
                                for (float[] x : d) {
                                    s += x[i];
                                }
                                float maj = s >= 0 ? 1f : -1f;
                                double mixed = 0;
                                double div = 0;
                                for (int k = 0; k < d.size(); k++) {
                                    float v = d.get(k)[i];
                                    if (Math.signum(v) == maj) {
                                        mixed += w[k] * v;
                                        div += w[k];
                                    }
                                }
                                out[i] = (float) (base[i] + mixed / (div == 0 ? 1 : div));
                            }
                            return out;
                        })
                .withChunks(Methods::sceChunks);
    }

    /**
     * SCE in blocks: with {@code select_topk < 1}, the variance bound is found exactly over the whole tensor ({@link
     * RankSelect} on the per-element variances, after a count of the non-zero ones), then one pass sums each task
     * vector's energy after the selection, then an element-wise apply.
     */
    private static ChunkedMerge sceChunks(TensorSpec s) {
        int[] o = s.nonBase();
        if (o.length == 0 || !s.hasBase()) {
            return null; // a copy of the base
        }
        double topk = s.params().number("select_topk");
        boolean selecting = topk < 1;
        long n = s.numel();
        int m = o.length;
        RankSelect select = new RankSelect(n, 0, n);
        int high = 0;
        int low = 1;
        int equal = 2;
        int energy = 3;
        int[] passes = selecting ? new int[] {high, low, equal, energy} : new int[] {energy};
        return new ChunkedMerge() {
            private long nonzero;
            private long k;
            private final double[] energies = new double[m];
            private double[] w;

            @Override
            public int passes() {
                return passes.length;
            }

            @Override
            public boolean skip(int pass) {
                return passes[pass] == equal && !select.needsEqualCounts()
                        || passes[pass] != high && passes[pass] != energy && k == 0;
            }

            /** The task vectors of the block, with the variance selection applied when {@code selected}. */
            private float[][] deltas(Block b, boolean selected) {
                float[][] d = new float[m][];
                for (int j = 0; j < m; j++) {
                    d[j] = b.values().get(o[j]);
                    MergeOps.subInPlace(d[j], b.base());
                }
                if (selected && selecting) {
                    float[] var = variance(d);
                    if (k > 0) {
                        select.keep(var, b.start());
                    }
                    for (int i = 0; i < var.length; i++) {
                        if (var[i] == 0 || k == 0) {
                            for (float[] x : d) {
                                x[i] = 0;
                            }
                        }
                    }
                }
                return d;
            }

            private float[] variance(float[][] d) {
                float[] var = new float[d[0].length];
                for (int i = 0; i < var.length; i++) {
                    double mean = 0;
                    for (float[] x : d) {
                        mean += x[i];
                    }
                    mean /= m;
                    double v = 0;
                    for (float[] x : d) {
                        v += (x[i] - mean) * (x[i] - mean);
                    }
                    var[i] = (float) (v / m);
                }
                return var;
            }

            @Override
            public Object observe(int pass, Block b) {
                int p = passes[pass];
                if (p == energy) {
                    float[][] d = deltas(b, true);
                    double[] e = new double[m];
                    for (int j = 0; j < m; j++) {
                        e[j] = MergeOps.dot(d[j], d[j]);
                    }
                    return e;
                }
                float[] var = variance(deltas(b, false));
                if (p == high) {
                    long nz = 0;
                    for (float v : var) {
                        if (v != 0) {
                            nz++;
                        }
                    }
                    return new Object[] {RankSelect.highPartial(var), nz};
                }
                return p == low ? select.lowPartial(var) : new Object[] {b.start(), select.equalPartial(var)};
            }

            @Override
            public void accept(int pass, Object partial) {
                int p = passes[pass];
                if (p == high) {
                    select.addHigh((int[]) ((Object[]) partial)[0]);
                    nonzero += (Long) ((Object[]) partial)[1];
                } else if (p == low) {
                    select.addLow((int[][]) partial);
                } else if (p == equal) {
                    select.addEqual((Long) ((Object[]) partial)[0], (long[]) ((Object[]) partial)[1]);
                } else {
                    double[] e = (double[]) partial;
                    for (int j = 0; j < m; j++) {
                        energies[j] += e[j];
                    }
                }
            }

            @Override
            public void endPass(int pass) {
                int p = passes[pass];
                if (p == high) {
                    k = (long) (Math.abs(topk) * nonzero);
                    select.ranks(n - k, n);
                    if (k > 0) {
                        select.endHigh();
                    }
                } else if (p == low) {
                    select.endLow();
                } else if (p == energy) {
                    w = new double[m];
                    double ws = 0;
                    for (int j = 0; j < m; j++) {
                        w[j] = energies[j] / n;
                        ws += w[j];
                    }
                    for (int j = 0; j < m; j++) {
                        w[j] = ws == 0 ? 1.0 / m : w[j] / ws;
                    }
                }
            }

            @Override
            public float[] apply(Block b) {
                float[][] d = deltas(b, true);
                float[] base = b.base();
                float[] out = new float[base.length];
                for (int i = 0; i < out.length; i++) {
                    float sum = 0;
                    for (float[] x : d) {
                        sum += x[i];
                    }
                    float maj = sum >= 0 ? 1f : -1f;
                    double mixed = 0;
                    double div = 0;
                    for (int j = 0; j < m; j++) {
                        float v = d[j][i];
                        if (Math.signum(v) == maj) {
                            mixed += w[j] * v;
                            div += w[j];
                        }
                    }
                    out[i] = (float) (base[i] + mixed / (div == 0 ? 1 : div));
                }
                return out;
            }
        };
    }

    /** Passthrough: the single source tensor, times its optional {@code scale}. Frankenmerges use it per slice. */
    static MergeMethod passthrough() {
        return new SimpleMethod(
                        "passthrough",
                        "copy one model's tensors (frankenmerges with slices)",
                        BaseUse.UNUSED,
                        List.of(perModel("scale", 1.0, "multiplies the tensor")),
                        false,
                        (m, b) -> need(m == 1, "passthrough takes exactly one model per slice"),
                        t -> {
                            if (t.models() != 1) {
                                throw InvalidInputException.of(
                                        "passthrough: tensor '" + t.name() + "'", "takes one source", 1, t.models());
                            }
                            float[] v = t.values().get(0);
                            float s = (float) t.modelParams().get(0).number("scale");
                            if (s != 1f) {
                                for (int i = 0; i < v.length; i++) {
                                    v[i] *= s;
                                }
                            }
                            return v;
                        })
                .elementwise();
    }
}
