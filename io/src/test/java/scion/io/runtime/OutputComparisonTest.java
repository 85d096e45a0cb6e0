package scion.io.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;
import scion.io.InvalidInputException;

class OutputComparisonTest {

    static RuntimeModel.Output out(long[] shape, float[] data) {
        return new RuntimeModel.Output("h", shape, data);
    }

    static float[] random(int n, long seed) {
        Random r = new Random(seed);
        float[] a = new float[n];
        for (int i = 0; i < n; i++) {
            a[i] = (float) r.nextGaussian();
        }
        return a;
    }

    @Test
    void identicalOutputsAreBitIdentical() {
        float[] a = random(2 * 3 * 4, 1);
        OutputComparison c = new OutputComparison("h");
        c.accept(out(new long[] {2, 3, 4}, a), out(new long[] {2, 3, 4}, a.clone()));
        OutputComparison.Result r = c.result();
        assertTrue(r.identical());
        assertEquals(0, r.worst().maxAbsDiff());
        assertEquals(0, r.worst().relativeError());
        assertEquals(1.0, r.worst().cosine(), 1e-15);
        assertEquals(1.0, r.spearman(), 1e-12);
        assertEquals("same", r.layout());
    }

    @Test
    void knownDifferenceGivesItsFigures() {
        float[] a = {1, -4, 2, 0};
        float[] b = {1, -4, 2.5f, 0.25f};
        OutputComparison c = new OutputComparison("h");
        c.accept(out(new long[] {1, 4}, a), out(new long[] {1, 4}, b));
        OutputComparison.CopyResult r = c.result().worst();
        assertFalse(r.identical());
        assertEquals(0.5, r.maxAbsDiff());
        assertEquals(0.75 / 4, r.meanAbsDiff(), 1e-15);
        assertEquals(4, r.maxAbsRef());
        assertEquals(0.125, r.relativeError(), "max|Δ| / max|ref| = 0.5 / 4");
        double dot = 1 + 16 + 5, na = 1 + 16 + 4, nb = 1 + 16 + 6.25 + 0.0625;
        assertEquals(dot / Math.sqrt(na * nb), r.cosine(), 1e-15);
    }

    @Test
    void negativeZeroIsCloseButNotBitIdenticalAndNaNOnOneSideIsInfinite() {
        OutputComparison c = new OutputComparison("h");
        c.accept(out(new long[] {2}, new float[] {0f, 1f}), out(new long[] {2}, new float[] {-0f, 1f}));
        assertFalse(c.result().identical());
        assertEquals(0, c.result().worst().relativeError());

        OutputComparison n = new OutputComparison("h");
        n.accept(out(new long[] {2}, new float[] {1f, 1f}), out(new long[] {2}, new float[] {Float.NaN, 1f}));
        assertEquals(Double.POSITIVE_INFINITY, n.result().worst().relativeError());
        assertFalse(new Expectation(false, 1e9).check(List.of(n.result())).passed(), "NaN never passes close");
    }

    /** A 3× wider candidate is compared copy by copy, in whichever layout it uses; a wrong copy is named. */
    @Test
    void widerCandidatesAreComparedCopyByCopy() {
        int rows = 5;
        int w = 8;
        float[] a = random(rows * w, 2);
        for (boolean inter : new boolean[] {false, true}) {
            float[] b = new float[rows * w * 3];
            for (int r = 0; r < rows; r++) {
                for (int j = 0; j < w; j++) {
                    for (int k = 0; k < 3; k++) {
                        int i = inter ? r * w * 3 + j * 3 + k : r * w * 3 + k * w + j;
                        b[i] = a[r * w + j] + (k == 2 ? 0.01f : 0f);
                    }
                }
            }
            OutputComparison c = new OutputComparison("h");
            c.accept(out(new long[] {1, rows, w}, a), out(new long[] {1, rows, w * 3}, b));
            OutputComparison.Result r = c.result();
            assertEquals(3, r.copies());
            assertEquals(inter ? "interleaved" : "blocks", r.layout());
            assertTrue(r.perCopy().get(0).identical());
            assertTrue(r.perCopy().get(1).identical());
            assertFalse(r.perCopy().get(2).identical());
            assertEquals(2, r.worst().copy());
            assertEquals(0.01, r.worst().maxAbsDiff(), 1e-6);
            Expectation.Verdict v = Expectation.parse("identical").check(List.of(r));
            assertFalse(v.passed());
            assertTrue(v.reason().startsWith("output 'h' copy 2 is not bit-identical"), v.reason());
        }
    }

    @Test
    void incompatibleShapesAreRefused() {
        OutputComparison c = new OutputComparison("h");
        InvalidInputException e = assertThrows(
                InvalidInputException.class,
                () -> c.accept(out(new long[] {1, 2, 4}, new float[8]), out(new long[] {1, 2, 6}, new float[12])));
        assertEquals(
                "CAND output 'h': shape does not match the reference; expected REF's [1, 2, 4] or an integer multiple"
                        + " of it in the last axis, found [1, 2, 6]",
                e.getMessage());
        assertEquals(0, OutputComparison.copiesOf(new long[] {2, 4}, new long[] {3, 8}));
        assertEquals(2, OutputComparison.copiesOf(new long[] {2, 4}, new long[] {2, 8}));
    }

    @Test
    void statisticsAccumulateOverBatches() {
        float[] a1 = random(100, 3);
        float[] a2 = random(100, 4);
        float[] b1 = a1.clone();
        float[] b2 = a2.clone();
        b2[7] += 0.5f;
        OutputComparison c = new OutputComparison("h");
        c.accept(out(new long[] {100}, a1), out(new long[] {100}, b1));
        c.accept(out(new long[] {100}, a2), out(new long[] {100}, b2));
        OutputComparison.Result r = c.result();
        assertEquals(200, r.values());
        assertEquals(0.5, r.worst().maxAbsDiff(), 1e-6);
        assertEquals(0, r.absDiffP50());
    }
}
