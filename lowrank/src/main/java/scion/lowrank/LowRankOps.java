package scion.lowrank;

import java.util.SplittableRandom;
import org.ejml.data.DMatrixRMaj;
import org.ejml.dense.row.CommonOps_DDRM;
import org.ejml.dense.row.SingularOps_DDRM;
import org.ejml.dense.row.factory.DecompositionFactory_DDRM;
import org.ejml.interfaces.decomposition.CholeskyDecomposition_F64;
import org.ejml.interfaces.decomposition.QRDecomposition;
import org.ejml.interfaces.decomposition.SingularValueDecomposition_F64;

/**
 * Numeric kernels of low-rank factorisation, in float64: a blocked multi-threaded matrix product, the exact thin SVD
 * (EJML), the randomized SVD of Halko, Martinsson &amp; Tropp (2011, Algorithms 4.4 and 5.1), Cholesky with a ridge
 * fallback, and triangular solves.
 *
 * <p>Matrices are EJML row-major {@link DMatrixRMaj}. EJML's own {@code CommonOps_DDRM.mult} is single-threaded and
 * unblocked for large operands; {@link #multiply} tiles the inner dimension and the output columns so that a tile of
 * the right operand stays in cache, and runs row blocks of the output in parallel (measured in {@code
 * test/bench/lowrank-svd.sh}).
 */
public final class LowRankOps {
    private LowRankOps() {}

    private static final int K_TILE = 128;
    private static final int J_TILE = 512;
    private static final int ROW_BLOCK = 32;

    /**
     * A thin SVD {@code W ≈ U·diag(s)·Vt}, singular values in descending order.
     *
     * @param u left singular vectors {@code [m, k]}
     * @param s singular values, descending, length k
     * @param vt right singular vectors, transposed {@code [k, n]}
     */
    public record Svd(DMatrixRMaj u, double[] s, DMatrixRMaj vt) {
        /** The number of singular triplets held. */
        public int size() {
            return s.length;
        }

