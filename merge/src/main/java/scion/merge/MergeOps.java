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
     * Ranks order by magnitude, then by index (a stable sort); O(n) with two selections.
     */
    public static void keepMagnitudeRanks(float[] x, int lo, int hi) {
        int n = x.length;
        if (lo <= 0 && hi >= n) {
            return;
        }
        if (hi <= lo) {
            Arrays.fill(x, 0f);
            return;
        }
        // Elements of rank < lo: all below tLo, plus the first (lo - below) equal to it in index order.
        float tLo = lo > 0 ? magnitudeAtRank(x, lo) : Float.NEGATIVE_INFINITY;
        float tHi = hi < n ? magnitudeAtRank(x, hi - 1) : Float.POSITIVE_INFINITY;
        int belowLo = 0;
        int belowHi = 0;
        for (int i = 0; i < n; i++) {
            float a = Math.abs(x[i]);
            if (a < tLo) {
                belowLo++;
            }
            if (a < tHi) {
                belowHi++;
            }
        }
        int dropEqualLo = lo - belowLo; // how many elements equal to tLo have rank < lo
        int keepEqualHi = hi - belowHi; // how many elements equal to tHi have rank < hi
        int seenLo = 0;
        int seenHi = 0;
        for (int i = 0; i < n; i++) {
            float a = Math.abs(x[i]);
            boolean keep = a > tLo && a < tHi;
            if (a == tLo && a == tHi) {
                keep = seenLo >= dropEqualLo && seenHi < keepEqualHi;
                seenLo++;
                seenHi++;
            } else if (a == tLo) {
                keep = seenLo >= dropEqualLo && a < tHi;
                seenLo++;
            } else if (a == tHi) {
                keep = seenHi < keepEqualHi && a > tLo;
                seenHi++;
            }
            if (!keep) {
                x[i] = 0f;
            }
        }
    }

    /**
     * The {@code |x|} of ascending rank {@code k} (0-based) among {@code |x[i]|}: a two-pass radix select on the bits
     * of the magnitudes (non-negative floats order as their bit patterns), 16 bits per pass, no copy of {@code x}.
     */
    static float magnitudeAtRank(float[] x, int k) {
        int[] hist = new int[1 << 16];
        for (float v : x) {
            hist[(Float.floatToRawIntBits(v) & 0x7fffffff) >>> 16]++;
        }
        int hiBucket = 0;
        int before = 0;
        while (before + hist[hiBucket] <= k) {
            before += hist[hiBucket++];
        }
        java.util.Arrays.fill(hist, 0);
        for (float v : x) {
            int b = Float.floatToRawIntBits(v) & 0x7fffffff;
            if (b >>> 16 == hiBucket) {
                hist[b & 0xffff]++;
            }
        }
        int lo = 0;
        while (before + hist[lo] <= k) {
            before += hist[lo++];
        }
        return Float.intBitsToFloat((hiBucket << 16) | lo);
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
