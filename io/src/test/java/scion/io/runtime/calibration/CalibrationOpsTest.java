package scion.io.runtime.calibration;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.Random;
import org.junit.jupiter.api.Test;

class CalibrationOpsTest {
    private static float[] random(int n, long seed) {
        Random r = new Random(seed);
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            x[i] = (float) r.nextGaussian();
        }
        return x;
    }

    /** XᵀX by the definition, in float64. */
    static double[] naiveGram(float[] x, int rows, int width) {
        double[] g = new double[width * width];
        for (int i = 0; i < width; i++) {
            for (int j = 0; j < width; j++) {
                double s = 0;
                for (int r = 0; r < rows; r++) {
                    s += (double) x[r * width + i] * x[r * width + j];
                }
                g[i * width + j] = s;
            }
        }
        return g;
    }

    private static void assertClose(double[] expected, double[] actual, double rel) {
        double scale = 0;
        double diff = 0;
        for (int i = 0; i < expected.length; i++) {
            scale = Math.max(scale, Math.abs(expected[i]));
            diff = Math.max(diff, Math.abs(expected[i] - actual[i]));
        }
        // float64 sums of float32 products in another order: agreement to ~1e-15 · rows.
        assertEquals(0, diff / scale, rel, "max |Δ| / max |XᵀX|");
    }

    @Test
    void tiledGramEqualsTheDefinitionForOddShapes() {
        for (int[] shape : new int[][] {{1, 1}, {3, 5}, {67, 130}, {130, 257}}) {
            float[] x = random(shape[0] * shape[1], shape[0]);
            double[] g = new double[shape[1] * shape[1]];
            CalibrationOps.addGramUpper(x, shape[0], shape[1], g);
            CalibrationOps.addGramUpper(x, shape[0], shape[1], g); // accumulates
            CalibrationOps.mirrorUpper(g, shape[1]);
            double[] ref = naiveGram(x, shape[0], shape[1]);
            for (int i = 0; i < ref.length; i++) {
                ref[i] *= 2;
            }
            assertClose(ref, g, 1e-12);
        }
    }

    @Test
    void onnxRuntimeGramEqualsTheDefinition() {
        float[] x = random(150 * 70, 3);
        double[] g = new double[70 * 70];
        try (OrtGram ort = new OrtGram(1)) {
            ort.add(x, 150, 70, g);
            ort.add(x, 100, 70, g); // a prefix of the rows, same session
        }
        double[] a = naiveGram(x, 150, 70);
        double[] b = naiveGram(x, 100, 70);
        for (int i = 0; i < a.length; i++) {
            a[i] += b[i];
        }
        assertClose(a, g, 1e-12);
    }

    @Test
    void cosineAndAngularDistance() {
        float[] a = {1, 0, 0, 0, 0};
        float[] b = {1, 1, 0, 0, 0};
        float[] z = {0, 0, 0, 0, 0};
        assertEquals(Math.sqrt(0.5), CalibrationOps.cosine(a, 0, b, 0, 5), 1e-15);
        assertEquals(0.25, CalibrationOps.angularDistance(Math.sqrt(0.5)), 1e-15, "45° is a quarter of π");
        assertEquals(1.0, CalibrationOps.angularDistance(-1), 1e-15);
        assertEquals(0.0, CalibrationOps.angularDistance(1.0000001), 0, "clamped");
        assertEquals(0, CalibrationOps.cosine(a, 0, z, 0, 5));
        assertEquals(1, CalibrationOps.cosine(z, 0, z, 0, 5));
        float[] x = random(2 * 9, 4);
        double dot = 0;
        for (int i = 0; i < 9; i++) {
            dot += (double) x[i] * x[9 + i];
        }
        assertEquals(dot, CalibrationOps.dot(x, 0, x, 1, 9), 1e-12);
    }

    @Test
    void pairwiseRowDotsEqualOneDotPerPairAcrossRowBlocks() {
        int rows = 131; // two full blocks of 64 and a partial one
        int width = 37;
        float[][] x = {random(rows * width, 11), random(rows * width, 12), random(rows * width, 13)};
        double[][] out = new double[6][rows];
        CalibrationOps.pairwiseRowDots(x, rows, width, out);
        int pair = 0;
        for (int l = 0; l < 3; l++) {
            for (int m = l; m < 3; m++, pair++) {
                for (int r = 0; r < rows; r++) {
                    double ref = CalibrationOps.dot(x[l], r, x[m], r, width);
                    assertEquals(ref, out[pair][r], 1e-12 * width, "pair (" + l + ", " + m + ") row " + r);
                }
            }
        }
    }

    @Test
    void absColumnSums() {
        float[] x = {1, -2, 3, -4, 5, -6};
        double[] s = new double[3];
        CalibrationOps.addAbsColumnSums(x, 2, 3, s);
        assertEquals(5, s[0]);
        assertEquals(7, s[1]);
        assertEquals(9, s[2]);
    }
}
