package scion.lowrank;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.ejml.data.DMatrixRMaj;
import org.ejml.dense.row.CommonOps_DDRM;
import org.junit.jupiter.api.Test;
import scion.io.InvalidInputException;
import scion.lowrank.SvdLowRank.Method;
import scion.lowrank.SvdLowRank.Params;
import scion.lowrank.SvdLowRank.RankRule;
import scion.lowrank.SvdLowRank.RankRule.Kind;

/** Invariants of the kernels and of one-matrix factorisation: Eckart–Young, whitening, rank rules, refusals. */
class SvdLowRankTest {

    /** A matrix with a decaying spectrum, like a trained weight: U·diag(σ_i = 0.97^i)·Vᵀ plus small noise. */
    static DMatrixRMaj decaying(int m, int n, long seed) {
        Random r = new Random(seed);
        DMatrixRMaj a = gaussian(m, n, r);
        DMatrixRMaj b = gaussian(n, n, r);
        for (int j = 0; j < n; j++) {
            double s = Math.pow(0.97, j);
            for (int i = 0; i < n; i++) {
                b.set(j, i, b.get(j, i) * s);
            }
        }
        return LowRankOps.multiply(a, b);
    }

    static DMatrixRMaj gaussian(int m, int n, Random r) {
        DMatrixRMaj a = new DMatrixRMaj(m, n);
        for (int i = 0; i < a.data.length; i++) {
            a.data[i] = r.nextGaussian();
        }
        return a;
    }

    @Test
    void multiplyMatchesEjml() {
        Random r = new Random(1);
        for (int[] s : new int[][] {{1, 1, 1}, {3, 5, 7}, {130, 257, 513}, {64, 600, 33}}) {
            DMatrixRMaj a = gaussian(s[0], s[1], r);
            DMatrixRMaj b = gaussian(s[1], s[2], r);
            DMatrixRMaj expected = new DMatrixRMaj(s[0], s[2]);
            CommonOps_DDRM.mult(a, b, expected);
            DMatrixRMaj got = LowRankOps.multiply(a, b);
            // Same products, summed in another order: float64 rounding only.
            assertTrue(LowRankOps.frobeniusDistance(expected, got)
                    <= 1e-12 * CommonOps_DDRM.elementMaxAbs(expected) * Math.sqrt(expected.getNumElements()) * s[1]);
        }
    }

    @Test
    void exactSvdIsEckartYoungForEveryRank() {
        DMatrixRMaj w = decaying(120, 80, 2);
        LowRankOps.Svd svd = LowRankOps.exactSvd(w);
        for (int r : new int[] {1, 5, 20, 40, 79}) {
            DMatrixRMaj rec = LowRankOps.reconstruct(svd.truncate(r));
            double err = LowRankOps.frobeniusDistance(w, rec);
            double tail = LowRankOps.tail(svd.s(), r);
            // The bound: ‖W − Ŵ‖_F equals √(Σ_{i>r} σ_i²) within 1e-6 relative.
            assertEquals(tail, err, 1e-6 * tail, "rank " + r);
        }
    }

    @Test
    void fullRankReconstructs() {
        DMatrixRMaj w = decaying(50, 70, 3);
        DMatrixRMaj rec = LowRankOps.reconstruct(LowRankOps.exactSvd(w));
        double norm = CommonOps_DDRM.elementMaxAbs(w);
        assertTrue(LowRankOps.frobeniusDistance(w, rec) < 1e-12 * norm * 70, "full rank reconstructs W");
    }

    @Test
    void randomizedIsWithinOnePercentOfTheOptimum() {
        DMatrixRMaj w = decaying(300, 200, 4);
        LowRankOps.Svd exact = LowRankOps.exactSvd(w);
        for (int r : new int[] {10, 40}) {
            LowRankOps.Svd rs = LowRankOps.randomizedSvd(w, r, 10, 2, 7);
            double err = LowRankOps.frobeniusDistance(w, LowRankOps.reconstruct(rs));
            double optimum = LowRankOps.tail(exact.s(), r);
            assertTrue(err >= optimum * (1 - 1e-9), "never better than Eckart–Young");
            assertTrue(err <= optimum * 1.01, "rank " + r + ": " + err + " vs optimum " + optimum);
        }
    }

