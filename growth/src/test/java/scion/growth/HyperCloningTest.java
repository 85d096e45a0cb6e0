package scion.growth;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Random;
import org.junit.jupiter.api.Test;
import scion.growth.HyperCloning.KvMode;
import scion.growth.HyperCloning.Params;
import scion.growth.HyperCloning.Plan;
import scion.growth.HyperCloning.WeightGrowth;
import scion.io.InvalidInputException;
import scion.io.arch.Architecture;
import scion.io.arch.Architectures;
import scion.io.arch.Dims;
import scion.io.arch.Role;
import scion.io.arch.WeightSpec;
import scion.io.tensor.BufferTensor;
import scion.io.tensor.DType;
import scion.io.tensor.Tensor;

/**
 * The per-weight rules of HyperCloning, checked numerically on small random weights: a linear layer maps copies to
 * copies, attention keeps every head reading its own key/value group (GQA grow and keep, MQA, fused QKV layouts), the
 * tied head's fold into the final norm, and the noise's zero sum, power and determinism.
 */
class HyperCloningTest {
    /** float32 accumulation over at most a few hundred terms of size ~1: well below 1e-5 relative. */
    private static final double TOL = 1e-5;

    private static final Dims LLAMA = new Dims(8, 1, 4, 2, 2, 12, 10, 0, 0, false);

    private static Architecture arch(String family) {
        return Architectures.byFamily(family).orElseThrow();
    }

    private static WeightSpec spec(Architecture a, Role role, boolean bias) {
        return a.weights().stream()
                .filter(s -> s.role() == role && s.bias() == bias)
                .findFirst()
                .orElseThrow();
    }

