package scion.merge.fisher;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * The float32 kernels of {@link GradientNet}: a cache-blocked, row-parallel matrix product, transposes, and the
 * forward and backward of the normalisations, activations and softmax the supported families use. All arrays are
 * row-major; results are independent of the number of threads (every output element is summed by one thread in a
 * fixed order), so the same inputs give the same bytes.
 */
public final class FisherOps {
    private FisherOps() {}

    /** Threads for the matrix product (the machine's cores, at most 8). */
    static final int THREADS = Math.max(1, Math.min(8, Runtime.getRuntime().availableProcessors()));

    private static final ExecutorService POOL = Executors.newFixedThreadPool(THREADS, r -> {
        Thread t = new Thread(r, "scion-fisher-gemm");
        t.setDaemon(true);
        return t;
    });

    /** Columns of {@code B} per block: a {@code K × 256} panel of B stays in L2 while rows of C stream past it. */
    private static final int NB = 256;

    /** Floating-point operations done by {@link #gemm} so far (for throughput reports). */
    private static final java.util.concurrent.atomic.LongAdder FLOPS = new java.util.concurrent.atomic.LongAdder();

    /** Multiply-add operations counted by {@link #gemm} since start, times two. */
    public static long flops() {
        return FLOPS.sum();
    }

    /**
     * {@code C[M,N] += A[M,K] · B[K,N]}. Rows of C are split between threads; each row is accumulated as axpy updates
     * over a column block (a loop the JIT vectorises).
     */
    public static void gemm(float[] a, float[] b, float[] c, int m, int k, int n) {
        FLOPS.add(2L * m * k * n);
        long work = (long) m * k * n;
        if (THREADS == 1 || work < (1 << 18) || m < 2) {
            gemmRows(a, b, c, 0, m, k, n);
            return;
        }
        // Splits at multiples of 4 rows (the kernel's row group).
        int parts = Math.min(THREADS, Math.max(1, m / 4));
        List<Future<?>> fs = new ArrayList<>();
        for (int p = 1; p < parts; p++) {
            int lo = split(m, p, parts);
            int hi = split(m, p + 1, parts);
            fs.add(POOL.submit(() -> gemmRows(a, b, c, lo, hi, k, n)));
        }
        gemmRows(a, b, c, 0, split(m, 1, parts), k, n);
        for (Future<?> f : fs) {
            try {
                f.get();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted during a matrix product", e);
            } catch (ExecutionException e) {
                throw new IllegalStateException("a matrix product failed", e.getCause());
            }
        }
    }

    private static int split(int m, int p, int parts) {
        return p == parts ? m : (int) ((long) (m / 4) * p / parts) * 4;
    }

    /** Per thread: the packed panel of B (rows of {@link #NB} floats, each its own array) and four row buffers. */
    private static final ThreadLocal<float[][]> PANEL = ThreadLocal.withInitial(() -> new float[0][]);

    private static final ThreadLocal<float[][]> ROWS = ThreadLocal.withInitial(() -> new float[4][NB]);

    /**
     * Rows {@code [lo, hi)} of C, four at a time: for each column block, {@code t_r = Σ_p A[r,p]·B[p, block]} is
     * summed over {@code p} in order into a zeroed row buffer (four rows share each load of B), then added to C. A
     * leftover row is summed the same way, so the result does not depend on how rows are split between threads.
     */
    private static void gemmRows(float[] a, float[] b, float[] c, int lo, int hi, int k, int n) {
        // HotSpot (17) vectorises `t[j] += v * row[j]` only when both arrays are indexed from 0, so each row of the
        // B panel is copied into its own array first (cost: one copy per element of B per column block).
        float[][] panel = PANEL.get();
        if (panel.length < k) {
            panel = new float[k][NB];
            PANEL.set(panel);
        }
        float[][] rows = ROWS.get();
        float[] t0 = rows[0];
        float[] t1 = rows[1];
        float[] t2 = rows[2];
        float[] t3 = rows[3];
        for (int jb = 0; jb < n; jb += NB) {
            int w = Math.min(n, jb + NB) - jb;
            for (int p = 0; p < k; p++) {
                System.arraycopy(b, p * n + jb, panel[p], 0, w);
            }
            int i = lo;
            for (; i + 4 <= hi; i += 4) {
                Arrays.fill(t0, 0f);
                Arrays.fill(t1, 0f);
                Arrays.fill(t2, 0f);
                Arrays.fill(t3, 0f);
                int a0 = i * k;
                int a1 = a0 + k;
                int a2 = a1 + k;
                int a3 = a2 + k;
                for (int p = 0; p < k; p++) {
                    fourRows(a[a0 + p], a[a1 + p], a[a2 + p], a[a3 + p], panel[p], t0, t1, t2, t3, w);
                }
                int c0 = i * n + jb;
                addRow(t0, c, c0, w);
                addRow(t1, c, c0 + n, w);
                addRow(t2, c, c0 + 2 * n, w);
                addRow(t3, c, c0 + 3 * n, w);
            }
            for (; i < hi; i++) {
                Arrays.fill(t0, 0f);
                int ai = i * k;
                for (int p = 0; p < k; p++) {
                    oneRow(a[ai + p], panel[p], t0, w);
                }
                addRow(t0, c, i * n + jb, w);
            }
        }
    }

