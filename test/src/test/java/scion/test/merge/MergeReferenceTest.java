package scion.test.merge;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.Function;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.Model;
import scion.io.tensor.Tensor;
import scion.test.Fixtures;
import scion.test.cli.CliRun;

/**
 * Every deterministic merge method, run through {@code scion merge} on the transformers-generated llama fixture and
 * three fine-tuned-like variants of it ({@code test/fixtures/generate_merge_fixtures.py}), against an independent
 * float64 recomputation of mergekit's formula written here from the method's definition (not from the code under
 * test). The largest absolute difference over all 21 tensors is printed and must stay below 1e-5: the output is
 * float32 (merged in float32 and stored), the tensors' values are below 1.1 in magnitude, so float32 rounding of the
 * result and of the float32 arithmetic gives differences of a few 1e-7; a wrong formula gives 1e-3 and more (the
 * task vectors are ~1e-3).
 *
 * <p>Selections (top-k magnitudes, variance, quantiles) rank the float32 task vectors {@code (float) (a − b)}, the
 * values the method is defined on for float32 checkpoints; everything else is float64.
 */
class MergeReferenceTest {
    static final double TOL = 1e-5;

    @TempDir
    static Path tmp;

    static Path base;
    static Path ft1;
    static Path ft2;
    static Path ft3;
    static Map<String, float[]> B;
    static Map<String, float[]> A1;
    static Map<String, float[]> A2;
    static Map<String, float[]> A3;
    static final Map<String, Double> REPORT = new LinkedHashMap<>();

    @BeforeAll
    static void load() {
        base = Fixtures.hf("llama");
        ft1 = Fixtures.resource("merge/llama-ft1");
        ft2 = Fixtures.resource("merge/llama-ft2");
        ft3 = Fixtures.resource("merge/llama-ft3");
        B = read(base);
        A1 = read(ft1);
        A2 = read(ft2);
        A3 = read(ft3);
    }

    @AfterAll
    static void report() {
        System.out.println("merge method vs float64 reference, max |diff| over all tensors:");
        REPORT.forEach((k, v) -> System.out.printf(Locale.ROOT, "  %-34s %.3g%n", k, v));
    }

    static Map<String, float[]> read(Path p) {
        Map<String, float[]> m = new LinkedHashMap<>();
        try (Model model = Model.open(p)) {
            for (Tensor t : model.checkpoint().tensors()) {
                m.put(t.name(), t.toFloats());
            }
        }
        return m;
    }

    static Map<String, float[]> merge(String name, String... args) {
        Path out = tmp.resolve(name);
        List<String> a = new ArrayList<>(List.of("merge"));
        a.addAll(Arrays.asList(args));
        a.add(out.toString());
        CliRun r = CliRun.of(a.toArray(new String[0]));
        assertEquals(0, r.code(), r.toString());
        return read(out);
    }

    /** Compares every tensor of {@code got} with {@code ref(name)}; records and checks the max abs diff. */
    static void check(String label, Map<String, float[]> got, Function<String, double[]> ref) {
        assertEquals(B.keySet(), got.keySet(), label + ": tensor names");
        double max = 0;
        for (String n : got.keySet()) {
            double[] e = ref.apply(n);
            float[] g = got.get(n);
            assertEquals(e.length, g.length, n);
            for (int i = 0; i < g.length; i++) {
                max = Math.max(max, Math.abs(g[i] - e[i]));
            }
        }
        REPORT.put(label, max);
        assertTrue(max < TOL, label + ": max |diff| " + max + " vs float64 reference");
    }

    static double[] d(float[] a) {
        double[] r = new double[a.length];
        for (int i = 0; i < a.length; i++) {
            r[i] = a[i];
        }
        return r;
    }

    static String s(Path p) {
        return p.toString();
    }

    static int rows(String name, int n) {
        try (Model m = Model.open(base)) {
            long[] sh = m.checkpoint().find(name).orElseThrow().shape();
            return sh.length < 2 ? 1 : (int) sh[0];
        }
    }

    // ---------------------------------------------------------------- linear family

