package scion.io.runtime;

import java.util.Arrays;

/**
 * Numeric kernels of the judge: log-softmax, arg-max, mean pooling and cosine, on row-major float32 outputs with
 * double-precision accumulation.
 */
public final class RuntimeOps {
    private RuntimeOps() {}

    /**
     * {@code log softmax(x)[target]} of the row {@code x = a[offset, offset + n)}, computed in double as {@code (x_t -
     * max) - log Σ exp(x_i - max)}. Non-finite logits give a non-finite result.
     */
    public static double logSoftmaxAt(float[] a, int offset, int n, int target) {
        if (target < 0 || target >= n) {
            throw new IllegalArgumentException("target " + target + " outside [0, " + n + ")");
        }
        double max = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < n; i++) {
            max = Math.max(max, a[offset + i]);
        }
        double sum = 0;
        for (int i = 0; i < n; i++) {
            sum += Math.exp(a[offset + i] - max);
        }
        return (a[offset + target] - max) - Math.log(sum);
    }

    /** The index of the largest value in {@code a[offset, offset + n)} (the first one on ties; NaN never wins). */
    public static int argmax(float[] a, int offset, int n) {
        int best = 0;
        float v = Float.NEGATIVE_INFINITY;
        for (int i = 0; i < n; i++) {
            if (a[offset + i] > v) {
                v = a[offset + i];
                best = i;
            }
        }
        return best;
    }

    /**
     * The mean over the positions of one row of a {@code [batch, seq, width]} output where {@code mask} is 1 (all
     * positions when {@code mask} is null): a sentence embedding.
     *
     * @param a the output, row-major
     * @param b the batch row
     * @param mask {@code [seq]} attention mask of that row, or null
     */
    public static double[] meanPool(float[] a, int b, int seq, int width, long[] mask) {
        double[] out = new double[width];
        int n = 0;
        for (int s = 0; s < seq; s++) {
            if (mask != null && mask[s] == 0) {
                continue;
            }
            int base = (b * seq + s) * width;
            for (int j = 0; j < width; j++) {
                out[j] += a[base + j];
            }
            n++;
        }
        if (n > 0) {
            for (int j = 0; j < width; j++) {
                out[j] /= n;
            }
        }
        return out;
    }

    /** Cosine similarity; 1 for two zero vectors, 0 when only one is zero. */
    public static double cosine(double[] x, double[] y) {
        double dot = 0;
        double nx = 0;
        double ny = 0;
        for (int i = 0; i < x.length; i++) {
            dot += x[i] * y[i];
            nx += x[i] * x[i];
            ny += y[i] * y[i];
        }
        if (nx == 0 || ny == 0) {
            return nx == ny ? 1 : 0;
        }
        return dot / Math.sqrt(nx * ny);
    }

    /** The Euclidean norm. */
    public static double norm(double[] x) {
        double s = 0;
        for (double v : x) {
            s += v * v;
        }
        return Math.sqrt(s);
    }

    /**
     * Copy {@code k} of {@code n} of a vector that a grown model widened {@code n}×: {@code blocks} layout is {@code
     * [x; x; …]} (copy {@code k} at {@code [k·w, (k+1)·w)}), interleaved is {@code x₀…x₀ x₁…x₁} ({@code j·n + k}).
     */
    public static double[] copy(double[] wide, int n, int k, boolean interleaved) {
        int w = wide.length / n;
        if (!interleaved) {
            return Arrays.copyOfRange(wide, k * w, (k + 1) * w);
        }
        double[] out = new double[w];
        for (int j = 0; j < w; j++) {
            out[j] = wide[j * n + k];
        }
        return out;
    }
}