    @Test
    void randomizedOnOnnxRuntimeProductsIsWithinOnePercent() {
        DMatrixRMaj w = decaying(400, 300, 5);
        double optimum = LowRankOps.tail(LowRankOps.exactSvd(w).s(), 32);
        try (OrtMatMul ort = new OrtMatMul(2)) {
            LowRankOps.Svd rs = LowRankOps.randomizedSvd(w, 32, 10, 2, 7, ort);
            double err = LowRankOps.frobeniusDistance(w, LowRankOps.reconstruct(rs));
            assertTrue(err <= optimum * 1.01, err + " vs optimum " + optimum);
        }
    }

    @Test
    void randomizedIsDeterministicForASeed() {
        DMatrixRMaj w = decaying(100, 90, 6);
        LowRankOps.Svd a = LowRankOps.randomizedSvd(w, 8, 5, 1, 11);
        LowRankOps.Svd b = LowRankOps.randomizedSvd(w, 8, 5, 1, 11);
        LowRankOps.Svd c = LowRankOps.randomizedSvd(w, 8, 5, 0, 12);
        assertArrayEquals(a.s(), b.s(), 0.0);
        assertArrayEquals(a.u().data, b.u().data, 0.0);
        assertNotEquals(a.s()[7], c.s()[7]);
    }

    @Test
    void orthonormalizeFallsBackOnARankDeficientSketch() {
        Random r = new Random(8);
        DMatrixRMaj y = LowRankOps.multiply(gaussian(200, 3, r), gaussian(3, 10, r)); // rank 3, 10 columns
        DMatrixRMaj q = LowRankOps.orthonormalize(y);
        DMatrixRMaj qtq = LowRankOps.multiplyTransA(q, q);
        DMatrixRMaj eye = CommonOps_DDRM.identity(q.numCols);
        assertTrue(LowRankOps.frobeniusDistance(qtq, eye) < 1e-10, "Householder fallback gives orthonormal Q");
    }

    @Test
    void svdFactorErrorEqualsTheTail() {
        DMatrixRMaj w = decaying(96, 64, 9);
        Params p = Params.of(Method.SVD, new RankRule(Kind.RANK, 12));
        SvdLowRank.Result res = SvdLowRank.factor("w", w, p, null, null, LowRankOps.Products.JAVA);
        assertEquals(12, res.rank());
        assertEquals(res.tail(), res.relativeError(), 1e-6 * res.tail());
        assertEquals(12L * (96 + 64), res.parametersAfter());
        double direct = LowRankOps.frobeniusDistance(w, res.reconstruction()) / Math.sqrt(sq(w));
        assertEquals(direct, res.relativeError(), 1e-12);
    }

    @Test
    void svdLlmTruncationErrorIsTheWhitenedTail() {
        Random r = new Random(10);
        int out = 48;
        int in = 40;
        DMatrixRMaj w = decaying(out, in, 11);
        // Activations with very different column scales, as in a transformer.
        DMatrixRMaj x = gaussian(500, in, r);
        for (int j = 0; j < in; j++) {
            double s = j % 5 == 0 ? 20 : 0.5;
            for (int t = 0; t < 500; t++) {
                x.set(t, j, x.get(t, j) * s);
            }
        }
        DMatrixRMaj gram = LowRankOps.multiplyTransA(x, x);
        Params p = Params.of(Method.SVD_LLM, new RankRule(Kind.RANK, 10));
        SvdLowRank.Result res = SvdLowRank.factor("w", w, p, null, gram, LowRankOps.Products.JAVA);
        assertEquals(0, res.ridge(), "a full-rank XᵀX needs no ridge");
        // ‖(W − Ŵ)·Xᵀ‖_F / ‖W·Xᵀ‖_F equals the whitened tail.
        DMatrixRMaj delta = w.copy();
        CommonOps_DDRM.subtractEquals(delta, res.reconstruction());
        double outErr = Math.sqrt(sq(LowRankOps.multiplyTransB(delta, x)) / sq(LowRankOps.multiplyTransB(w, x)));
        assertEquals(res.tail(), outErr, 1e-6 * outErr);
        // And it beats plain SVD at the same rank on the output error.
        SvdLowRank.Result plain = SvdLowRank.factor(
                "w", w, Params.of(Method.SVD, new RankRule(Kind.RANK, 10)), null, null, LowRankOps.Products.JAVA);
        DMatrixRMaj d2 = w.copy();
        CommonOps_DDRM.subtractEquals(d2, plain.reconstruction());
        double plainOut = Math.sqrt(sq(LowRankOps.multiplyTransB(d2, x)) / sq(LowRankOps.multiplyTransB(w, x)));
        assertTrue(outErr < plainOut, outErr + " vs " + plainOut);
    }