    /**
     * mergekit adds a {@code base_model} missing from {@code models} as one more model with the top-level parameters:
     * with {@code weight: 0.5} at the top, (0.2·ft1 + 0.3·ft2 + 0.5·base) / 1.0. A base also listed among the models
     * counts once: {@code --base ft1 ft1 ft2} is (ft1 + ft2) / 2.
     */
    @Test
    void linearWithABaseTakesTheBaseAsAModel() {
        Path cfg = yaml(
                "linear-base.yml",
                "merge_method: linear\nbase_model: " + base + "\nparameters: {weight: 0.5}\nmodels:\n"
                        + "  - model: " + ft1 + "\n    parameters: {weight: 0.2}\n"
                        + "  - model: " + ft2 + "\n    parameters: {weight: 0.3}\n");
        check("linear (0.2, 0.3) + base 0.5", merge("linear-base", s(cfg)), n -> {
            double[] r = new double[B.get(n).length];
            for (int i = 0; i < r.length; i++) {
                r[i] = (0.2 * A1.get(n)[i] + 0.3 * A2.get(n)[i] + 0.5 * B.get(n)[i]) / 1.0;
            }
            return r;
        });
        check(
                "linear, base listed once",
                merge("linear-listed", "--method", "linear", "--base", s(ft1), s(ft1), s(ft2)),
                n -> {
                    double[] r = new double[B.get(n).length];
                    for (int i = 0; i < r.length; i++) {
                        r[i] = (A1.get(n)[i] + (double) A2.get(n)[i]) / 2;
                    }
                    return r;
                });
        // without a top-level weight the base has none: refused, saying why
        Path bad = yaml(
                "linear-base-noweight.yml",
                "merge_method: linear\nbase_model: " + base + "\nmodels:\n" + "  - model: " + ft1
                        + "\n    parameters: {weight: 0.2}\n");
        CliRun r = CliRun.of("merge", s(bad), tmp.resolve("linear-bad").toString());
        assertEquals(3, r.code(), r.toString());
        assertTrue(
                r.err().contains("missing required parameter 'weight' for " + base)
                        && r.err().contains("the base_model takes part in linear as a model (as in mergekit)"),
                r.err());
        assertTrue(!Files.exists(tmp.resolve("linear-bad")));
    }

    @Test
    void linearWeightedSoup() {
        Path cfg = yaml(
                "linear.yml",
                "merge_method: linear\nmodels:\n"
                        + "  - model: " + ft1 + "\n    parameters: {weight: 0.2}\n"
                        + "  - model: " + ft2 + "\n    parameters: {weight: 0.3}\n"
                        + "  - model: " + ft3 + "\n    parameters: {weight: 0.5}\n");
        check("linear (0.2, 0.3, 0.5)", merge("linear", s(cfg)), n -> {
            double[] r = new double[B.get(n).length];
            for (int i = 0; i < r.length; i++) {
                r[i] = (0.2 * A1.get(n)[i] + 0.3 * A2.get(n)[i] + 0.5 * A3.get(n)[i]) / 1.0;
            }
            return r;
        });
        check(
                "linear uniform, normalize=false",
                merge(
                        "linear-nn",
                        "--method",
                        "linear",
                        "--param",
                        "normalize=false",
                        "--param",
                        "weight=0.5",
                        s(ft1),
                        s(ft2)),
                n -> {
                    double[] r = new double[B.get(n).length];
                    for (int i = 0; i < r.length; i++) {
                        r[i] = 0.5 * A1.get(n)[i] + 0.5 * A2.get(n)[i];
                    }
                    return r;
                });
    }

    @Test
    void identityMergesAreExact() {
        Map<String, float[]> lin = merge("id-linear", "--method", "linear", s(ft1), s(ft1));
        Map<String, float[]> ties = merge("id-ties", "--method", "ties", "--base", s(ft1), s(ft1), s(ft1));
        Map<String, float[]> ta = merge("id-ta", "--method", "task_arithmetic", "--base", s(base), s(base));
        for (String n : B.keySet()) {
            assertArrayEquals(A1.get(n), lin.get(n), "linear of one model twice: " + n);
            assertArrayEquals(A1.get(n), ties.get(n), "ties of a model with itself as base: " + n);
            assertArrayEquals(B.get(n), ta.get(n), "task arithmetic with zero task vector: " + n);
        }
    }

    // ---------------------------------------------------------------- spherical

