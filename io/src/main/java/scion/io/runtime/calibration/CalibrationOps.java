package scion.io.runtime.calibration;

/** Numeric kernels of the calibration accumulators: row cosines, column sums, Gram matrices in float64. */
public final class CalibrationOps {
    /** Rows per block of the Gram kernel: a block of X is converted to float64 once and reused for every tile. */
    private static final int ROW_BLOCK = 64;
    /** Tile edge of the Gram kernel: a 128 × 128 float64 tile (128 KiB) stays in L2 while a row block streams by. */
    private static final int TILE = 128;

    private CalibrationOps() {}

    /** Dot product of row {@code ra} of {@code a} and row {@code rb} of {@code b}, both {@code width} wide. */
    public static double dot(float[] a, int ra, float[] b, int rb, int width) {
        int oa = ra * width;
        int ob = rb * width;
        // Four independent float64 sums: the JIT does not vectorise a floating-point reduction, but it overlaps
        // independent chains (about 3× faster than one chain).
        double s0 = 0;
        double s1 = 0;
        double s2 = 0;
        double s3 = 0;
        int i = 0;
        for (; i + 4 <= width; i += 4) {
            s0 += (double) a[oa + i] * b[ob + i];
            s1 += (double) a[oa + i + 1] * b[ob + i + 1];
            s2 += (double) a[oa + i + 2] * b[ob + i + 2];
            s3 += (double) a[oa + i + 3] * b[ob + i + 3];
        }
        for (; i < width; i++) {
            s0 += (double) a[oa + i] * b[ob + i];
        }
        return (s0 + s1) + (s2 + s3);
    }

    /**
     * Cosine similarity of two rows, clamped to [−1, 1]. Zero rows: 1 when both are zero, 0 when one is (a vector
     * with no direction is treated as orthogonal to any other).
     */
    public static double cosine(float[] a, int ra, float[] b, int rb, int width) {
        double na = dot(a, ra, a, ra, width);
        double nb = dot(b, rb, b, rb, width);
        if (na == 0 || nb == 0) {
            return na == 0 && nb == 0 ? 1 : 0;
        }
        double c = dot(a, ra, b, rb, width) / Math.sqrt(na * nb);
        return Math.max(-1, Math.min(1, c));
    }

    /**
     * Row-wise dot products of every pair of {@code k} matrices {@code [rows, width]}: {@code out[pair][r] = x[l][r, ·]
     * · x[m][r, ·]} for every l ≤ m, pairs in order (0,0), (0,1), …, (0,k−1), (1,1), …, products and sums in float64.
     * Rows go through in blocks of 64, converted to float64 feature-major once, so that the inner loop runs across
     * rows (independent sums, which the JIT vectorises) instead of one sequential sum per row: twice as fast as
     * {@link #dot} per pair.
     */
    public static void pairwiseRowDots(float[][] x, int rows, int width, double[][] out) {
        int k = x.length;
        int b = ROW_BLOCK;
        double[][] t = new double[k][width * b]; // [k][width][b]
        double[] acc = new double[b];
        for (int r0 = 0; r0 < rows; r0 += b) {
            int nb = Math.min(b, rows - r0);
            for (int p = 0; p < k; p++) {
                float[] src = x[p];
                double[] dst = t[p];
                for (int rr = 0; rr < nb; rr++) {
                    int o = (r0 + rr) * width;
                    for (int j = 0; j < width; j++) {
                        dst[j * b + rr] = src[o + j];
                    }
                }
            }
            int pair = 0;
            for (int l = 0; l < k; l++) {
                for (int m = l; m < k; m++, pair++) {
                    java.util.Arrays.fill(acc, 0);
                    double[] a = t[l];
                    double[] c = t[m];
                    for (int j = 0; j < width; j++) {
                        int o = j * b;
                        for (int rr = 0; rr < b; rr++) {
                            acc[rr] += a[o + rr] * c[o + rr];
                        }
                    }
                    System.arraycopy(acc, 0, out[pair], r0, nb);
                }
            }
        }
    }

    /** The angular distance arccos(cos)/π ∈ [0, 1] (Gromov et al. 2024, eq. 7). */
    public static double angularDistance(double cosine) {
        return Math.acos(Math.max(-1, Math.min(1, cosine))) / Math.PI;
    }

    /** {@code sums[j] += Σ_r |x[r, j]|} over the {@code rows × width} row-major matrix {@code x}. */
    public static void addAbsColumnSums(float[] x, int rows, int width, double[] sums) {
        for (int r = 0; r < rows; r++) {
            int o = r * width;
            for (int j = 0; j < width; j++) {
                sums[j] += Math.abs(x[o + j]);
            }
        }
    }

    /**
     * {@code g += XᵀX} on the upper triangle (j ≥ i) of the row-major {@code width × width} float64 matrix {@code g},
     * X being the {@code rows × width} row-major float32 matrix {@code x}; every product and sum in float64. Call
     * {@link #mirrorUpper} once at the end. Tiled: rows in blocks of 64 converted to float64, the triangle in 128 × 128
     * tiles, four rows per pass so each tile element is loaded and stored once per four rank-1 updates.
     */
    public static void addGramUpper(float[] x, int rows, int width, double[] g) {
        double[] blk = new double[ROW_BLOCK * width];
        for (int r0 = 0; r0 < rows; r0 += ROW_BLOCK) {
            int nr = Math.min(ROW_BLOCK, rows - r0);
            for (int k = 0; k < nr * width; k++) {
                blk[k] = x[r0 * width + k];
            }
            for (int i0 = 0; i0 < width; i0 += TILE) {
                int i1 = Math.min(width, i0 + TILE);
                for (int j0 = i0; j0 < width; j0 += TILE) {
                    int j1 = Math.min(width, j0 + TILE);
                    tile(blk, nr, width, g, i0, i1, j0, j1);
                }
            }
        }
    }

    private static void tile(double[] x, int nr, int width, double[] g, int i0, int i1, int j0, int j1) {
        int r = 0;
        for (; r + 4 <= nr; r += 4) {
            int o0 = r * width;
            int o1 = o0 + width;
            int o2 = o1 + width;
            int o3 = o2 + width;
            for (int i = i0; i < i1; i++) {
                double a0 = x[o0 + i];
                double a1 = x[o1 + i];
                double a2 = x[o2 + i];
                double a3 = x[o3 + i];
                int gi = i * width;
                for (int j = Math.max(j0, i); j < j1; j++) {
                    g[gi + j] += a0 * x[o0 + j] + a1 * x[o1 + j] + a2 * x[o2 + j] + a3 * x[o3 + j];
                }
            }
        }
        for (; r < nr; r++) {
            int o = r * width;
            for (int i = i0; i < i1; i++) {
                double a = x[o + i];
                int gi = i * width;
                for (int j = Math.max(j0, i); j < j1; j++) {
                    g[gi + j] += a * x[o + j];
                }
            }
        }
    }

    /** Copies the upper triangle of the row-major {@code width × width} matrix {@code g} onto its lower triangle. */
    public static void mirrorUpper(double[] g, int width) {
        for (int i = 0; i < width; i++) {
            for (int j = i + 1; j < width; j++) {
                g[j * width + i] = g[i * width + j];
            }
        }
    }
}