    private static float[] random(Random r, int n) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) r.nextGaussian();
        }
        return v;
    }

    private static float[] tile(float[] x, int n) {
        float[] out = new float[x.length * n];
        for (int c = 0; c < n; c++) {
            System.arraycopy(x, 0, out, c * x.length, x.length);
        }
        return out;
    }

    /** y = W x for W [out, in] row-major. */
    private static float[] matvec(float[] w, int out, int in, float[] x) {
        float[] y = new float[out];
        for (int o = 0; o < out; o++) {
            double s = 0;
            for (int i = 0; i < in; i++) {
                s += (double) w[o * in + i] * x[i];
            }
            y[o] = (float) s;
        }
        return y;
    }

    private static float[] transpose(float[] w, int rows, int cols) {
        float[] t = new float[w.length];
        for (int i = 0; i < rows; i++) {
            for (int j = 0; j < cols; j++) {
                t[j * rows + i] = w[i * cols + j];
            }
        }
        return t;
    }

    private static void assertClose(float[] expected, float[] actual, double tol) {
        assertEquals(expected.length, actual.length, "length");
        double max = 1e-30;
        for (float v : expected) {
            max = Math.max(max, Math.abs(v));
        }
        for (int i = 0; i < expected.length; i++) {
            double rel = Math.abs(expected[i] - actual[i]) / max;
            assertTrue(rel <= tol, "element " + i + ": expected " + expected[i] + ", found " + actual[i]);
        }
    }

    @Test
    void linearWeightIsBlockMatrixOfWOverInFactor() {
        Architecture a = arch("llama");
        Plan plan = HyperCloning.plan(a, LLAMA, Params.exact(2, 3), true);
        Random r = new Random(1);
        float[] up = random(r, 12 * 8); // [ffn, hidden]
        WeightGrowth g = plan.grow(spec(a, Role.MLP_UP, false), false, "up", new long[] {12, 8});
        assertArrayEquals(new long[] {36, 16}, g.grownShape());
        float[] grown = g.apply(up);
        for (int i = 0; i < 36; i++) {
            for (int j = 0; j < 16; j++) {
                assertEquals(up[(i % 12) * 8 + j % 8] / 2, grown[i * 16 + j], 0f, "(" + i + ", " + j + ")");
            }
        }
        float[] down = random(r, 8 * 12); // [hidden, ffn]
        float[] d = plan.grow(spec(a, Role.MLP_DOWN, false), false, "down", new long[] {8, 12})
                .apply(down);
        // f = 3: copies 0 and 1 hold W/3 on W's grid, the last one the remainder, so the three sum to W exactly.
        for (int o = 0; o < 16; o++) {
            for (int i = 0; i < 12; i++) {
                float w = down[(o % 8) * 12 + i];
                float c0 = d[o * 36 + i];
                assertEquals(w / 3, c0, Math.ulp(w));
                assertEquals(c0, d[o * 36 + 12 + i], 0f);
                assertEquals((double) w, (double) c0 + d[o * 36 + 12 + i] + d[o * 36 + 24 + i], 0.0);
            }
        }
    }

    @Test
    void everyLinearMapsCopiesToCopiesWithNoise() {
        Architecture a = arch("llama");
        Plan plan = HyperCloning.plan(a, LLAMA, Params.withNoise(3, 2, 7), true);
        Random r = new Random(2);
        for (Role role : new Role[] {Role.ATTN_Q, Role.ATTN_K, Role.ATTN_O, Role.MLP_GATE, Role.MLP_DOWN}) {
            WeightSpec s = spec(a, role, false);
            int out = (int) LLAMA.size(s.axes().get(0));
            int in = (int) LLAMA.size(s.axes().get(1));
            float[] w = random(r, out * in);
            WeightGrowth g = plan.grow(s, false, role.id(), new long[] {out, in});
            assertTrue(g.hasNoise(), role.id());
            float[] grown = g.apply(w);
            int gOut = (int) g.grownShape()[0];
            int gIn = (int) g.grownShape()[1];
            float[] x = random(r, in);
            // The input as the grown model sees it: copies ordered by the in-axis map.
            HyperCloning.AxisMap inMap = plan.map(s.axes().get(1));
            HyperCloning.AxisMap outMap = plan.map(s.axes().get(0));
            float[] gx = new float[gIn];
            for (int j = 0; j < gIn; j++) {
                gx[j] = x[inMap.source(j)];
            }
            float[] y = matvec(w, out, in, x);
            float[] gy = matvec(grown, gOut, gIn, gx);
            float[] expected = new float[gOut];
            for (int i = 0; i < gOut; i++) {
                expected[i] = y[outMap.source(i)];
            }
            assertClose(expected, gy, TOL);
        }
    }

    @Test
    void noiseSumsToZeroOverInputCopiesAndHasTheStatedPower() {
        Architecture a = arch("llama");
        Dims big = new Dims(64, 1, 4, 4, 16, 128, 10, 0, 0, false);
        double snr = 20;
        Plan plan = HyperCloning.plan(a, big, new Params(2, 1, KvMode.GROW, snr, 42), true);
        float[] w = random(new Random(3), 128 * 64);
        float[] g = plan.grow(spec(a, Role.MLP_UP, false), false, "up", new long[] {128, 64})
                .apply(w);
        double noise = 0;
        double signal = 0;
        double maxPairSum = 0;
        for (int i = 0; i < 128; i++) {
            for (int j = 0; j < 64; j++) {
                double b0 = g[i * 128 + j];
                double b1 = g[i * 128 + 64 + j];
                double half = w[i * 64 + j] / 2.0;
                maxPairSum = Math.max(maxPairSum, Math.abs(b0 + b1 - 2 * half));
                noise += (b0 - half) * (b0 - half);
                signal += half * half;
                assertEquals(b0 - half, -(b1 - half), 1e-6, "+N / −N on the paired input copies");
            }
        }
        assertTrue(maxPairSum < 1e-6, "pairs sum to W: " + maxPairSum);
        double measured = 10 * Math.log10(signal / noise);
        assertEquals(snr, measured, 0.3, "SNR in dB");
        assertTrue(noise > 0, "copies differ");
    }

    /**
     * bf16 output with noise: W/2 + N and W/2 − N rounded separately would not sum to W; the last copy takes the
     * remainder, so the copies of every element sum to the bf16 source weight exactly (also for f = 3).
     */
    @Test
    void noisyBf16CopiesSumToTheSourceExactly() {
        Architecture a = arch("llama");
        for (int f : new int[] {2, 3}) {
            Plan plan = HyperCloning.plan(a, LLAMA, Params.withNoise(f, 1, 8), true);
            WeightSpec s = spec(a, Role.ATTN_O, false);
            Tensor src = BufferTensor.encode("o", DType.BF16, new long[] {8, 8}, random(new Random(f), 64));
            float[] w = src.toFloats();
            float[] g = plan.grow(s, false, "o", src.shape())
                    .tensor(src, DType.BF16)
                    .toFloats();
            // And the same for [in, out] storage (rows are the input copies).
            Tensor srcT = BufferTensor.encode("o", DType.BF16, new long[] {8, 8}, transpose(w, 8, 8));
            float[] gt = plan.grow(s, true, "o", srcT.shape())
                    .tensor(srcT, DType.BF16)
                    .toFloats();
            int n = 8 * f;
            int differ = 0;
            for (int o = 0; o < n; o++) {
                for (int i = 0; i < 8; i++) {
                    double sum = 0;
                    double sumT = 0;
                    for (int b = 0; b < f; b++) {
                        sum += g[o * n + b * 8 + i];
                        sumT += gt[(b * 8 + i) * n + o];
                        differ += g[o * n + b * 8 + i] != g[o * n + i] ? 1 : 0;
                    }
                    assertEquals(w[(o % 8) * 8 + i], sum, 0.0, "f=" + f + " (" + o + ", " + i + ")");
                    assertEquals(w[(o % 8) * 8 + i], sumT, 0.0, "transposed f=" + f + " (" + o + ", " + i + ")");
                }
            }
            assertTrue(differ > n * 8 * (f - 1) * 0.9, "the copies differ: " + differ);
        }
    }

    /**
     * A bf16 weight whose grown bytes (12 MiB) span several row blocks: the same bytes for 1, 2 and 4 threads and for
     * reads in one piece, in the writer's 4 MiB chunks and in odd pieces; the input copies of each element sum to the
     * source weight exactly, and the noise has the stated power (20 dB, within 0.3 dB); an f32 grown tensor read
     * with 3 threads equals {@link WeightGrowth#apply}.
     */
    @Test
    void sameBytesForAnyThreadCountAndReadPattern() {
        Architecture a = arch("llama");
        int ffn = 1024;
        int hidden = 1536;
        Dims d = new Dims(hidden, 1, 12, 12, 128, ffn, 10, 0, 0, false);
        Plan plan = HyperCloning.plan(a, d, Params.withNoise(2, 2, 11), true);
        WeightGrowth up = plan.grow(spec(a, Role.MLP_UP, false), false, "up", new long[] {ffn, hidden});
        float[] v = random(new Random(12), ffn * hidden);
        for (int i = 0; i < v.length; i++) {
            v[i] *= 0.02f;
        }
        Tensor src = BufferTensor.encode("up", DType.BF16, new long[] {ffn, hidden}, v);
        float[] w = src.toFloats();
        byte[] reference = null;
        int[][] patterns = {{Integer.MAX_VALUE}, {4 << 20}, {1 << 20, 3_000_007, 77}};
        for (int threads : new int[] {1, 2, 4}) {
            for (int[] pattern : patterns) {
                Tensor t = up.tensor(src, DType.BF16, RowWorkers.of(threads));
                byte[] bytes = new byte[(int) t.byteSize()];
                int at = 0;
                for (int k = 0; at < bytes.length; k++) {
                    int len = Math.min(pattern[k % pattern.length], bytes.length - at);
                    ByteBuffer part = ByteBuffer.wrap(bytes, at, len);
                    t.readBytes(at, part);
                    assertEquals(0, part.remaining(), "read filled");
                    at += len;
                }
                if (reference == null) {
                    reference = bytes;
                } else {
                    assertArrayEquals(reference, bytes, threads + " threads, reads of " + pattern[0] + " bytes");
                }
            }
        }
        assertEquals(2L * ffn * 2 * hidden * 2, reference.length);
        ByteBuffer b = ByteBuffer.wrap(reference).order(ByteOrder.LITTLE_ENDIAN);
        double noise = 0;
        double signal = 0;
        for (int r = 0; r < 2 * ffn; r++) {
            for (int i = 0; i < hidden; i++) {
                float b0 = Float.intBitsToFloat((b.getShort((r * 2 * hidden + i) * 2) & 0xffff) << 16);
                float b1 = Float.intBitsToFloat((b.getShort((r * 2 * hidden + hidden + i) * 2) & 0xffff) << 16);
                float source = w[(r % ffn) * hidden + i];
                assertEquals(source, (double) b0 + b1, 0.0, "copies sum to W at (" + r + ", " + i + ")");
                double half = source / 2.0;
                noise += (b0 - half) * (b0 - half);
                signal += half * half;
            }
        }
        assertEquals(20, 10 * Math.log10(signal / noise), 0.3, "SNR in dB");
        Tensor f32 = BufferTensor.ofFloats("up", new long[] {ffn, hidden}, w);
        assertArrayEquals(
                up.apply(w), up.tensor(f32, DType.F32, RowWorkers.of(3)).toFloats());
    }

    @Test
    void sameSeedSameNoiseAndTheLazyTensorEqualsApply() {
        Architecture a = arch("llama");
        WeightSpec s = spec(a, Role.MLP_DOWN, false);
        float[] w = random(new Random(4), 8 * 12);
        Tensor src = BufferTensor.ofFloats("down", new long[] {8, 12}, w);
        float[] a1 = HyperCloning.plan(a, LLAMA, Params.withNoise(2, 2, 9), true)
                .grow(s, false, "down", src.shape())
                .apply(w);
        float[] a2 = HyperCloning.plan(a, LLAMA, Params.withNoise(2, 2, 9), true)
                .grow(s, false, "down", src.shape())
                .apply(w);
        float[] b = HyperCloning.plan(a, LLAMA, Params.withNoise(2, 2, 10), true)
                .grow(s, false, "down", src.shape())
                .apply(w);
        assertArrayEquals(a1, a2);
        assertFalse(java.util.Arrays.equals(a1, b), "another seed gives other noise");
        Tensor lazy = HyperCloning.plan(a, LLAMA, Params.withNoise(2, 2, 9), true)
                .grow(s, false, "down", src.shape())
                .tensor(src, DType.F32);
        assertArrayEquals(new long[] {16, 24}, lazy.shape());
        assertArrayEquals(a1, lazy.toFloats());
        // Reads at odd offsets and lengths see the same bytes.
        ByteBuffer all = ByteBuffer.allocate((int) lazy.byteSize()).order(ByteOrder.LITTLE_ENDIAN);
        lazy.readBytes(0, all);
        ByteBuffer part = ByteBuffer.allocate(37);
        lazy.readBytes(101, part);
        for (int i = 0; i < 37; i++) {
            assertEquals(all.get(101 + i), part.get(i));
        }
    }

    @Test
    void transposedStorageGivesTheTransposedGrowthWithTheSameNoise() {
        Architecture a = arch("llama");
        WeightSpec s = spec(a, Role.ATTN_O, false);
        Plan plan = HyperCloning.plan(a, LLAMA, Params.withNoise(2, 1, 5), true);
        float[] w = random(new Random(6), 8 * 8);
        float[] g = plan.grow(s, false, "o", new long[] {8, 8}).apply(w);
        float[] gt = plan.grow(s, true, "o", new long[] {8, 8}).apply(transpose(w, 8, 8));
        assertArrayEquals(transpose(g, 16, 16), gt);
    }

    /** Single-sequence attention without positions: heads read kv group h / (heads / kvHeads). */
    private static float[][] attention(
            float[] wq, float[] wk, float[] wv, float[] wo, float[][] xs, int hidden, int heads, int kv, int hd) {
        int t = xs.length;
        float[][] q = new float[t][];
        float[][] k = new float[t][];
        float[][] v = new float[t][];
        for (int i = 0; i < t; i++) {
            q[i] = matvec(wq, heads * hd, hidden, xs[i]);
            k[i] = matvec(wk, kv * hd, hidden, xs[i]);
            v[i] = matvec(wv, kv * hd, hidden, xs[i]);
        }
        float[][] out = new float[t][];
        int group = heads / kv;
        for (int i = 0; i < t; i++) {
            float[] ctx = new float[heads * hd];
            for (int h = 0; h < heads; h++) {
                int g = h / group;
                double[] s = new double[i + 1];
                double max = Double.NEGATIVE_INFINITY;
                for (int j = 0; j <= i; j++) {
                    double d = 0;
                    for (int e = 0; e < hd; e++) {
                        d += q[i][h * hd + e] * k[j][g * hd + e];
                    }
                    s[j] = d / Math.sqrt(hd);
                    max = Math.max(max, s[j]);
                }
                double z = 0;
                for (int j = 0; j <= i; j++) {
                    s[j] = Math.exp(s[j] - max);
                    z += s[j];
                }
                for (int j = 0; j <= i; j++) {
                    for (int e = 0; e < hd; e++) {
                        ctx[h * hd + e] += (float) (s[j] / z * v[j][g * hd + e]);
                    }
                }
            }
            out[i] = matvec(wo, hidden, heads * hd, ctx);
        }
        return out;
    }

    private void checkAttention(String family, int heads, int kv, KvMode mode, int n, int expectedKv) {
        Architecture a = arch(family);
        int hd = 3;
        int hidden = 10;
        Dims d = new Dims(hidden, 1, heads, kv, hd, 4, 10, 0, 0, false);
        Plan plan = HyperCloning.plan(a, d, new Params(n, 1, mode, 25, 11), true);
        assertEquals(expectedKv, plan.grown().kvHeads(), "grown kv heads");
        Random r = new Random(heads * 31 + kv);
        float[] wq = random(r, heads * hd * hidden);
        float[] wk = random(r, kv * hd * hidden);
        float[] wv = random(r, kv * hd * hidden);
        float[] wo = random(r, hidden * heads * hd);
        float[][] xs = {random(r, hidden), random(r, hidden), random(r, hidden)};
        float[][] y = attention(wq, wk, wv, wo, xs, hidden, heads, kv, hd);
        float[] gq = plan.grow(spec(a, Role.ATTN_Q, false), false, "q", new long[] {heads * hd, hidden})
                .apply(wq);
        float[] gk = plan.grow(spec(a, Role.ATTN_K, false), false, "k", new long[] {kv * hd, hidden})
                .apply(wk);
        float[] gv = plan.grow(spec(a, Role.ATTN_V, false), false, "v", new long[] {kv * hd, hidden})
                .apply(wv);
        float[] go = plan.grow(spec(a, Role.ATTN_O, false), false, "o", new long[] {hidden, heads * hd})
                .apply(wo);
        float[][] gx = new float[xs.length][];
        for (int i = 0; i < xs.length; i++) {
            gx[i] = tile(xs[i], n);
        }
        Dims g = plan.grown();
        float[][] gy = attention(gq, gk, gv, go, gx, g.hidden(), g.heads(), g.kvHeads(), hd);
        for (int i = 0; i < xs.length; i++) {
            assertClose(tile(y[i], n), gy[i], TOL);
        }
    }

    @Test
    void gqaGroupsStayPairedWhenKvHeadsGrow() {
        checkAttention("llama", 4, 2, KvMode.GROW, 2, 4);
        checkAttention("qwen2", 6, 2, KvMode.AUTO, 3, 6);
    }

    @Test
    void gqaGroupsStayPairedWhenKvHeadsAreKept() {
        checkAttention("mistral", 4, 2, KvMode.KEEP, 2, 2);
        checkAttention("llama", 6, 3, KvMode.KEEP, 3, 3);
    }

    @Test
    void mqaKeepsItsSingleKvHeadUnderAuto() {
        checkAttention("llama", 4, 1, KvMode.AUTO, 2, 1);
        checkAttention("llama", 4, 1, KvMode.GROW, 2, 2);
    }

    @Test
    void gpt2FusedQkvBlocksInOutStorage() {
        Architecture a = arch("gpt2");
        int heads = 2;
        int hd = 3;
        int h = 6;
        Dims d = new Dims(h, 1, heads, heads, hd, 24, 10, 16, 0, true);
        Plan plan = HyperCloning.plan(a, d, Params.withNoise(2, 2, 3), true);
        Random r = new Random(12);
        float[] wq = random(r, h * h);
        float[] wk = random(r, h * h);
        float[] wv = random(r, h * h);
        float[] wo = random(r, h * h);
        float[] bias = random(r, 3 * h);
        // c_attn [in, out] = [h, q | k | v]
        float[] cattn = new float[h * 3 * h];
        for (int i = 0; i < h; i++) {
            for (int o = 0; o < h; o++) {
                cattn[i * 3 * h + o] = wq[o * h + i];
                cattn[i * 3 * h + h + o] = wk[o * h + i];
                cattn[i * 3 * h + 2 * h + o] = wv[o * h + i];
            }
        }
        float[] g = plan.grow(spec(a, Role.ATTN_QKV, false), false, "c_attn", new long[] {h, 3 * h})
                .apply(cattn);
        float[] gb = plan.grow(spec(a, Role.ATTN_QKV, true), false, "c_attn.b", new long[] {3 * h})
                .apply(bias);
        float[] go = plan.grow(spec(a, Role.ATTN_O, false), false, "c_proj", new long[] {h, h})
                .apply(transpose(wo, h, h));
        int gh = 2 * h;
        float[] gwq = new float[gh * gh];
        float[] gwk = new float[gh * gh];
        float[] gwv = new float[gh * gh];
        for (int i = 0; i < gh; i++) {
            for (int o = 0; o < gh; o++) {
                gwq[o * gh + i] = g[i * 3 * gh + o];
                gwk[o * gh + i] = g[i * 3 * gh + gh + o];
                gwv[o * gh + i] = g[i * 3 * gh + 2 * gh + o];
            }
        }
        for (int o = 0; o < gh; o++) {
            assertEquals(bias[o % h], gb[o], 0f, "q bias tiled");
            assertEquals(bias[h + o % h], gb[gh + o], 0f, "k bias tiled");
        }
        float[][] xs = {random(r, h), random(r, h)};
        float[][] y = attention(wq, wk, wv, wo, xs, h, heads, heads, hd);
        float[][] gy = attention(
                gwq, gwk, gwv, transpose(go, gh, gh), new float[][] {tile(xs[0], 2), tile(xs[1], 2)}, gh, 4, 4, hd);
        for (int i = 0; i < xs.length; i++) {
            assertClose(tile(y[i], 2), gy[i], TOL);
        }
    }

    @Test
    void gptNeoxPerHeadQkvGainsWholeHeads() {
        Architecture a = arch("gpt_neox");
        int heads = 2;
        int hd = 3;
        int h = 6;
        Dims d = new Dims(h, 1, heads, heads, hd, 24, 10, 0, 0, false);
        Plan plan = HyperCloning.plan(a, d, Params.withNoise(3, 1, 3), true);
        Random r = new Random(13);
        // query_key_value [heads × (q, k, v) × hd, h]
        float[] qkv = random(r, heads * 3 * hd * h);
        float[] wo = random(r, h * h);
        float[] g = plan.grow(spec(a, Role.ATTN_QKV, false), false, "qkv", new long[] {heads * 3 * hd, h})
                .apply(qkv);
        float[] go = plan.grow(spec(a, Role.ATTN_O, false), false, "dense", new long[] {h, h})
                .apply(wo);
        float[][] split = splitPerHead(qkv, heads, hd, h);
        float[][] gsplit = splitPerHead(g, 3 * heads, hd, 3 * h);
        float[][] xs = {random(r, h), random(r, h), random(r, h)};
        float[][] y = attention(split[0], split[1], split[2], wo, xs, h, heads, heads, hd);
        float[][] gxs = {tile(xs[0], 3), tile(xs[1], 3), tile(xs[2], 3)};
        float[][] gy = attention(gsplit[0], gsplit[1], gsplit[2], go, gxs, 3 * h, 3 * heads, 3 * heads, hd);
        for (int i = 0; i < xs.length; i++) {
            assertClose(tile(y[i], 3), gy[i], TOL);
        }
    }

    /** q, k, v [heads·hd, h] from a per-head interleaved [heads × 3 × hd, h]. */
    private static float[][] splitPerHead(float[] qkv, int heads, int hd, int h) {
        float[][] out = new float[3][heads * hd * h];
        for (int head = 0; head < heads; head++) {
            for (int part = 0; part < 3; part++) {
                for (int e = 0; e < hd; e++) {
                    System.arraycopy(qkv, ((head * 3 + part) * hd + e) * h, out[part], (head * hd + e) * h, h);
                }
            }
        }
        return out;
    }

    @Test
    void tiedHeadFoldsIntoTheFinalNorm() {
        // RMSNorm: logits = (γ ⊙ x̂) · Eᵀ; grown: x̂ tiled, E tiled, γ' = γ/n.
        Architecture llama = arch("llama");
        Dims tied = new Dims(8, 1, 4, 4, 2, 12, 10, 0, 0, true);
        Plan p = HyperCloning.plan(llama, tied, Params.exact(2, 1), true);
        assertFalse(p.untiedHead());
        assertEquals(2f, p.headFoldDivisor());
        float[] gamma = random(new Random(1), 8);
        float[] g = p.grow(spec(llama, Role.FINAL_NORM, false), false, "norm", new long[] {8})
                .apply(gamma);
        assertEquals(gamma[3] / 2, g[8 + 3], 0f);
        checkTiedLogits("gemma", 4);
        checkTiedLogits("gemma", 3);
        checkTiedLogits("qwen2", 3);
    }

    /** logits = ((1+γ) or γ) ⊙ x̂ · (E scaled)ᵀ compared between source and grown. */
    private void checkTiedLogits(String family, int n) {
        Architecture a = arch(family);
        int h = 8;
        int vocab = 5;
        Dims d = new Dims(h, 1, 4, 4, 2, 12, vocab, 0, 0, true);
        Plan p = HyperCloning.plan(a, d, Params.exact(n, 1), true);
        boolean plusOne = "rms_plus_one".equals(a.norm());
        float embScale = "sqrt_hidden".equals(a.embeddingScale()) ? (float) Math.sqrt(h) : 1f;
        float gEmbScale = "sqrt_hidden".equals(a.embeddingScale()) ? (float) Math.sqrt(n * h) : 1f;
        Random r = new Random(n);
        float[] e = random(r, vocab * h);
        float[] gamma = random(r, h);
        float[] xhat = random(r, h);
        float[] ge = p.grow(spec(a, Role.EMBEDDING, false), false, "emb", new long[] {vocab, h})
                .apply(e);
        float[] gg = p.grow(spec(a, Role.FINAL_NORM, false), false, "norm", new long[] {h})
                .apply(gamma);
        // The embedding output is tiled: E'[tok]·√(n h) = tile(E[tok]·√h).
        for (int j = 0; j < n * h; j++) {
            assertEquals(e[2 * h + j % h] * embScale, ge[2 * n * h + j] * gEmbScale, 1e-5);
        }
        float[] logits = new float[vocab];
        float[] glogits = new float[vocab];
        for (int v = 0; v < vocab; v++) {
            double s = 0;
            for (int j = 0; j < h; j++) {
                s += (plusOne ? 1 + gamma[j] : gamma[j]) * xhat[j] * e[v * h + j];
            }
            logits[v] = (float) s;
            double gs = 0;
            for (int j = 0; j < n * h; j++) {
                gs += (plusOne ? 1 + gg[j] : gg[j]) * xhat[j % h] * ge[v * n * h + j];
            }
            glogits[v] = (float) gs;
        }
        assertClose(logits, glogits, TOL);
    }

    @Test
    void tiedHeadWithoutFinalNormIsUntied() {
        Architecture opt = arch("opt");
        Dims d = new Dims(8, 1, 4, 4, 2, 12, 10, 6, 0, true);
        Plan p = HyperCloning.plan(opt, d, Params.exact(2, 1), false);
        assertTrue(p.untiedHead());
        assertFalse(p.grown().tied());
        assertEquals(1f, p.headFoldDivisor());
    }

    @Test
    void badParametersAreRefusedWithTheReason() {
        Architecture a = arch("gpt2");
        Dims d = new Dims(8, 1, 4, 4, 2, 32, 10, 6, 0, true);
        InvalidInputException e = assertThrows(
                InvalidInputException.class, () -> HyperCloning.plan(a, d, new Params(0, 1, KvMode.KEEP, 20, 0), true));
        assertTrue(e.getMessage().contains("--width: not a growth factor"), e.getMessage());
        assertTrue(e.getMessage().contains("--kv keep"), e.getMessage());
        assertTrue(e.getMessage().contains("2 problems"), e.getMessage());
        assertThrows(InvalidInputException.class, () -> HyperCloning.plan(a, d, Params.exact(2, 0), true));
    }

    @Test
    void normsAndBiasesAreTiledNotScaled() {
        Architecture a = arch("opt");
        Dims d = new Dims(8, 1, 4, 4, 2, 12, 10, 6, 0, false);
        Plan p = HyperCloning.plan(a, d, Params.withNoise(2, 3, 1), true);
        float[] b = random(new Random(5), 12);
        WeightGrowth up = p.grow(spec(a, Role.MLP_UP, true), false, "fc1.bias", new long[] {12});
        assertFalse(up.hasNoise());
        assertArrayEquals(tile(b, 3), up.apply(b));
        float[] ln = random(new Random(6), 8);
        assertArrayEquals(
                tile(ln, 2),
                p.grow(spec(a, Role.ATTN_NORM, true), false, "ln.bias", new long[] {8})
                        .apply(ln));
        float[] pos = random(new Random(7), 6 * 8);
        float[] gpos = p.grow(spec(a, Role.POSITION_EMBEDDING, false), false, "pos", new long[] {6, 8})
                .apply(pos);
        assertEquals(pos[3 * 8 + 5], gpos[3 * 16 + 8 + 5], 0f);
    }
}