    private static void fourRows(
            float v0, float v1, float v2, float v3, float[] b, float[] t0, float[] t1, float[] t2, float[] t3, int w) {
        for (int j = 0; j < w; j++) {
            float bv = b[j];
            t0[j] += v0 * bv;
            t1[j] += v1 * bv;
            t2[j] += v2 * bv;
            t3[j] += v3 * bv;
        }
    }

    private static void oneRow(float v, float[] b, float[] t, int w) {
        for (int j = 0; j < w; j++) {
            t[j] += v * b[j];
        }
    }

    private static void addRow(float[] t, float[] c, int off, int w) {
        for (int j = 0; j < w; j++) {
            c[off + j] += t[j];
        }
    }

    /** A body run on a range {@code [lo, hi)}. */
    interface RangeBody {
        void run(int lo, int hi);
    }

    /** Splits {@code [0, n)} into contiguous ranges, one per thread (the caller runs the first), and waits. */
    static void parallelFor(int n, RangeBody body) {
        int parts = Math.min(THREADS, n);
        if (parts <= 1) {
            body.run(0, n);
            return;
        }
        List<Future<?>> fs = new ArrayList<>();
        for (int p = 1; p < parts; p++) {
            int lo = (int) ((long) n * p / parts);
            int hi = (int) ((long) n * (p + 1) / parts);
            fs.add(POOL.submit(() -> body.run(lo, hi)));
        }
        body.run(0, (int) ((long) n / parts));
        join(fs);
    }

    private static void join(List<Future<?>> fs) {
        for (Future<?> f : fs) {
            try {
                f.get();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted during a parallel step", e);
            } catch (ExecutionException e) {
                throw new IllegalStateException("a parallel step failed", e.getCause());
            }
        }
    }

    /** The transpose of {@code x[rows, cols]}: {@code [cols, rows]}. */
    public static float[] transpose(float[] x, int rows, int cols) {
        float[] t = new float[x.length];
        for (int i0 = 0; i0 < rows; i0 += 32) {
            int i1 = Math.min(rows, i0 + 32);
            for (int j0 = 0; j0 < cols; j0 += 32) {
                int j1 = Math.min(cols, j0 + 32);
                for (int i = i0; i < i1; i++) {
                    for (int j = j0; j < j1; j++) {
                        t[j * rows + i] = x[i * cols + j];
                    }
                }
            }
        }
        return t;
    }

    /** {@code y[T,out] = x[T,in] · W[out,in]ᵀ (+ b)}. */
    static float[] linear(float[] x, float[] w, float[] bias, int t, int in, int out) {
        float[] xt = transpose(x, t, in);
        float[] yt = new float[out * t];
        gemm(w, xt, yt, out, in, t);
        float[] y = transpose(yt, out, t);
        if (bias != null) {
            for (int i = 0; i < t; i++) {
                for (int o = 0; o < out; o++) {
                    y[i * out + o] += bias[o];
                }
            }
        }
        return y;
    }

