package scion.merge.fisher;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;

/** The kernels of the Fisher pass and the Fisher-weighted average, against direct float64 recomputations. */
class FisherOpsTest {
    private static float[] random(Random r, int n) {
        float[] a = new float[n];
        for (int i = 0; i < n; i++) {
            a[i] = (float) r.nextGaussian();
        }
        return a;
    }

    /** Shapes below and above the threading threshold, row counts not a multiple of 4, columns across blocks. */
    @Test
    void gemmEqualsDoubleProduct() {
        Random r = new Random(3);
        int[][] shapes = {{1, 5, 7}, {6, 33, 300}, {129, 65, 513}, {128, 384, 257}};
        for (int[] s : shapes) {
            int m = s[0];
            int k = s[1];
            int n = s[2];
            float[] a = random(r, m * k);
            float[] b = random(r, k * n);
            float[] c = random(r, m * n);
            float[] c0 = c.clone();
            FisherOps.gemm(a, b, c, m, k, n);
            for (int i = 0; i < m; i++) {
                for (int j = 0; j < n; j++) {
                    double ref = c0[i * n + j];
                    for (int p = 0; p < k; p++) {
                        ref += (double) a[i * k + p] * b[p * n + j];
                    }
                    // float32 sum of k products of unit normals: error ~ k·2⁻²⁴·√k.
                    assertEquals(ref, c[i * n + j], 1e-6 * k * Math.sqrt(k) + 1e-5, "C[" + i + "," + j + "] " + m);
                }
            }
        }
    }

    @Test
    void gemmIsDeterministic() {
        Random r = new Random(5);
        float[] a = random(r, 130 * 200);
        float[] b = random(r, 200 * 300);
        float[] c1 = new float[130 * 300];
        float[] c2 = new float[130 * 300];
        FisherOps.gemm(a, b, c1, 130, 200, 300);
        FisherOps.gemm(a, b, c2, 130, 200, 300);
        assertArrayEquals(c1, c2);
    }

    /** erf against tabulated values (10 digits) within the approximation's stated 1.5e-7. */
    @Test
    void erfMatchesTable() {
        double[][] table = {
            {0.0, 0.0},
            {0.1, 0.1124629160},
            {0.5, 0.5204998778},
            {1.0, 0.8427007929},
            {1.5, 0.9661051465},
            {2.0, 0.9953222650},
            {2.9, 0.9999589021},
            {3.0, 0.9999779095},
            {3.5, 0.9999992569},
            {-1.0, -0.8427007929}
        };
        for (double[] t : table) {
            assertEquals(t[1], FisherOps.erf(t[0]), 1.5e-7, "erf(" + t[0] + ")");
        }
    }

    /** Norm and activation backward against central differences in the same float32 code. */
    @Test
    void normBackwardsMatchDifferences() {
        Random r = new Random(9);
        int t = 3;
        int h = 16;
        float[] x = random(r, t * h);
        float[] g = random(r, h);
        float[] b = random(r, h);
        float[] dy = random(r, t * h);
        float[] xhat = new float[t * h];
        float[] rstd = new float[t];
        FisherOps.layerNorm(x, g, b, 1e-5f, t, h, xhat, rstd);
        float[] dg = new float[h];
        float[] db = new float[h];
        float[] dx = FisherOps.layerNormBackward(dy, xhat, rstd, g, dg, db, t, h);
        float[] rr = new float[t];
        FisherOps.rmsNorm(x, g, 1e-6f, t, h, rr);
        float[] dgr = new float[h];
        float[] dxr = FisherOps.rmsNormBackward(dy, x, rr, g, dgr, t, h);
        double eps = 1e-3;
        for (int i = 0; i < x.length; i++) {
            float keep = x[i];
            x[i] = (float) (keep + eps);
            double lp = dot(FisherOps.layerNorm(x, g, b, 1e-5f, t, h, new float[t * h], new float[t]), dy);
            double rp = dot(FisherOps.rmsNorm(x, g, 1e-6f, t, h, new float[t]), dy);
            x[i] = (float) (keep - eps);
            double lm = dot(FisherOps.layerNorm(x, g, b, 1e-5f, t, h, new float[t * h], new float[t]), dy);
            double rm = dot(FisherOps.rmsNorm(x, g, 1e-6f, t, h, new float[t]), dy);
            x[i] = keep;
            assertEquals((lp - lm) / (2 * eps), dx[i], 5e-3, "LayerNorm dx[" + i + "]");
            assertEquals((rp - rm) / (2 * eps), dxr[i], 5e-3, "RMSNorm dx[" + i + "]");
        }
        for (float v = -6f; v <= 6f; v += 0.37f) {
            double e = 1e-3;
            assertEquals(
                    (FisherOps.gelu(v + (float) e) - FisherOps.gelu(v - (float) e)) / (2 * e),
                    FisherOps.geluGrad(v),
                    2e-3,
                    "gelu'(" + v + ")");
            assertEquals(
                    (FisherOps.silu(v + (float) e) - FisherOps.silu(v - (float) e)) / (2 * e),
                    FisherOps.siluGrad(v),
                    2e-3,
                    "silu'(" + v + ")");
        }
    }

    private static double dot(float[] a, float[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) {
            s += (double) a[i] * b[i];
        }
        return s;
    }

    @Test
    void fisherMergeFormula() {
        float[] a = {1f, 2f, 3f, 4f};
        float[] b = {3f, 6f, -1f, 0f};
        float[] fa = {1f, 0f, 0f, 2f};
        float[] fb = {1f, 3f, 0f, 6f};
        float[] m = FisherMerge.merge(List.of(a, b), List.of(fa, fb), new double[] {1, 1}, 0);
        // equal Fisher: the mean; one-sided Fisher: that model; both zero: 0/0 without ε.
        assertEquals(2f, m[0], 1e-6);
        assertEquals(6f, m[1], 1e-6);
        assertEquals(1f, m[3], 1e-6);
        float[] e = FisherMerge.merge(List.of(a, b), List.of(fa, fb), new double[] {1, 1}, 1e-8);
        assertEquals(1f, e[2], 1e-6, "no Fisher anywhere: plain average");
        float[] w = FisherMerge.merge(List.of(a, b), List.of(fa, fb), new double[] {3, 1}, 1e-8);
        assertEquals((3 * 1 * 1 + 1 * 1 * 3) / 4.0, w[0], 1e-6, "λ scales each model's Fisher");
        assertEquals((3 * 3 + 1 * -1) / 4.0, w[2], 1e-6, "λ-weighted average where Σ F = 0");
        float[] same = FisherMerge.merge(List.of(a, a.clone()), List.of(fa, fb), new double[] {1, 2}, 1e-8);
        assertArrayEquals(a, same, 1e-6f, "identical models: identity");
    }
}
