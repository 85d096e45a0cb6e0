// Java side of test/bench/lowrank-svd.sh (run with the source launcher): Scion's factorisation of the same matrix.
//
//   IN.f32 N RANK   reads the raw float32 N×N matrix and IN.f32.sigma (the float64 optimum), then times
//                   - LowRankOps.multiply (Java, float64) and OrtMatMul (ONNX Runtime, float32) for [N, N]·[N, r+10]
//                   - randomized SVD, p = 10, q = 2 (torch.svd_lowrank's niter) and q = 4 (`--method randomized`'s
//                     default), products on ONNX Runtime (what `--method randomized` runs)
//                   - randomized SVD, p = 10, q = 2, products on the Java float64 kernel
//                   - the exact SVD (EJML, float64; what `--method svd` runs), only when EXACT=1 (minutes at 4096)
//                 and prints one JSON line per method, as lowrank-svd.py does.

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.Random;
import org.ejml.data.DMatrixRMaj;
import scion.lowrank.LowRankOps;
import scion.lowrank.OrtMatMul;

final class LowRankSvdBench {
    public static void main(String[] args) throws IOException {
        Path in = Path.of(args[0]);
        int n = Integer.parseInt(args[1]);
        int rank = Integer.parseInt(args[2]);
        int repeats = Integer.parseInt(System.getenv().getOrDefault("REPEATS", "3"));
        int threads = Integer.parseInt(System.getenv().getOrDefault("THREADS", "2"));
        ByteBuffer b = ByteBuffer.wrap(Files.readAllBytes(in)).order(ByteOrder.LITTLE_ENDIAN);
        DMatrixRMaj w = new DMatrixRMaj(n, n);
        for (int i = 0; i < n * n; i++) {
            w.data[i] = b.getFloat();
        }
        ByteBuffer sb = ByteBuffer.wrap(Files.readAllBytes(Path.of(args[0] + ".sigma"))).order(ByteOrder.LITTLE_ENDIAN);
        double[] sigma = new double[n];
        for (int i = 0; i < n; i++) {
            sigma[i] = sb.getDouble();
        }
        double norm = Math.sqrt(LowRankOps.tail(sigma, 0) * LowRankOps.tail(sigma, 0));
        double optimum = LowRankOps.tail(sigma, rank) / norm;

        Random r = new Random(1);
        DMatrixRMaj omega = new DMatrixRMaj(n, rank + 10);
        for (int i = 0; i < omega.data.length; i++) {
            omega.data[i] = r.nextGaussian();
        }
        double flops = 2.0 * n * n * (rank + 10);
        try (OrtMatMul ort = new OrtMatMul(threads)) {
            double t = best(repeats, () -> LowRankOps.multiply(w, omega));
            System.out.printf(Locale.ROOT, "{\"method\": \"Java GEMM f64 [N,N]x[N,r+10]\", \"seconds\": %.4f, \"gflops\": %.2f}%n", t, flops / t / 1e9);
            t = best(repeats, () -> ort.multiply(w, omega));
            System.out.printf(Locale.ROOT, "{\"method\": \"ORT MatMul f32 [N,N]x[N,r+10]\", \"seconds\": %.4f, \"gflops\": %.2f}%n", t, flops / t / 1e9);
            t = best(repeats, () -> ort.exact().multiply(w, omega));
            System.out.printf(Locale.ROOT, "{\"method\": \"ORT MatMul f64 [N,N]x[N,r+10]\", \"seconds\": %.4f, \"gflops\": %.2f}%n", t, flops / t / 1e9);
            LowRankOps.Svd[] out = new LowRankOps.Svd[1];
            t = best(repeats, () -> out[0] = LowRankOps.randomizedSvd(w, rank, 10, 2, 7, ort));
            report("scion randomized (p=10, q=2, ORT f32 products)", t, w, out[0], norm, optimum);
            t = best(repeats, () -> out[0] = LowRankOps.randomizedSvd(w, rank, 10, 4, 7, ort));
            report("scion randomized (p=10, q=4 = default, ORT f32 products)", t, w, out[0], norm, optimum);
            t = best(Math.max(1, repeats - 2), () -> out[0] = LowRankOps.randomizedSvd(w, rank, 10, 2, 7));
            report("scion randomized (p=10, q=2, Java f64 products)", t, w, out[0], norm, optimum);
        }
        if ("1".equals(System.getenv("EXACT"))) {
            LowRankOps.Svd[] out = new LowRankOps.Svd[1];
            double t = best(1, () -> out[0] = LowRankOps.exactSvd(w).truncate(rank));
            report("scion exact SVD (EJML f64)", t, w, out[0], norm, optimum);
        }
    }

    static void report(String name, double t, DMatrixRMaj w, LowRankOps.Svd svd, double norm, double optimum) {
        double err = LowRankOps.frobeniusDistance(w, LowRankOps.reconstruct(svd)) / norm;
        System.out.printf(
                Locale.ROOT,
                "{\"method\": \"%s\", \"seconds\": %.4f, \"relative_error\": %.8g, \"optimum\": %.8g, \"error_ratio\": %.6f}%n",
                name, t, err, optimum, err / optimum);
    }

    static double best(int repeats, Runnable f) {
        double best = Double.POSITIVE_INFINITY;
        for (int i = 0; i < repeats; i++) {
            long t0 = System.nanoTime();
            f.run();
            best = Math.min(best, (System.nanoTime() - t0) / 1e9);
        }
        return best;
    }
}