    /**
     * Backward of {@link #linear}: adds {@code dyᵀ·x} to {@code dw}, the column sums of {@code dy} to {@code db} (when
     * not null) and returns {@code dx = dy · W} (or null when {@code needDx} is false).
     */
    static float[] linearBackward(
            float[] dy, float[] x, float[] w, float[] dw, float[] db, int t, int in, int out, boolean needDx) {
        float[] dyt = transpose(dy, t, out);
        gemm(dyt, x, dw, out, t, in);
        if (db != null) {
            for (int i = 0; i < t; i++) {
                for (int o = 0; o < out; o++) {
                    db[o] += dy[i * out + o];
                }
            }
        }
        if (!needDx) {
            return null;
        }
        float[] dx = new float[t * in];
        gemm(dy, w, dx, t, out, in);
        return dx;
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Normalisations

    /**
     * LayerNorm over rows: {@code y = (x − μ)/√(σ² + ε) · γ + β}; keeps {@code xhat} and {@code rstd} for the backward.
     */
    static float[] layerNorm(float[] x, float[] g, float[] b, float eps, int t, int h, float[] xhat, float[] rstd) {
        float[] y = new float[t * h];
        for (int i = 0; i < t; i++) {
            int o = i * h;
            double mean = 0;
            for (int j = 0; j < h; j++) {
                mean += x[o + j];
            }
            mean /= h;
            double var = 0;
            for (int j = 0; j < h; j++) {
                double d = x[o + j] - mean;
                var += d * d;
            }
            var /= h;
            float r = (float) (1.0 / Math.sqrt(var + eps));
            rstd[i] = r;
            for (int j = 0; j < h; j++) {
                float xh = (float) (x[o + j] - mean) * r;
                xhat[o + j] = xh;
                y[o + j] = xh * g[j] + b[j];
            }
        }
        return y;
    }

    /** Backward of {@link #layerNorm}: adds to {@code dg}, {@code db}; returns dx. */
    static float[] layerNormBackward(
            float[] dy, float[] xhat, float[] rstd, float[] g, float[] dg, float[] db, int t, int h) {
        float[] dx = new float[t * h];
        for (int i = 0; i < t; i++) {
            int o = i * h;
            double s1 = 0;
            double s2 = 0;
            for (int j = 0; j < h; j++) {
                float d = dy[o + j];
                dg[j] += d * xhat[o + j];
                db[j] += d;
                float dxh = d * g[j];
                s1 += dxh;
                s2 += dxh * xhat[o + j];
            }
            float m1 = (float) (s1 / h);
            float m2 = (float) (s2 / h);
            float r = rstd[i];
            for (int j = 0; j < h; j++) {
                float dxh = dy[o + j] * g[j];
                dx[o + j] = r * (dxh - m1 - xhat[o + j] * m2);
            }
        }
        return dx;
    }

    /** RMSNorm over rows: {@code y = x / √(mean(x²) + ε) · γ}; keeps {@code r = 1/√(mean(x²) + ε)}. */
    static float[] rmsNorm(float[] x, float[] g, float eps, int t, int h, float[] rstd) {
        float[] y = new float[t * h];
        for (int i = 0; i < t; i++) {
            int o = i * h;
            double ss = 0;
            for (int j = 0; j < h; j++) {
                ss += (double) x[o + j] * x[o + j];
            }
            float r = (float) (1.0 / Math.sqrt(ss / h + eps));
            rstd[i] = r;
            for (int j = 0; j < h; j++) {
                y[o + j] = x[o + j] * r * g[j];
            }
        }
        return y;
    }

    /** Backward of {@link #rmsNorm}: adds to {@code dg}; returns dx. */
    static float[] rmsNormBackward(float[] dy, float[] x, float[] rstd, float[] g, float[] dg, int t, int h) {
        float[] dx = new float[t * h];
        for (int i = 0; i < t; i++) {
            int o = i * h;
            float r = rstd[i];
            double s = 0;
            for (int j = 0; j < h; j++) {
                float d = dy[o + j];
                dg[j] += d * x[o + j] * r;
                s += (double) d * g[j] * x[o + j];
            }
            float c = (float) (s / h) * r * r;
            for (int j = 0; j < h; j++) {
                dx[o + j] = r * (dy[o + j] * g[j] - x[o + j] * c);
            }
        }
        return dx;
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Activations

    /**
     * The error function, Abramowitz &amp; Stegun 7.1.26: {@code erf(x) = 1 − (a₁t + … + a₅t⁵)·exp(−x²)}, {@code t = 1/(1
     * + p·|x|)}, odd in {@code x}; absolute error at most 1.5e-7 (float32 rounding of values near 1), one {@code exp}.
     */
    static double erf(double x) {
        double ax = Math.abs(x);
        double t = 1.0 / (1.0 + 0.3275911 * ax);
        double poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
        double y = 1.0 - poly * Math.exp(-ax * ax);
        return x < 0 ? -y : y;
    }

    /** transformers' {@code gelu}: {@code 0.5·x·(1 + erf(x/√2))}. */
    static float gelu(float x) {
        return (float) (0.5 * x * (1.0 + erf(x / Math.sqrt(2.0))));
    }

    /** d gelu / dx {@code = 0.5·(1 + erf(x/√2)) + x·φ(x)}. */
    static float geluGrad(float x) {
        double phi = Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
        return (float) (0.5 * (1.0 + erf(x / Math.sqrt(2.0))) + x * phi);
    }

    static float sigmoid(float x) {
        return (float) (1.0 / (1.0 + Math.exp(-x)));
    }

    /** {@code x·σ(x)}. */
    static float silu(float x) {
        return x * sigmoid(x);
    }

    /** d silu / dx {@code = σ(x)·(1 + x·(1 − σ(x)))}. */
    static float siluGrad(float x) {
        float s = sigmoid(x);
        return s * (1f + x * (1f - s));
    }
}