        /** The first {@code r} triplets. */
        public Svd truncate(int r) {
            if (r >= s.length) {
                return this;
            }
            DMatrixRMaj u2 = CommonOps_DDRM.extract(u, 0, u.numRows, 0, r);
            DMatrixRMaj vt2 = CommonOps_DDRM.extract(vt, 0, r, 0, vt.numCols);
            double[] s2 = java.util.Arrays.copyOf(s, r);
            return new Svd(u2, s2, vt2);
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Products

    /** A matrix product kernel: {@link #JAVA} (float64, {@link LowRankOps#multiply}) or {@link OrtMatMul}. */
    public interface Products {
        /** {@code A·B}. */
        DMatrixRMaj multiply(DMatrixRMaj a, DMatrixRMaj b);

        /** A float64 product (the Gram matrices of the orthonormalisations need it); the Java kernel by default. */
        default Products exact() {
            return JAVA;
        }

        /** The blocked float64 Java kernel. */
        Products JAVA = LowRankOps::multiply;
    }

    /** {@code A·B} for {@code A [m, k]} and {@code B [k, n]}, multi-threaded over row blocks of the result. */
    public static DMatrixRMaj multiply(DMatrixRMaj a, DMatrixRMaj b) {
        if (a.numCols != b.numRows) {
            throw new IllegalArgumentException("inner dimensions differ: [" + a.numRows + ", " + a.numCols + "] · ["
                    + b.numRows + ", " + b.numCols + "]");
        }
        DMatrixRMaj c = new DMatrixRMaj(a.numRows, b.numCols);
        int m = a.numRows;
        long flops = (long) m * a.numCols * b.numCols;
        if (flops < 1 << 18 || m < 2 * ROW_BLOCK) {
            gemmRows(a.data, b.data, c.data, 0, m, a.numCols, b.numCols);
            return c;
        }
        int blocks = (m + ROW_BLOCK - 1) / ROW_BLOCK;
        // A parallel stream: the calling thread works too (the common pool alone has cores − 1 workers).
        java.util.stream.IntStream.range(0, blocks).parallel().forEach(blk -> {
            int r0 = blk * ROW_BLOCK;
            gemmRows(a.data, b.data, c.data, r0, Math.min(m, r0 + ROW_BLOCK), a.numCols, b.numCols);
        });
        return c;
    }

    /** {@code Aᵀ·B} for {@code A [k, m]} and {@code B [k, n]}. */
    public static DMatrixRMaj multiplyTransA(DMatrixRMaj a, DMatrixRMaj b) {
        return multiply(CommonOps_DDRM.transpose(a, null), b);
    }

    /** {@code A·Bᵀ} for {@code A [m, k]} and {@code B [n, k]}. */
    public static DMatrixRMaj multiplyTransB(DMatrixRMaj a, DMatrixRMaj b) {
        return multiply(a, CommonOps_DDRM.transpose(b, null));
    }

    /** Rows {@code [r0, r1)} of {@code C += A·B}: k and j tiled, four rows of C share each loaded row of B. */
    private static void gemmRows(double[] a, double[] b, double[] c, int r0, int r1, int kDim, int n) {
        for (int j0 = 0; j0 < n; j0 += J_TILE) {
            int j1 = Math.min(n, j0 + J_TILE);
            for (int k0 = 0; k0 < kDim; k0 += K_TILE) {
                int k1 = Math.min(kDim, k0 + K_TILE);
                int i = r0;
                for (; i + 3 < r1; i += 4) {
                    int c0 = i * n;
                    int c1 = c0 + n;
                    int c2 = c1 + n;
                    int c3 = c2 + n;
                    int a0 = i * kDim;
                    int a1 = a0 + kDim;
                    int a2 = a1 + kDim;
                    int a3 = a2 + kDim;
                    for (int k = k0; k < k1; k++) {
                        double v0 = a[a0 + k];
                        double v1 = a[a1 + k];
                        double v2 = a[a2 + k];
                        double v3 = a[a3 + k];
                        int bk = k * n;
                        for (int j = j0; j < j1; j++) {
                            double bv = b[bk + j];
                            c[c0 + j] += v0 * bv;
                            c[c1 + j] += v1 * bv;
                            c[c2 + j] += v2 * bv;
                            c[c3 + j] += v3 * bv;
                        }
                    }
                }
                for (; i < r1; i++) {
                    int ci = i * n;
                    int ai = i * kDim;
                    for (int k = k0; k < k1; k++) {
                        double v = a[ai + k];
                        int bk = k * n;
                        for (int j = j0; j < j1; j++) {
                            c[ci + j] += v * b[bk + j];
                        }
                    }
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // SVD

    /**
     * The exact thin SVD of {@code w [m, n]} (EJML's implicit-QR SVD, which bidiagonalises a tall matrix after a QR
     * step and transposes a wide one), singular values descending.
     */
    public static Svd exactSvd(DMatrixRMaj w) {
        int k = Math.min(w.numRows, w.numCols);
        SingularValueDecomposition_F64<DMatrixRMaj> svd =
                DecompositionFactory_DDRM.svd(w.numRows, w.numCols, true, true, true);
        if (!svd.decompose(w.copy())) {
            throw new IllegalStateException("SVD of a " + w.numRows + " × " + w.numCols + " matrix did not converge");
        }
        DMatrixRMaj u = svd.getU(null, false);
        DMatrixRMaj vt = svd.getV(null, true);
        double[] s = svd.getSingularValues().clone();
        SingularOps_DDRM.descendingOrder(u, false, s, k, vt, true);
        return new Svd(u, java.util.Arrays.copyOf(s, k), vt);
    }

    /** The singular values of {@code w} only, descending (cheaper than {@link #exactSvd}: no vectors). */
    public static double[] singularValues(DMatrixRMaj w) {
        int k = Math.min(w.numRows, w.numCols);
        SingularValueDecomposition_F64<DMatrixRMaj> svd =
                DecompositionFactory_DDRM.svd(w.numRows, w.numCols, false, false, true);
        if (!svd.decompose(w.copy())) {
            throw new IllegalStateException("SVD of a " + w.numRows + " × " + w.numCols + " matrix did not converge");
        }
        double[] s = java.util.Arrays.copyOf(svd.getSingularValues(), k);
        java.util.Arrays.sort(s);
        for (int i = 0; i < k / 2; i++) {
            double t = s[i];
            s[i] = s[k - 1 - i];
            s[k - 1 - i] = t;
        }
        return s;
    }

    /**
     * The randomized SVD (Halko, Martinsson &amp; Tropp 2011): a Gaussian sketch {@code Y = W·Ω} with {@code Ω [n, ℓ]},
     * ℓ = rank + oversampling, then {@code powerIterations} rounds of {@code Q ← orth(Wᵀ·Q)}, {@code Q ← orth(W·Q)}
     * (re-orthonormalised after every product, their Algorithm 4.4), then the exact SVD of the small {@code B = Qᵀ·W
     * [ℓ, n]}; {@code U = Q·U_B}. The first {@code rank} triplets are returned. Deterministic for a seed.
     */
    public static Svd randomizedSvd(DMatrixRMaj w, int rank, int oversampling, int powerIterations, long seed) {
        return randomizedSvd(w, rank, oversampling, powerIterations, seed, Products.JAVA);
    }

    /**
     * {@link #randomizedSvd(DMatrixRMaj, int, int, int, long)} with the sketch, power-iteration and projection
     * products ({@code W·Ω}, {@code Wᵀ·Q}, {@code W·Z}, {@code Qᵀ·W}) computed by {@code products}; the
     * orthonormalisations and the small SVD stay in float64.
     */
    public static Svd randomizedSvd(
            DMatrixRMaj w, int rank, int oversampling, int powerIterations, long seed, Products products) {
        int m = w.numRows;
        int n = w.numCols;
        int k = Math.min(m, n);
        int l = Math.min(k, rank + oversampling);
        if (l >= k) {
            return exactSvd(w).truncate(Math.min(rank, k));
        }
        SplittableRandom rnd = new SplittableRandom(seed);
        DMatrixRMaj omega = new DMatrixRMaj(n, l);
        for (int i = 0; i < omega.data.length; i++) {
            omega.data[i] = gaussian(rnd);
        }
        Products exact = products.exact();
        DMatrixRMaj q = orthonormalize(products.multiply(w, omega), exact);
        DMatrixRMaj wt = null;
        for (int it = 0; it < powerIterations; it++) {
            if (wt == null) {
                wt = CommonOps_DDRM.transpose(w, null);
            }
            DMatrixRMaj z = orthonormalize(products.multiply(wt, q), exact); // [n, l]
            q = orthonormalize(products.multiply(w, z), exact); // [m, l]
        }
        // B = Qᵀ·W [l, n] is wide: with Bᵀ = Q₂·R₂ (R₂ = Q₂ᵀ·Bᵀ, [l, l]) and R₂ᵀ = U_R·S·V_Rᵀ, B = U_R·S·(Q₂·V_R)ᵀ.
        DMatrixRMaj bt = products.multiply(wt == null ? CommonOps_DDRM.transpose(w, null) : wt, q); // [n, l]
        DMatrixRMaj q2 = orthonormalize(bt, exact);
        DMatrixRMaj r2t = exact.multiply(CommonOps_DDRM.transpose(bt, null), q2); // R₂ᵀ = B·Q₂ [l, l]
        Svd small = exactSvd(r2t);
        DMatrixRMaj u = exact.multiply(q, small.u()); // [m, l]
        DMatrixRMaj vt = exact.multiply(small.vt(), CommonOps_DDRM.transpose(q2, null)); // (Q₂·V_R)ᵀ [l, n]
        return new Svd(u, small.s(), vt).truncate(Math.min(rank, l));
    }

    private static double gaussian(SplittableRandom rnd) {
        // Box–Muller: SplittableRandom has no nextGaussian on Java 17.
        double u1 = rnd.nextDouble();
        double u2 = rnd.nextDouble();
        return Math.sqrt(-2 * Math.log1p(-u1)) * Math.cos(2 * Math.PI * u2);
    }

    /**
     * An orthonormal basis of the columns of {@code y [m, l]} (m ≥ l): CholeskyQR2 (two rounds of {@code G = YᵀY =
     * RᵀR}, {@code Y ← Y·R⁻¹}, whose products run on {@link #multiply}), falling back to Householder QR when the Gram
     * matrix is numerically singular (a rank-deficient sketch).
     */
    public static DMatrixRMaj orthonormalize(DMatrixRMaj y) {
        return orthonormalize(y, Products.JAVA);
    }

    /** {@link #orthonormalize(DMatrixRMaj)} with the Gram products {@code YᵀY} computed by {@code exact} (float64). */
    public static DMatrixRMaj orthonormalize(DMatrixRMaj y, Products exact) {
        DMatrixRMaj q = y;
        for (int round = 0; round < 2; round++) {
            DMatrixRMaj g = exact.multiply(CommonOps_DDRM.transpose(q, null), q);
            CholeskyDecomposition_F64<DMatrixRMaj> chol = DecompositionFactory_DDRM.chol(g.numRows, false);
            if (!chol.decompose(g)) {
                return householderQ(y);
            }
            DMatrixRMaj r = chol.getT(null); // upper: G = RᵀR
            double min = Double.POSITIVE_INFINITY;
            double max = 0;
            for (int i = 0; i < r.numRows; i++) {
                double d = Math.abs(r.get(i, i));
                min = Math.min(min, d);
                max = Math.max(max, d);
            }
            if (!(min > 1e-7 * max)) {
                return householderQ(y);
            }
            // Y·R⁻¹ as a product with the small inverse (l³), so the m·l² work runs on the product kernel.
            q = exact.multiply(q, invUpper(r));
        }
        return q;
    }

    /** The inverse of an upper-triangular matrix (back substitution on the identity). */
    static DMatrixRMaj invUpper(DMatrixRMaj r) {
        int l = r.numRows;
        DMatrixRMaj inv = new DMatrixRMaj(l, l);
        for (int j = 0; j < l; j++) {
            // column j of R⁻¹: R·x = e_j, x_i = 0 for i > j
            inv.set(j, j, 1.0 / r.get(j, j));
            for (int i = j - 1; i >= 0; i--) {
                double s = 0;
                for (int t = i + 1; t <= j; t++) {
                    s += r.get(i, t) * inv.get(t, j);
                }
                inv.set(i, j, -s / r.get(i, i));
            }
        }
        return inv;
    }

    private static DMatrixRMaj householderQ(DMatrixRMaj y) {
        QRDecomposition<DMatrixRMaj> qr = DecompositionFactory_DDRM.qr(y.numRows, y.numCols);
        if (!qr.decompose(y.copy())) {
            throw new IllegalStateException("QR of a " + y.numRows + " × " + y.numCols + " matrix failed");
        }
        return qr.getQ(null, true);
    }

    /** {@code X·R⁻¹} for upper-triangular {@code R [l, l]}: row by row forward substitution, rows in parallel. */
    static DMatrixRMaj solveUpperRight(DMatrixRMaj x, DMatrixRMaj r) {
        int m = x.numRows;
        int l = x.numCols;
        DMatrixRMaj out = new DMatrixRMaj(m, l);
        double[] rd = r.data;
        java.util.stream.IntStream.range(0, m).parallel().forEach(i -> {
            int base = i * l;
            for (int j = 0; j < l; j++) {
                double s = x.data[base + j];
                for (int t = 0; t < j; t++) {
                    s -= out.data[base + t] * rd[t * l + j];
                }
                out.data[base + j] = s / rd[j * l + j];
            }
        });
        return out;
    }

    /**
     * The lower Cholesky factor {@code L} of a symmetric matrix ({@code G = L·Lᵀ}). When G is not positive definite
     * (a dead input column gives a zero row), a ridge {@code λ·I} is added, starting at {@code 1e-8·mean(diag G)} and
     * growing ×10 until it factors; the ridge used is returned with the factor (0 when none was needed).
     */
    public static Cholesky cholesky(DMatrixRMaj g) {
        int n = g.numRows;
        double mean = 0;
        for (int i = 0; i < n; i++) {
            mean += g.get(i, i);
        }
        mean = n == 0 ? 0 : mean / n;
        double base = mean > 0 ? mean : 1.0;
        double ridge = 0;
        for (int attempt = 0; attempt < 16; attempt++) {
            DMatrixRMaj a = g.copy();
            for (int i = 0; i < n; i++) {
                a.add(i, i, ridge);
            }
            CholeskyDecomposition_F64<DMatrixRMaj> chol = DecompositionFactory_DDRM.chol(n, true);
            if (chol.decompose(a)) {
                DMatrixRMaj l = chol.getT(null);
                boolean ok = true;
                double maxD = 0;
                double minD = Double.POSITIVE_INFINITY;
                for (int i = 0; i < n; i++) {
                    double d = l.get(i, i);
                    ok &= d > 0 && Double.isFinite(d);
                    maxD = Math.max(maxD, d);
                    minD = Math.min(minD, d);
                }
                if (ok && minD > 1e-12 * maxD) {
                    return new Cholesky(l, ridge);
                }
            }
            ridge = ridge == 0 ? 1e-8 * base : ridge * 10;
        }
        throw new IllegalStateException("XᵀX is not positive definite even with a ridge of " + ridge);
    }

    /**
     * A Cholesky factor.
     *
     * @param lower {@code L} with {@code G + ridge·I = L·Lᵀ}
     * @param ridge the ridge that was added (0 when G factored as it is)
     */
    public record Cholesky(DMatrixRMaj lower, double ridge) {}

    /** {@code X·L⁻¹} for lower-triangular {@code L [n, n]}: back substitution per row, rows in parallel. */
    public static DMatrixRMaj solveLowerRight(DMatrixRMaj x, DMatrixRMaj lower) {
        int m = x.numRows;
        int n = x.numCols;
        DMatrixRMaj out = new DMatrixRMaj(m, n);
        double[] ld = lower.data;
        java.util.stream.IntStream.range(0, m).parallel().forEach(i -> {
            int base = i * n;
            for (int j = n - 1; j >= 0; j--) {
                double s = x.data[base + j];
                for (int t = j + 1; t < n; t++) {
                    s -= out.data[base + t] * ld[t * n + j];
                }
                out.data[base + j] = s / ld[j * n + j];
            }
        });
        return out;
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Small helpers

    /** The Frobenius norm of {@code a − b}. */
    public static double frobeniusDistance(DMatrixRMaj a, DMatrixRMaj b) {
        double s = 0;
        for (int i = 0; i < a.data.length && i < a.getNumElements(); i++) {
            double d = a.data[i] - b.data[i];
            s += d * d;
        }
        return Math.sqrt(s);
    }

    /** {@code √(Σ_{i ≥ r} s_i²)}: the Eckart–Young error of keeping the first r of {@code s}. */
    public static double tail(double[] s, int r) {
        double t = 0;
        for (int i = s.length - 1; i >= r; i--) {
            t += s[i] * s[i];
        }
        return Math.sqrt(t);
    }

    /** {@code Σ_{i < r} s_i² / Σ s_i²}; 1 for an all-zero spectrum. */
    public static double energy(double[] s, int r) {
        double kept = 0;
        double all = 0;
        for (int i = 0; i < s.length; i++) {
            double v = s[i] * s[i];
            all += v;
            if (i < r) {
                kept += v;
            }
        }
        return all > 0 ? kept / all : 1;
    }

    /** {@code U·diag(s)·Vt}. */
    public static DMatrixRMaj reconstruct(Svd svd) {
        DMatrixRMaj us = svd.u().copy();
        int r = svd.size();
        for (int i = 0; i < us.numRows; i++) {
            for (int j = 0; j < r; j++) {
                us.data[i * r + j] *= svd.s()[j];
            }
        }
        return multiply(us, svd.vt());
    }
}
