package scion.io.runtime.calibration;

import java.util.function.Consumer;

/**
 * Layer-similarity statistics of the residual stream, accumulated batch by batch: the tables layer pruning needs.
 *
 * <p>With x^l the residual stream entering layer l (x^L after the last layer, before the final norm), over the rows
 * the calibration delivers (the last token of each sequence, or every real token, as requested):
 *
 * <ul>
 *   <li>angular distance (Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper Layers", eq. 7):
 *       d(l, n) = mean over rows of arccos(cos(x^l, x^(l+n))) / π, for every start l = 0..L−1 and block length n =
 *       1..L−l; values in [0, 1];
 *   <li>block influence (Men et al. 2024, "ShortGPT", eq. 1): BI_l = 1 − mean cos(x^l, x^(l+1)), the input and
 *       output of layer l; the paper averages over every token (request {@link Calibration.Positions#ALL_TOKENS});
 *   <li>mean |x^l_j| per position and hidden dimension (residual-neuron importance for subcloning).
 * </ul>
 *
 * <p>Cosines are computed in float64 per row and averaged in float64. Memory: O(L² + L·hidden), whatever the token
 * count. Needs every position 0..L in the request ({@link Calibration.Request#withResidualStream()}).
 */
public final class ResidualStats implements Consumer<Calibration.Batch> {
    private final int layers;
    private final double[][] angular; // [L][L + 1]: sums of d(l, n)
    private final double[] cosNext; // [L]: sums of cos(x^l, x^(l+1))
    private double[][] absSums; // [L + 1][hidden]
    private long rows;

    /** Statistics for a model of {@code layers} layers (positions 0..layers). */
    public ResidualStats(int layers) {
        if (layers < 1) {
            throw new IllegalArgumentException("layers must be ≥ 1; found " + layers);
        }
        this.layers = layers;
        this.angular = new double[layers][layers + 1];
        this.cosNext = new double[layers];
    }

    @Override
    public void accept(Calibration.Batch batch) {
        Rows[] x = new Rows[layers + 1];
        for (int p = 0; p <= layers; p++) {
            x[p] = batch.residual(p);
        }
        int n = x[0].rows();
        int w = x[0].width();
        for (Rows r : x) {
            if (r.rows() != n || r.width() != w) {
                throw new IllegalStateException("residual taps disagree in shape: " + r.name() + " is " + r.rows()
                        + " × " + r.width() + ", residual.0 is " + n + " × " + w);
            }
        }
        if (absSums == null) {
            absSums = new double[layers + 1][w];
        }
        float[][] data = new float[layers + 1][];
        for (int p = 0; p <= layers; p++) {
            data[p] = x[p].data();
            CalibrationOps.addAbsColumnSums(data[p], n, w, absSums[p]);
        }
        int k = layers + 1;
        double[][] dots = new double[k * (k + 1) / 2][n];
        CalibrationOps.pairwiseRowDots(data, n, w, dots);
        int[] diag = new int[k]; // index of pair (p, p)
        for (int p = 1; p < k; p++) {
            diag[p] = diag[p - 1] + (k - p + 1);
        }
        for (int l = 0; l < layers; l++) {
            for (int m = l + 1; m <= layers; m++) {
                double[] ab = dots[diag[l] + (m - l)];
                double[] aa = dots[diag[l]];
                double[] bb = dots[diag[m]];
                double sum = 0;
                double cosSum = 0;
                for (int r = 0; r < n; r++) {
                    double c = cosine(ab[r], aa[r], bb[r]);
                    sum += CalibrationOps.angularDistance(c);
                    cosSum += c;
                }
                angular[l][m - l] += sum;
                if (m == l + 1) {
                    cosNext[l] += cosSum;
                }
            }
        }
        rows += n;
    }

    private static double cosine(double dot, double na, double nb) {
        if (na == 0 || nb == 0) {
            return na == 0 && nb == 0 ? 1 : 0;
        }
        return Math.max(-1, Math.min(1, dot / Math.sqrt(na * nb)));
    }

    /** Number of layers L. */
    public int layers() {
        return layers;
    }

    /** Rows (tokens) averaged so far. */
    public long rows() {
        return rows;
    }

    /** d(l, n): the mean angular distance between the stream entering layer l and entering layer l + n. */
    public double angularDistance(int l, int n) {
        if (l < 0 || n < 1 || l + n > layers) {
            throw new IllegalArgumentException(
                    "angular distance d(" + l + ", " + n + ") needs 0 ≤ l, 1 ≤ n, l + n ≤ " + layers);
        }
        return rows == 0 ? Double.NaN : angular[l][n] / rows;
    }

    /**
     * The full table: {@code t[l][n]} = d(l, n) for l = 0..L−1 and n = 1..L−l; other entries (n = 0, l + n > L) are
     * NaN. Shape {@code [L][L + 1]}.
     */
    public double[][] angularDistances() {
        double[][] t = new double[layers][layers + 1];
        for (int l = 0; l < layers; l++) {
            for (int n = 0; n <= layers; n++) {
                t[l][n] = n >= 1 && l + n <= layers ? angularDistance(l, n) : Double.NaN;
            }
        }
        return t;
    }

    /** The start l of the block of {@code n} layers with the smallest d(l, n) (the block to remove). */
    public int mostRedundantBlock(int n) {
        if (n < 1 || n > layers) {
            throw new IllegalArgumentException("block length " + n + " outside 1.." + layers);
        }
        int best = 0;
        for (int l = 1; l + n <= layers; l++) {
            if (angularDistance(l, n) < angularDistance(best, n)) {
                best = l;
            }
        }
        return best;
    }

    /** BI_l = 1 − mean cos(x^l, x^(l+1)) for l = 0..L−1. */
    public double[] blockInfluence() {
        double[] bi = new double[layers];
        for (int l = 0; l < layers; l++) {
            bi[l] = rows == 0 ? Double.NaN : 1 - cosNext[l] / rows;
        }
        return bi;
    }

    /** Mean |x^p_j| per hidden dimension j at stream position p (0..L). */
    public double[] meanAbs(int position) {
        if (position < 0 || position > layers) {
            throw new IllegalArgumentException("position " + position + " outside 0.." + layers);
        }
        if (absSums == null) {
            return new double[0];
        }
        double[] m = absSums[position].clone();
        for (int j = 0; j < m.length; j++) {
            m[j] /= rows;
        }
        return m;
    }
}