    @Test
    void svdLlmAddsARidgeWhenXtxIsSingular() {
        Random r = new Random(12);
        DMatrixRMaj w = decaying(30, 20, 13);
        DMatrixRMaj x = gaussian(100, 20, r);
        for (int t = 0; t < 100; t++) {
            x.set(t, 3, 0); // a dead input feature: XᵀX is singular
        }
        DMatrixRMaj gram = LowRankOps.multiplyTransA(x, x);
        SvdLowRank.Result res = SvdLowRank.factor(
                "w", w, Params.of(Method.SVD_LLM, new RankRule(Kind.RANK, 5)), null, gram, LowRankOps.Products.JAVA);
        assertTrue(res.ridge() > 0, "ridge reported");
        assertTrue(res.note().contains("ridge"), res.note());
        for (double v : res.a().data) {
            assertTrue(Double.isFinite(v));
        }
    }

    @Test
    void asvdScalesByMeanAbsActivations() {
        DMatrixRMaj w = decaying(40, 30, 14);
        double[] mean = new double[30];
        for (int j = 0; j < 30; j++) {
            mean[j] = j < 3 ? 10 : 0.1;
        }
        SvdLowRank.Result res = SvdLowRank.factor(
                "w", w, Params.of(Method.ASVD, new RankRule(Kind.RANK, 6)), mean, null, LowRankOps.Products.JAVA);
        // The columns with large activations are kept better than by plain SVD.
        SvdLowRank.Result plain = SvdLowRank.factor(
                "w", w, Params.of(Method.SVD, new RankRule(Kind.RANK, 6)), null, null, LowRankOps.Products.JAVA);
        assertTrue(columnError(w, res.reconstruction(), 3) < columnError(w, plain.reconstruction(), 3));
        // Eckart–Young holds in the scaled space: ‖(W − Ŵ)·S‖ = tail of W·S.
        DMatrixRMaj d = w.copy();
        CommonOps_DDRM.subtractEquals(d, res.reconstruction());
        DMatrixRMaj ws = w.copy();
        for (int i = 0; i < 40; i++) {
            for (int j = 0; j < 30; j++) {
                double s = Math.pow(mean[j], 0.5);
                d.set(i, j, d.get(i, j) * s);
                ws.set(i, j, ws.get(i, j) * s);
            }
        }
        assertEquals(res.tail(), Math.sqrt(sq(d) / sq(ws)), 1e-6 * res.tail());
    }

