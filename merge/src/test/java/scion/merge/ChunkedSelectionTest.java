package scion.merge;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * Magnitude selection in blocks on task vectors full of equal magnitudes (as bf16 fine-tunes give): TIES and
 * breadcrumbs run block by block with many statistics blocks equal the old whole-tensor selection (a stable sort by
 * magnitude, ties by index, computed here by sorting) exactly, so the count of equal elements before each block is
 * carried right.
 */
class ChunkedSelectionTest {
    static final int ROWS = 48;
    static final int COLS = 20;
    static final int N = ROWS * COLS;

    /** A block-wise run the way {@link Merger} drives it: statistics blocks of {@code statRows}, same blocks applied. */
    static float[] blockwise(ChunkedMerge c, List<float[]> values, float[] base, int statRows) {
        int blocks = (ROWS + statRows - 1) / statRows;
        for (int p = 0; p < c.passes(); p++) {
            if (c.skip(p)) {
                continue;
            }
            for (int b = 0; b < blocks; b++) {
                c.accept(p, c.observe(p, block(values, base, b * statRows, statRows)));
            }
            c.endPass(p);
        }
        float[] out = new float[N];
        for (int b = 0; b < blocks; b++) {
            ChunkedMerge.Block blk = block(values, base, b * statRows, statRows);
            System.arraycopy(c.apply(blk), 0, out, (int) blk.start(), blk.length());
        }
        return out;
    }

    static ChunkedMerge.Block block(List<float[]> values, float[] base, int row0, int statRows) {
        int rows = Math.min(statRows, ROWS - row0);
        int start = row0 * COLS;
        int len = rows * COLS;
        List<float[]> v = new ArrayList<>();
        for (float[] x : values) {
            float[] y = new float[len];
            System.arraycopy(x, start, y, 0, len);
            v.add(y);
        }
        float[] b = new float[len];
        System.arraycopy(base, start, b, 0, len);
        return new ChunkedMerge.Block(start, len, row0, rows, v, b);
    }

    /** The old whole-tensor TIES / breadcrumbs: stable-rank selection, then sign consensus (or a plain sum). */
    static float[] reference(List<float[]> values, float[] base, float[] w, long[][] ranks, boolean consensus) {
        int m = values.size();
        float[][] dd = new float[m][];
        for (int k = 0; k < m; k++) {
            float[] d = values.get(k).clone();
            MergeOps.subInPlace(d, base);
            stableKeep(d, (int) ranks[k][0], (int) ranks[k][1]);
            for (int i = 0; i < N; i++) {
                d[i] *= w[k];
            }
            dd[k] = d;
        }
        float[] out = new float[N];
        float wsum = 0;
        for (float x : w) {
            wsum += x;
        }
        for (int i = 0; i < N; i++) {
            float mixed = 0;
            float div = 0;
            float s = 0;
            for (int k = 0; k < m; k++) {
                s += dd[k][i];
            }
            for (int k = 0; k < m; k++) {
                float v = dd[k][i];
                if (!consensus || (s >= 0 ? v > 0 : v < 0)) {
                    mixed += v;
                    div += w[k];
                }
            }
            if (consensus) {
                mixed /= div == 0 ? 1 : div;
            }
            out[i] = base[i] + mixed;
        }
        return out;
    }

    /** Zeroes the elements outside ascending ranks {@code [lo, hi)} by |x|, ties by index: a stable sort. */
    static void stableKeep(float[] d, int lo, int hi) {
        Integer[] idx = new Integer[d.length];
        for (int i = 0; i < d.length; i++) {
            idx[i] = i;
        }
        java.util.Arrays.sort(idx, (a, b) -> Float.compare(Math.abs(d[a]), Math.abs(d[b]))); // stable
        boolean[] keep = new boolean[d.length];
        for (int r = Math.max(0, lo); r < Math.min(d.length, hi); r++) {
            keep[idx[r]] = true;
        }
        for (int i = 0; i < d.length; i++) {
            if (!keep[i]) {
                d[i] = 0f;
            }
        }
    }

    @Test
    void selectionWithManyEqualMagnitudesMatchesTheStableSort() {
        SplittableRandom r = new SplittableRandom(5);
        float[] base = new float[N];
        List<float[]> values = new ArrayList<>();
        for (int i = 0; i < N; i++) {
            base[i] = r.nextInt(-4, 5) * 0.25f;
        }
        for (int k = 0; k < 3; k++) {
            float[] v = new float[N];
            for (int i = 0; i < N; i++) {
                v[i] = base[i] + r.nextInt(-3, 4) * 0.5f; // |δ| ∈ {0, 0.5, 1, 1.5}: hundreds of equals per value
            }
            values.add(v);
        }
        float[] w = {1f, 0.5f, 0.8f};
        List<MergeParams> per = new ArrayList<>();
        for (float x : w) {
            per.add(new MergeParams(Map.of("weight", (double) x, "density", 0.37, "gamma", 0.11)));
        }
        int checked = 0;
        for (MergeMethod method : TaskArithmeticMerge.all()) {
            boolean ties = method.id().equals("ties");
            boolean crumbs = method.id().equals("breadcrumbs_ties");
            if (!ties && !crumbs) {
                continue;
            }
            MergeParams global = new MergeParams(Map.of("normalize", true, "rescale", false, "lambda", 1.0));
            TensorSpec spec = new TensorSpec("w", null, 0, 1, new long[] {ROWS, COLS}, 3, -1, true, per, global, 9);
            long keep = (long) (0.37 * N);
            long top = ties ? 0 : (long) (0.11 * N);
            long[] rank = {N - keep - top, N - top};
            float[] want = reference(values, base, w, new long[][] {rank, rank, rank}, true);
            for (int statRows : new int[] {1, 5, 7, ROWS}) {
                List<float[]> copy = new ArrayList<>();
                values.forEach(v -> copy.add(v.clone()));
                float[] got = blockwise(method.chunked(spec), copy, base.clone(), statRows);
                assertArrayEquals(want, got, method.id() + " with statistics blocks of " + statRows + " rows");
                checked++;
            }
        }
        assertTrue(checked == 8, "ran both methods");
    }
}
