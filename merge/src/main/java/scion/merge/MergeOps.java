package scion.merge;

import java.util.Arrays;

/** Numeric kernels shared by the merge methods: float32 arrays, row-major, in place where the name says so. */
public final class MergeOps {
    private MergeOps() {}

    /** {@code a -= b} in place. */
    public static void subInPlace(float[] a, float[] b) {
        for (int i = 0; i < a.length; i++) {
            a[i] -= b[i];
        }
    }

    /** Euclidean norm, accumulated in float64. */
    public static double norm(float[] a) {
        return Math.sqrt(dot(a, a));
    }

    /** Dot product, accumulated in float64. */
    public static double dot(float[] a, float[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) {
            s += (double) a[i] * b[i];
        }
        return s;
    }

    /** Sum of absolute values (L1 norm), accumulated in float64. */
    public static double l1(float[] a) {
        double s = 0;
        for (float v : a) {
            s += Math.abs(v);
        }
        return s;
    }

    /**
     * mergekit's norm-preserving rescale of a masked tensor: {@code masked · ‖x‖₁ / ‖masked‖₁}, unless either norm is
     * below {@code 1e-7}. {@code masked} is changed in place; {@code l1Before} is {@code ‖x‖₁} before masking.
     */
    public static void rescaleL1(float[] masked, double l1Before) {
        double after = l1(masked);
        if (l1Before < 1e-7 || after < 1e-7) {
            return;
        }
        float s = (float) (l1Before / after);
        for (int i = 0; i < masked.length; i++) {
            masked[i] *= s;
        }
    }

    /**
     * Keeps the elements whose ascending rank by {@code |x|} lies in {@code [lo, hi)} and zeroes the others, in place.
     * Ranks order by magnitude, then by index (a stable sort): the whole array as one block of {@link RankSelect}.
     */
    public static void keepMagnitudeRanks(float[] x, int lo, int hi) {
        RankSelect r = new RankSelect(x.length, Math.max(0, lo), Math.min(x.length, hi));
        if (!r.keepsAll() && hi > lo) {
            r.addHigh(RankSelect.highPartial(x));
            r.endHigh();
            r.addLow(r.lowPartial(x));
            r.endLow();
        }
        r.keep(x, 0);
    }

    /** Ascending ranks (0-based, ties by index) of {@code |x[off..off+n)|}. */
    static int[] magnitudeRanks(float[] x, int off, int n) {
        long[] keys = new long[n];
        for (int i = 0; i < n; i++) {
            int bits = Float.floatToIntBits(Math.abs(x[off + i])); // non-negative floats order as ints
            keys[i] = ((long) bits << 32) | i;
        }
        Arrays.sort(keys);
        int[] rank = new int[n];
        for (int r = 0; r < n; r++) {
            rank[(int) keys[r]] = r;
        }
        return rank;
    }

    /**
     * A uniform double in {@code [0, 1)} that is a function of {@code seed} and {@code index} alone (a counter-based
     * generator: the SplitMix64 finaliser of {@code seed + (index + 1)·γ}, 53 bits), so the elements of a tensor can be
     * drawn in any order, by any number of threads, with the same result.
     */
    public static double uniform(long seed, long index) {
        long z = seed + (index + 1) * 0x9E3779B97F4A7C15L;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        z = z ^ (z >>> 31);
        return (z >>> 11) * 0x1.0p-53;
    }
}