    @Test
    void rankRules() {
        DMatrixRMaj w = decaying(64, 32, 15);
        // ratio: r = ⌊0.5·64·32/96⌋ = 10, and factors hold ≤ half the parameters.
        SvdLowRank.Result ratio = SvdLowRank.factor(
                "w", w, Params.of(Method.SVD, new RankRule(Kind.RATIO, 0.5)), null, null, LowRankOps.Products.JAVA);
        assertEquals(10, ratio.rank());
        assertTrue(ratio.parametersAfter() <= ratio.parametersBefore() / 2);
        // energy: the smallest rank keeping 90 %.
        SvdLowRank.Result energy = SvdLowRank.factor(
                "w", w, Params.of(Method.SVD, new RankRule(Kind.ENERGY, 0.9)), null, null, LowRankOps.Products.JAVA);
        double[] s = LowRankOps.exactSvd(w).s();
        assertTrue(LowRankOps.energy(s, energy.rank()) >= 0.9);
        assertTrue(LowRankOps.energy(s, energy.rank() - 1) < 0.9);
        assertEquals(LowRankOps.energy(s, energy.rank()), energy.keptEnergy(), 1e-12);
        // break-even: 64·32/96 = 21.33, so rank 22 stays dense and says so.
        SvdLowRank.Result dense = SvdLowRank.factor(
                "w", w, Params.of(Method.SVD, new RankRule(Kind.RANK, 22)), null, null, LowRankOps.Products.JAVA);
        assertTrue(dense.dense());
        assertEquals(dense.parametersBefore(), dense.parametersAfter());
        assertTrue(dense.note().contains("break-even"), dense.note());
        SvdLowRank.Result below = SvdLowRank.factor(
                "w", w, Params.of(Method.SVD, new RankRule(Kind.RANK, 21)), null, null, LowRankOps.Products.JAVA);
        assertEquals(21, below.rank());
    }

    @Test
    void randomizedEnergyRuleSketchesBelowBreakEven() {
        DMatrixRMaj w = decaying(64, 64, 16); // break-even 32
        SvdLowRank.Result exact = SvdLowRank.factor(
                "w", w, Params.of(Method.SVD, new RankRule(Kind.ENERGY, 0.6)), null, null, LowRankOps.Products.JAVA);
        SvdLowRank.Result rnd = SvdLowRank.factor(
                "w",
                w,
                Params.of(Method.RANDOMIZED, new RankRule(Kind.ENERGY, 0.6)),
                null,
                null,
                LowRankOps.Products.JAVA);
        assertTrue(exact.rank() > 0 && exact.rank() < 32, "exact rank " + exact.rank());
        assertTrue(Math.abs(rnd.rank() - exact.rank()) <= 1, rnd.rank() + " vs " + exact.rank());
        assertTrue(rnd.keptEnergy() >= 0.6);
    }

    @Test
    void badParametersAreRefusedNamingTheOption() {
        assertTrue(assertThrows(InvalidInputException.class, () -> new RankRule(Kind.RANK, 0))
                .getMessage()
                .startsWith("--rank"));
        assertTrue(assertThrows(InvalidInputException.class, () -> new RankRule(Kind.ENERGY, 1.5))
                .getMessage()
                .startsWith("--energy"));
        assertTrue(assertThrows(InvalidInputException.class, () -> new RankRule(Kind.RATIO, 0))
                .getMessage()
                .startsWith("--ratio"));
        assertTrue(assertThrows(InvalidInputException.class, () -> Method.parse("qr"))
                .getMessage()
                .startsWith("--method"));
    }

    @Test
    void choleskyRidgeGrowsUntilItFactors() {
        DMatrixRMaj g = new DMatrixRMaj(3, 3, true, 4, 2, 0, 2, 1, 0, 0, 0, 0); // rank 1 + a zero row
        LowRankOps.Cholesky c = LowRankOps.cholesky(g);
        assertTrue(c.ridge() > 0);
        DMatrixRMaj llt = LowRankOps.multiplyTransB(c.lower(), c.lower());
        for (int i = 0; i < 3; i++) {
            g.add(i, i, c.ridge());
        }
        assertTrue(LowRankOps.frobeniusDistance(g, llt) < 1e-9);
    }

    private static double sq(DMatrixRMaj m) {
        double s = 0;
        for (int i = 0; i < m.getNumElements(); i++) {
            s += m.data[i] * m.data[i];
        }
        return s;
    }

    private static double columnError(DMatrixRMaj w, DMatrixRMaj rec, int cols) {
        double s = 0;
        for (int i = 0; i < w.numRows; i++) {
            for (int j = 0; j < cols; j++) {
                double d = w.get(i, j) - rec.get(i, j);
                s += d * d;
            }
        }
        return s;
    }
}
