package scion.io.runtime;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.api.Test;

class RuntimeOpsTest {

    @Test
    void logSoftmaxMatchesTheDefinitionAndSumsToOne() {
        Random r = new Random(1);
        float[] a = new float[3 + 50];
        for (int i = 0; i < a.length; i++) {
            a[i] = (float) (r.nextGaussian() * 4);
        }
        double total = 0;
        double denom = 0;
        for (int i = 0; i < 50; i++) {
            denom += Math.exp(a[3 + i]);
        }
        for (int t = 0; t < 50; t++) {
            double ls = RuntimeOps.logSoftmaxAt(a, 3, 50, t);
            // direct formula in double: the shifted form must agree to rounding (1e-12 absolute on values ~ -10)
            assertEquals(a[3 + t] - Math.log(denom), ls, 1e-12);
            total += Math.exp(ls);
        }
        assertEquals(1.0, total, 1e-12);
    }

    @Test
    void logSoftmaxIsStableForHugeLogits() {
        float[] a = {1e30f, 0f, -1e30f};
        assertEquals(0.0, RuntimeOps.logSoftmaxAt(a, 0, 3, 0), 0.0);
        assertEquals(-1e30, RuntimeOps.logSoftmaxAt(a, 0, 3, 1), 1e24);
    }

    @Test
    void argmaxTakesTheFirstOfTiesAndIgnoresNaN() {
        assertEquals(1, RuntimeOps.argmax(new float[] {0, 5, 5, 1}, 0, 4));
        assertEquals(2, RuntimeOps.argmax(new float[] {9, Float.NaN, 0, 3}, 1, 3));
    }

    @Test
    void meanPoolSkipsMaskedPositions() {
        // [batch 2, seq 3, width 2]
        float[] a = {1, 2, 3, 4, 100, 100, /* row 1 */ 5, 6, 7, 8, 9, 10};
        assertArrayEquals(new double[] {2, 3}, RuntimeOps.meanPool(a, 0, 3, 2, new long[] {1, 1, 0}), 0);
        assertArrayEquals(new double[] {7, 8}, RuntimeOps.meanPool(a, 1, 3, 2, null), 0);
    }

    @Test
    void copiesOfBothLayouts() {
        double[] blocks = {1, 2, 3, 1, 2, 3};
        double[] inter = {1, 1, 2, 2, 3, 3};
        for (int k = 0; k < 2; k++) {
            assertArrayEquals(new double[] {1, 2, 3}, RuntimeOps.copy(blocks, 2, k, false), 0);
            assertArrayEquals(new double[] {1, 2, 3}, RuntimeOps.copy(inter, 2, k, true), 0);
        }
    }

    @Test
    void cosineEdgeCases() {
        assertEquals(1.0, RuntimeOps.cosine(new double[] {0, 0}, new double[] {0, 0}));
        assertEquals(0.0, RuntimeOps.cosine(new double[] {1, 0}, new double[] {0, 0}));
        assertEquals(-1.0, RuntimeOps.cosine(new double[] {1, 2}, new double[] {-2, -4}), 1e-15);
        assertTrue(Math.abs(RuntimeOps.cosine(new double[] {1, 0}, new double[] {0, 3})) < 1e-15);
    }
}
