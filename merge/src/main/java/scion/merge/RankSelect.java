package scion.merge;

import java.util.HashMap;
import java.util.Map;

/**
 * Exact order statistics of a tensor's magnitudes, gathered block by block: which {@code |x|} holds a given ascending
 * rank, how many elements lie below it, and how many equal it before each block, so that a block can apply "keep the
 * ranks in {@code [lo, hi)}, ties by index" (a stable sort) without seeing the rest of the tensor.
 *
 * <p>A two-pass radix select on the bits of {@code |x|} (non-negative floats order as their bit patterns): {@link
 * #high} counts the high 16 bits, {@link #low} the low 16 bits inside the buckets that hold the wanted ranks, {@link
 * #equal} the elements equal to each bound per block. Partial counts are computed per block on any thread ({@code
 * *Partial}) and added on one thread in element order ({@code add*}); integer counts, so the result does not depend on
 * the blocks. Two bounds at most: rank {@code lo} and rank {@code hi − 1}.
 */
final class RankSelect {
    private final long n;
    private long lo;
    private long hi;
    private long[] rank; // [lower bound's rank or -1, upper bound's rank or -1]
    private final long[] highCounts = new long[1 << 16];
    private final long[][] lowCounts = new long[2][1 << 16];
    private final int[] bucket = {-1, -1};
    private final long[] belowBucket = new long[2];
    private final float[] bound = {Float.NEGATIVE_INFINITY, Float.POSITIVE_INFINITY};
    private final long[] below;
    private final Map<Long, long[]> equalBefore = new HashMap<>();
    private final long[] equalRunning = new long[2];

    /** Selection of ascending ranks {@code [lo, hi)} among {@code n} elements ({@code 0 ≤ lo < hi ≤ n}). */
    RankSelect(long n, long lo, long hi) {
        this.n = n;
        this.below = new long[] {0, n};
        ranks(lo, hi);
    }

    /** Sets the kept ranks {@code [lo, hi)}; until {@link #endHigh}, they may depend on the counts of pass 1. */
    void ranks(long lo, long hi) {
        this.lo = lo;
        this.hi = hi;
        this.rank = new long[] {lo > 0 ? lo : -1, hi < n ? hi - 1 : -1};
    }

    /** Whether every element is kept (no statistics needed). */
    boolean keepsAll() {
        return lo <= 0 && hi >= n;
    }

    /** Pass 1, any thread: the high-16-bit histogram of {@code |x|}. */
    static int[] highPartial(float[] x) {
        int[] h = new int[1 << 16];
        for (float v : x) {
            h[(Float.floatToRawIntBits(v) & 0x7fffffff) >>> 16]++;
        }
        return h;
    }

    /** Pass 1, in element order. */
    void addHigh(int[] partial) {
        for (int i = 0; i < partial.length; i++) {
            highCounts[i] += partial[i];
        }
    }

    /** Ends pass 1: the buckets of the wanted ranks. */
    void endHigh() {
        for (int j = 0; j < 2; j++) {
            if (rank[j] < 0) {
                continue;
            }
            long before = 0;
            int b = 0;
            while (before + highCounts[b] <= rank[j]) {
                before += highCounts[b++];
            }
            bucket[j] = b;
            belowBucket[j] = before;
        }
    }

    /** Pass 2, any thread: low-16-bit histograms inside the two buckets. */
    int[][] lowPartial(float[] x) {
        int[][] h = new int[2][];
        for (int j = 0; j < 2; j++) {
            if (bucket[j] < 0) {
                continue;
            }
            h[j] = new int[1 << 16];
            for (float v : x) {
                int bits = Float.floatToRawIntBits(v) & 0x7fffffff;
                if (bits >>> 16 == bucket[j]) {
                    h[j][bits & 0xffff]++;
                }
            }
        }
        return h;
    }

    /** Pass 2, in element order. */
    void addLow(int[][] partial) {
        for (int j = 0; j < 2; j++) {
            if (partial[j] != null) {
                for (int i = 0; i < partial[j].length; i++) {
                    lowCounts[j][i] += partial[j][i];
                }
            }
        }
    }

    /** Ends pass 2: the bounds' values and how many elements lie strictly below each. */
    void endLow() {
        for (int j = 0; j < 2; j++) {
            if (bucket[j] < 0) {
                continue;
            }
            long before = belowBucket[j];
            int l = 0;
            while (before + lowCounts[j][l] <= rank[j]) {
                before += lowCounts[j][l++];
            }
            bound[j] = Float.intBitsToFloat((bucket[j] << 16) | l);
            below[j] = before;
        }
    }

    /**
     * Whether blocks need the count of equal elements before them: only when a bound splits its equals (some equal to
     * the lower bound dropped, or some equal to the upper bound kept and some not).
     */
    boolean needsEqualCounts() {
        long equalHi = bucket[1] < 0 ? 0 : lowCounts[1][Float.floatToRawIntBits(bound[1]) & 0xffff];
        return lo - below[0] > 0 || hi - below[1] < equalHi;
    }

    /** Pass 3, any thread: how many {@code |x|} equal each bound. */
    long[] equalPartial(float[] x) {
        long[] eq = new long[2];
        for (float v : x) {
            float a = Math.abs(v);
            if (a == bound[0]) {
                eq[0]++;
            }
            if (a == bound[1]) {
                eq[1]++;
            }
        }
        return eq;
    }

    /** Pass 3, in element order: the counts of the block starting at element {@code start}. */
    void addEqual(long start, long[] partial) {
        equalBefore.put(start, equalRunning.clone());
        equalRunning[0] += partial[0];
        equalRunning[1] += partial[1];
    }

    /**
     * Zeroes, in place, the elements of {@code x} (elements {@code [start, start + x.length)} of the tensor; a block
     * start seen by {@link #addEqual} when equal counts are needed) whose rank lies outside {@code [lo, hi)}.
     */
    void keep(float[] x, long start) {
        if (keepsAll()) {
            return;
        }
        if (hi <= lo) {
            java.util.Arrays.fill(x, 0f);
            return;
        }
        float tLo = bound[0];
        float tHi = bound[1];
        long dropEqualLo = lo - below[0];
        long keepEqualHi = hi - below[1];
        long[] seen = equalBefore.get(start);
        if (seen == null) {
            if (start != 0 && needsEqualCounts()) {
                throw new IllegalStateException("no equal counts before element " + start);
            }
            seen = new long[2];
        }
        long seenLo = seen[0];
        long seenHi = seen[1];
        for (int i = 0; i < x.length; i++) {
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
}