    static double[] slerpRef(double t, double[] a, double[] b) {
        double na = Math.sqrt(dot(a, a));
        double nb = Math.sqrt(dot(b, b));
        double c = dot(a, b) / (na * nb);
        double[] r = new double[a.length];
        double wa;
        double wb;
        if (Math.abs(c) > 0.9995) {
            wa = 1 - t;
            wb = t;
        } else {
            double om = Math.acos(c);
            wa = Math.sin((1 - t) * om) / Math.sin(om);
            wb = Math.sin(t * om) / Math.sin(om);
        }
        for (int i = 0; i < r.length; i++) {
            r[i] = wa * a[i] + wb * b[i];
        }
        return r;
    }

    static double dot(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) {
            s += a[i] * b[i];
        }
        return s;
    }

    @Test
    void slerpMatchesAndHitsItsEndpoints() {
        check(
                "slerp t=0.3",
                merge("slerp", "--method", "slerp", "--base", s(base), "--param", "t=0.3", s(base), s(ft1)),
                n -> slerpRef(0.3, d(B.get(n)), d(A1.get(n))));
        Map<String, float[]> t0 = merge("slerp0", "--method", "slerp", "--base", s(base), "--param", "t=0", s(ft1));
        Map<String, float[]> t1 = merge("slerp1", "--method", "slerp", "--base", s(base), "--param", "t=1", s(ft1));
        for (String n : B.keySet()) {
            assertArrayEquals(B.get(n), t0.get(n), "slerp t=0 is the base: " + n);
            assertArrayEquals(A1.get(n), t1.get(n), "slerp t=1 is the other model: " + n);
        }
    }

    @Test
    void nuslerpMatches() {
        // no base: t = w2/(w1+w2) = 0.7, one angle for the whole tensor
        check(
                "nuslerp (0.3, 0.7)",
                merge(
                        "nuslerp",
                        s(yaml(
                                "nuslerp.yml",
                                "merge_method: nuslerp\nmodels:\n"
                                        + "  - model: " + ft1 + "\n    parameters: {weight: 0.3}\n"
                                        + "  - model: " + ft2 + "\n    parameters: {weight: 0.7}\n"))),
                n -> nuslerpRef(0.7, d(A1.get(n)), d(A2.get(n))));
        // with a base: SLERP of the task vectors, row by row (nuslerp_flatten false)
        check(
                "nuslerp base, rows (0.5, 0.5)",
                merge(
                        "nuslerp-rows",
                        s(yaml(
                                "nuslerp-rows.yml",
                                "merge_method: nuslerp\nbase_model: " + base
                                        + "\nparameters: {weight: 1.0, nuslerp_flatten: false}\nmodels:\n"
                                        + "  - model: " + ft1 + "\n  - model: " + ft2 + "\n"))),
                n -> {
                    double[] b = d(B.get(n));
                    double[] x = sub(d(A1.get(n)), b);
                    double[] y = sub(d(A2.get(n)), b);
                    int r = rows(n, b.length);
                    int c = b.length / r;
                    double[] out = new double[b.length];
                    for (int i = 0; i < r; i++) {
                        double[] o = nuslerpRef(
                                0.5,
                                Arrays.copyOfRange(x, i * c, (i + 1) * c),
                                Arrays.copyOfRange(y, i * c, (i + 1) * c));
                        for (int j = 0; j < c; j++) {
                            out[i * c + j] = o[j] + b[i * c + j];
                        }
                    }
                    return out;
                });
    }

    static double[] nuslerpRef(double t, double[] a, double[] b) {
        double c = dot(a, b) / (Math.sqrt(dot(a, a)) * Math.sqrt(dot(b, b)));
        double om = Math.acos(Math.max(-1, Math.min(1, c)));
        double[] r = new double[a.length];
        for (int i = 0; i < r.length; i++) {
            r[i] = Math.abs(Math.sin(om)) < 1e-8
                    ? (1 - t) * a[i] + t * b[i]
                    : (Math.sin((1 - t) * om) * a[i] + Math.sin(t * om) * b[i]) / Math.sin(om);
        }
        return r;
    }

    static double[] sub(double[] a, double[] b) {
        double[] r = new double[a.length];
        for (int i = 0; i < r.length; i++) {
            r[i] = a[i] - b[i];
        }
        return r;
    }

    @Test
    void multislerpMatches() {
        check(
                "multislerp base (1, 2, 3)",
                merge(
                        "multislerp",
                        s(yaml(
                                "multislerp.yml",
                                "merge_method: multislerp\nbase_model: " + base
                                        + "\nmodels:\n"
                                        + "  - model: " + ft1 + "\n    parameters: {weight: 1}\n"
                                        + "  - model: " + ft2 + "\n    parameters: {weight: 2}\n"
                                        + "  - model: " + ft3 + "\n    parameters: {weight: 3}\n"))),
                n -> {
                    double[] b = d(B.get(n));
                    double[][] v = {sub(d(A1.get(n)), b), sub(d(A2.get(n)), b), sub(d(A3.get(n)), b)};
                    double[] w = {1 / 6.0, 2 / 6.0, 3 / 6.0};
                    // barycentre on the sphere via the tangent space at the normalised weighted mean direction
                    double[] mu = new double[b.length];
                    double avgNorm = 0;
                    double[][] u = new double[3][];
                    for (int k = 0; k < 3; k++) {
                        double nk = Math.sqrt(dot(v[k], v[k]));
                        avgNorm += w[k] * nk;
                        u[k] = new double[b.length];
                        for (int i = 0; i < b.length; i++) {
                            u[k][i] = v[k][i] / nk;
                            mu[i] += w[k] * u[k][i];
                        }
                    }
                    double mn = Math.sqrt(dot(mu, mu));
                    for (int i = 0; i < b.length; i++) {
                        mu[i] /= mn;
                    }
                    double[] tau = new double[b.length];
                    for (int k = 0; k < 3; k++) {
                        double c = dot(u[k], mu);
                        for (int i = 0; i < b.length; i++) {
                            tau[i] += w[k] * (u[k][i] - c * mu[i]);
                        }
                    }
                    double tn = Math.sqrt(dot(tau, tau));
                    double[] r = new double[b.length];
                    for (int i = 0; i < b.length; i++) {
                        r[i] = (Math.cos(tn) * mu[i] + Math.sin(tn) / tn * tau[i]) * avgNorm + b[i];
                    }
                    return r;
                });
    }

    @Test
    void karcherMatches() {
        check(
                "karcher (3 models)",
                merge("karcher", "--method", "karcher", s(ft1), s(ft2), s(ft3)),
                n -> karcher(d(A1.get(n)), d(A2.get(n)), d(A3.get(n))));
    }

    /**
     * mergekit adds a {@code base_model} missing from {@code models} as one more model, and karcher takes every
     * model with equal weight: with {@code --base base}, the Karcher mean of ft1, ft2 and the base (not of ft1 and ft2,
     * whose mean differs by far more than the tolerance).
     */
    @Test
    void karcherWithABaseTakesTheBaseAsAModel() {
        Map<String, float[]> got = merge("karcher-base", "--method", "karcher", "--base", s(base), s(ft1), s(ft2));
        check("karcher (2 models + base)", got, n -> karcher(d(A1.get(n)), d(A2.get(n)), d(B.get(n))));
        String n = "model.layers.0.self_attn.q_proj.weight";
        double[] without = karcher(d(A1.get(n)), d(A2.get(n)));
        double max = 0;
        for (int i = 0; i < without.length; i++) {
            max = Math.max(max, Math.abs(got.get(n)[i] - without[i]));
        }
        assertTrue(max > 100 * TOL, "the base must change the mean: " + max);
    }

    /** The Karcher mean of {@code v} with equal weights, iterated to |g| < 1e-5 or 10 steps, scaled by the mean norm. */
    static double[] karcher(double[]... v) {
        int m = v.length;
        double[][] u = new double[m][];
        double scale = 0;
        for (int k = 0; k < m; k++) {
            double nk = Math.sqrt(dot(v[k], v[k]));
            scale += nk / m;
            u[k] = new double[v[k].length];
            for (int i = 0; i < u[k].length; i++) {
                u[k][i] = v[k][i] / nk;
            }
        }
        // Riemannian gradient descent to convergence (the method stops at |g| < 1e-5 or 10 steps)
        double[] mu = new double[u[0].length];
        for (double[] uk : u) {
            for (int i = 0; i < mu.length; i++) {
                mu[i] += uk[i] / m;
            }
        }
        normalise(mu);
        for (int it = 0; it < 10; it++) {
            double[] g = new double[mu.length];
            for (double[] uk : u) {
                double c = Math.max(-1, Math.min(1, dot(mu, uk)));
                double th = Math.acos(c);
                if (th < 1e-5) {
                    continue;
                }
                for (int i = 0; i < mu.length; i++) {
                    g[i] += (1.0 / m) * th / Math.sin(th) * (uk[i] - c * mu[i]);
                }
            }
            double gn = Math.sqrt(dot(g, g));
            if (gn < 1e-5) {
                break;
            }
            for (int i = 0; i < mu.length; i++) {
                mu[i] = Math.cos(gn) * mu[i] + Math.sin(gn) * g[i] / gn;
            }
            normalise(mu);
        }
        double[] r = new double[mu.length];
        for (int i = 0; i < r.length; i++) {
            r[i] = scale * mu[i];
        }
        return r;
    }

    static void normalise(double[] a) {
        double n = Math.sqrt(dot(a, a));
        for (int i = 0; i < a.length; i++) {
            a[i] /= n;
        }
    }

    // ---------------------------------------------------------------- task vectors

    /** float32 task vector, as the method sees it. */
    static float[] tv(Map<String, float[]> m, String n) {
        float[] a = m.get(n);
        float[] b = B.get(n);
        float[] r = new float[a.length];
        for (int i = 0; i < r.length; i++) {
            r[i] = a[i] - b[i];
        }
        return r;
    }

    /** Indices sorted by |x| ascending, ties by index (a stable sort). */
    static Integer[] ascending(float[] x) {
        Integer[] idx = new Integer[x.length];
        for (int i = 0; i < idx.length; i++) {
            idx[i] = i;
        }
        Arrays.sort(idx, Comparator.comparingDouble(i -> Math.abs(x[i])));
        return idx;
    }

    /** Keeps ranks [lo, hi) of the ascending magnitude order. */
    static double[] keepRanks(float[] x, int lo, int hi) {
        Integer[] idx = ascending(x);
        double[] r = new double[x.length];
        for (int k = Math.max(0, lo); k < Math.min(hi, x.length); k++) {
            r[idx[k]] = x[idx[k]];
        }
        return r;
    }

    /** base + λ·mix(weighted deltas) with optional TIES sign election and normalisation. */
    static double[] gta(
            String n, List<double[]> deltas, double[] w, boolean consensus, boolean normalize, double lambda) {
        double[] b = d(B.get(n));
        double[] r = new double[b.length];
        for (int i = 0; i < b.length; i++) {
            double sum = 0;
            for (int k = 0; k < deltas.size(); k++) {
                sum += w[k] * deltas.get(k)[i];
            }
            double mixed = 0;
            double div = 0;
            for (int k = 0; k < deltas.size(); k++) {
                double wd = w[k] * deltas.get(k)[i];
                boolean in = !consensus || (wd != 0 && Math.signum(wd) == (sum >= 0 ? 1 : -1));
                if (in) {
                    mixed += wd;
                    div += w[k];
                }
            }
            if (consensus && div == 0) {
                div = 1;
            }
            r[i] = b[i] + lambda * (normalize ? mixed / div : mixed);
        }
        return r;
    }

    @Test
    void taskArithmeticMatches() {
        check(
                "task_arithmetic (0.5, 0.5) λ=0.8",
                merge(
                        "ta",
                        "--method",
                        "task_arithmetic",
                        "--base",
                        s(base),
                        "--param",
                        "weight=0.5",
                        "--param",
                        "lambda=0.8",
                        s(ft1),
                        s(ft2)),
                n -> gta(n, List.of(d(tv(A1, n)), d(tv(A2, n))), new double[] {0.5, 0.5}, false, false, 0.8));
    }

    @Test
    void tiesMatches() {
        check(
                "ties density 0.4 (1, 0.5, 0.8)",
                merge(
                        "ties",
                        s(yaml(
                                "ties.yml",
                                "merge_method: ties\nbase_model: " + base
                                        + "\nparameters: {density: 0.4}\nmodels:\n"
                                        + "  - model: " + base + "\n"
                                        + "  - model: " + ft1 + "\n    parameters: {weight: 1.0}\n"
                                        + "  - model: " + ft2 + "\n    parameters: {weight: 0.5}\n"
                                        + "  - model: " + ft3 + "\n    parameters: {weight: 0.8}\n"))),
                n -> {
                    int len = B.get(n).length;
                    int k = (int) (0.4 * len);
                    List<double[]> ds = new ArrayList<>();
                    for (Map<String, float[]> m : List.of(A1, A2, A3)) {
                        ds.add(keepRanks(tv(m, n), len - k, len));
                    }
                    return gta(n, ds, new double[] {1.0, 0.5, 0.8}, true, true, 1.0);
                });
    }

    @Test
    void breadcrumbsMatch() {
        for (boolean ties : new boolean[] {false, true}) {
            String method = ties ? "breadcrumbs_ties" : "breadcrumbs";
            check(
                    method + " density 0.6 γ 0.05",
                    merge(
                            method,
                            "--method",
                            method,
                            "--base",
                            s(base),
                            "--param",
                            "density=0.6",
                            "--param",
                            "gamma=0.05",
                            s(ft1),
                            s(ft2)),
                    n -> {
                        int len = B.get(n).length;
                        int top = (int) (0.05 * len);
                        int target = (int) (0.6 * len);
                        int bot = len - target - top;
                        List<double[]> ds = new ArrayList<>();
                        for (Map<String, float[]> m : List.of(A1, A2)) {
                            ds.add(keepRanks(tv(m, n), bot, len - top));
                        }
                        return gta(n, ds, new double[] {1, 1}, ties, false, 1.0);
                    });
        }
    }

    @Test
    void sceMatches() {
        check(
                "sce select_topk 0.5",
                merge(
                        "sce",
                        "--method",
                        "sce",
                        "--base",
                        s(base),
                        "--param",
                        "select_topk=0.5",
                        s(ft1),
                        s(ft2),
                        s(ft3)),
                n -> {
                    List<float[]> t = List.of(tv(A1, n), tv(A2, n), tv(A3, n));
                    int len = t.get(0).length;
                    float[] var = new float[len];
                    int nonzero = 0;
                    for (int i = 0; i < len; i++) {
                        double mean = (t.get(0)[i] + (double) t.get(1)[i] + t.get(2)[i]) / 3;
                        double v = 0;
                        for (float[] x : t) {
                            v += (x[i] - mean) * (x[i] - mean);
                        }
                        var[i] = (float) (v / 3);
                        nonzero += var[i] != 0 ? 1 : 0;
                    }
                    int k = (int) (0.5 * nonzero);
                    double[] keep = keepRanks(var, len - k, len);
                    List<double[]> ds = new ArrayList<>();
                    double[] w = new double[3];
                    double ws = 0;
                    for (int m = 0; m < 3; m++) {
                        double[] x = d(t.get(m));
                        for (int i = 0; i < len; i++) {
                            x[i] = keep[i] != 0 ? x[i] : 0;
                        }
                        w[m] = dot(x, x) / len;
                        ws += w[m];
                        ds.add(x);
                    }
                    for (int m = 0; m < 3; m++) {
                        w[m] /= ws;
                    }
                    double[] b = d(B.get(n));
                    double[] r = new double[len];
                    for (int i = 0; i < len; i++) {
                        double sum = ds.get(0)[i] + ds.get(1)[i] + ds.get(2)[i];
                        double mixed = 0;
                        double div = 0;
                        for (int m = 0; m < 3; m++) {
                            double x = ds.get(m)[i];
                            if (x != 0 && Math.signum(x) == (sum >= 0 ? 1 : -1)) {
                                mixed += w[m] * x;
                                div += w[m];
                            }
                        }
                        r[i] = b[i] + mixed / (div == 0 ? 1 : div);
                    }
                    return r;
                });
    }

    @Test
    void ramMatches() {
        check(
                "ram epsilon 2e-3",
                merge("ram", "--method", "ram", "--base", s(base), "--param", "epsilon=0.002", s(ft1), s(ft2), s(ft3)),
                n -> {
                    double[] b = d(B.get(n));
                    double[] r = new double[b.length];
                    for (int i = 0; i < b.length; i++) {
                        double sum = 0;
                        int c = 0;
                        for (Map<String, float[]> m : List.of(A1, A2, A3)) {
                            double x = tv(m, n)[i];
                            if (Math.abs(x) > 0.002) {
                                sum += x;
                                c++;
                            }
                        }
                        r[i] = b[i] + (c == 0 ? 0 : sum / c);
                    }
                    return r;
                });
    }

    // ---------------------------------------------------------------- base-anchored

    @Test
    void modelStockMatches() {
        check(
                "model_stock (3 models)",
                merge("stock", "--method", "model_stock", "--base", s(base), s(ft1), s(ft2), s(ft3)),
                n -> {
                    double[] b = d(B.get(n));
                    List<double[]> o = List.of(sub(d(A1.get(n)), b), sub(d(A2.get(n)), b), sub(d(A3.get(n)), b));
                    double cos = 0;
                    for (int i = 0; i < 3; i++) {
                        for (int j = i + 1; j < 3; j++) {
                            cos += dot(o.get(i), o.get(j))
                                    / Math.sqrt(dot(o.get(i), o.get(i)) * dot(o.get(j), o.get(j)))
                                    / 3;
                        }
                    }
                    double t = 3 * cos / (1 + 2 * cos);
                    double[] r = new double[b.length];
                    for (int i = 0; i < b.length; i++) {
                        double avg = (A1.get(n)[i] + (double) A2.get(n)[i] + A3.get(n)[i]) / 3;
                        r[i] = t * avg + (1 - t) * b[i];
                    }
                    return r;
                });
    }

    @Test
    void nearswapMatches() {
        check(
                "nearswap t=0.002",
                merge("nearswap", "--method", "nearswap", "--base", s(base), "--param", "t=0.002", s(ft1)),
                n -> {
                    double[] b = d(B.get(n));
                    double[] a = d(A1.get(n));
                    double[] r = new double[b.length];
                    for (int i = 0; i < b.length; i++) {
                        double diff = Math.abs(b[i] - a[i]);
                        double l = diff == 0 ? 1 : Math.min(1, 0.002 / diff);
                        r[i] = l * a[i] + (1 - l) * b[i];
                    }
                    return r;
                });
    }

    @Test
    void arceeFusionMatches() {
        check("arcee_fusion", merge("fusion", "--method", "arcee_fusion", "--base", s(base), s(ft1)), n -> {
            double[] b = d(B.get(n));
            double[] p = d(A1.get(n));
            int r = rows(n, b.length);
            int c = b.length / r;
            float[] imp = new float[b.length];
            for (int i = 0; i < r; i++) {
                double kl = 0;
                double[] sp = softmax(p, i * c, c);
                double[] sb = softmax(b, i * c, c);
                for (int j = 0; j < c; j++) {
                    double pp = sp[j] + 1e-8;
                    double qq = sb[j] + 1e-8;
                    kl += pp * Math.log(pp / qq);
                }
                for (int j = 0; j < c; j++) {
                    imp[i * c + j] = (float) (Math.abs(p[i * c + j] - b[i * c + j]) * kl);
                }
            }
            float[] sorted = imp.clone();
            Arrays.sort(sorted);
            int last = sorted.length - 1;
            double th = sorted[(int) (0.5 * last)] + 1.5 * (sorted[(int) (0.75 * last)] - sorted[(int) (0.25 * last)]);
            double[] out = new double[b.length];
            for (int i = 0; i < b.length; i++) {
                out[i] = imp[i] >= (float) th ? p[i] : b[i];
            }
            return out;
        });
    }

    static double[] softmax(double[] x, int off, int n) {
        double m = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < n; i++) {
            m = Math.max(m, x[off + i]);
        }
        double z = 0;
        double[] r = new double[n];
        for (int i = 0; i < n; i++) {
            r[i] = Math.exp(x[off + i] - m);
            z += r[i];
        }
        for (int i = 0; i < n; i++) {
            r[i] /= z;
        }
        return r;
    }

    // ---------------------------------------------------------------- randomised: structure, seed

    /**
     * DARE (dare_linear, one model, weight 1): the output's task vector keeps a fraction {@code density} of the
     * elements (within 4σ of the binomial), each kept element is the input's delta times one per-tensor factor equal to
     * ‖δ‖₁ / ‖kept δ‖₁ (mergekit's L1 rescale, ≈ 1/density), and the dropped ones are exactly the base.
     */
    @Test
    void dareKeepsItsFractionAndRescales() {
        double density = 0.3;
        Map<String, float[]> out = merge(
                "dare", "--method", "dare_linear", "--base", s(base), "--param", "density=0.3", "--seed", "7", s(ft1));
        long kept = 0;
        long total = 0;
        for (String n : B.keySet()) {
            float[] b = B.get(n);
            float[] o = out.get(n);
            float[] in = tv(A1, n);
            double l1In = 0;
            double l1Kept = 0;
            int k = 0;
            for (int i = 0; i < b.length; i++) {
                l1In += Math.abs(in[i]);
                if (o[i] != b[i]) {
                    k++;
                    l1Kept += Math.abs(in[i]);
                }
            }
            double factor = l1In / l1Kept;
            for (int i = 0; i < b.length; i++) {
                if (o[i] != b[i]) {
                    double got = (double) o[i] - b[i];
                    assertEquals(
                            in[i] * factor, got, 2e-4 * Math.abs(in[i] * factor) + 2e-7 * Math.abs(b[i]) + 1e-9, n);
                }
            }
            kept += k;
            total += b.length;
        }
        double frac = kept / (double) total;
        double sigma = Math.sqrt(density * (1 - density) / total);
        REPORT.put("dare_linear kept fraction (d=0.3)", frac);
        assertTrue(Math.abs(frac - density) < 4 * sigma, "kept fraction " + frac + " vs density 0.3 ± " + 4 * sigma);
    }

    /** DELLA keeps about {@code density} too, more of the large deltas than of the small ones (rank-based keep). */
    @Test
    void dellaKeepsLargeDeltasMoreOften() {
        Map<String, float[]> out = merge(
                "della",
                "--method",
                "della_linear",
                "--base",
                s(base),
                "--param",
                "density=0.5",
                "--param",
                "epsilon=0.3",
                "--seed",
                "3",
                s(ft1));
        long keptLarge = 0;
        long keptSmall = 0;
        long large = 0;
        long small = 0;
        for (String n : B.keySet()) {
            float[] b = B.get(n);
            float[] o = out.get(n);
            float[] in = tv(A1, n);
            int r = rows(n, b.length);
            int c = b.length / r;
            for (int i = 0; i < r; i++) {
                float[] row = Arrays.copyOfRange(in, i * c, (i + 1) * c);
                Integer[] asc = ascending(row);
                for (int k = 0; k < c; k++) {
                    int j = i * c + asc[k];
                    boolean kept = o[j] != b[j];
                    if (k < c / 4) {
                        small++;
                        keptSmall += kept ? 1 : 0;
                    } else if (k >= c - c / 4) {
                        large++;
                        keptLarge += kept ? 1 : 0;
                    }
                }
            }
        }
        double pl = keptLarge / (double) large;
        double ps = keptSmall / (double) small;
        REPORT.put("della keep rate top quarter", pl);
        REPORT.put("della keep rate bottom quarter", ps);
        // expected keep probabilities: density ± epsilon·(3/4) → 0.725 for the top quarter, 0.275 for the bottom
        assertEquals(0.725, pl, 0.03);
        assertEquals(0.275, ps, 0.03);
    }

    @Test
    void sameSeedSameBytesOtherSeedOtherBytes() throws Exception {
        String[] m = {"--method", "dare_ties", "--base", s(base), "--param", "density=0.5", s(ft1), s(ft2)};
        Path a = run("seed-a", m, "1");
        Path b = run("seed-b", m, "1");
        Path c = run("seed-c", m, "2");
        byte[] x = Files.readAllBytes(a.resolve("model.safetensors"));
        assertArrayEquals(x, Files.readAllBytes(b.resolve("model.safetensors")));
        assertTrue(!Arrays.equals(x, Files.readAllBytes(c.resolve("model.safetensors"))), "another seed differs");
    }

    static Path run(String name, String[] args, String seed) {
        Path out = tmp.resolve(name);
        List<String> a = new ArrayList<>(List.of("merge"));
        a.addAll(Arrays.asList(args));
        a.addAll(List.of("--seed", seed, out.toString()));
        CliRun r = CliRun.of(a.toArray(new String[0]));
        assertEquals(0, r.code(), r.toString());
        return out;
    }

    static Path yaml(String name, String text) {
        try {
            Path p = tmp.resolve(name);
            Files.writeString(p, text);
            return p;
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }
}
