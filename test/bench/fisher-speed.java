// Driver of test/bench/fisher-speed.sh, run with Java's source launcher.
//
//   FisherSpeedBench MODEL.onnx|DIR TOKENIZER.json TEXT TOKENS LENGTH
//
// Tokenises TEXT (one paragraph per line) with the model's tokenizer, cuts the token stream into windows of LENGTH
// tokens wrapped in the tokenizer's special tokens (TokenChunks, as `scion merge --calib` does), and estimates the
// diagonal Fisher on TOKENS tokens with scion.merge.fisher.FisherEstimator (one warm-up sequence first, untimed).
// Prints tokens/s and the matrix-product GFLOP/s of the passes, then the GFLOP/s of one bare FisherOps.gemm of
// MiniLM's FFN shape (T=128 × 384 × 1536) for reference. CPU seconds are printed beside wall time because the
// machine may be shared: GFLOP per CPU-second is the kernel's efficiency whatever the load.

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Locale;
import scion.io.Model;
import scion.io.runtime.TextTokenizer;
import scion.io.runtime.calibration.TokenChunks;
import scion.merge.fisher.FisherEstimator;
import scion.merge.fisher.FisherOps;

final class FisherSpeedBench {
    public static void main(String[] args) throws Exception {
        Path model = Path.of(args[0]);
        Path tokJson = Path.of(args[1]);
        Path text = Path.of(args[2]);
        long tokens = Long.parseLong(args[3]);
        int length = Integer.parseInt(args[4]);
        List<long[]> seqs = new ArrayList<>();
        try (Model m = Model.open(model);
                TextTokenizer tok = TextTokenizer.huggingFace(tokJson, m.graph().dims().vocab())) {
            List<long[]> docs = new ArrayList<>();
            for (String line : Files.readAllLines(text)) {
                if (!line.isBlank()) {
                    docs.add(tok.encode(line));
                }
            }
            Iterator<long[]> it = TokenChunks.of(docs.iterator(), length - tok.specialCount(), tok::wrap);
            long n = 0;
            while (it.hasNext() && n < tokens + length) {
                long[] s = it.next();
                seqs.add(s);
                n += s.length;
            }
            FisherEstimator.Options o = FisherEstimator.Options.defaults().withSeed(1);
            FisherEstimator.estimate(m, List.of(seqs.get(0)).iterator(), o, null); // warm-up
            var os = (com.sun.management.OperatingSystemMXBean)
                    java.lang.management.ManagementFactory.getOperatingSystemMXBean();
            long cpu0 = os.getProcessCpuTime();
            FisherEstimator.Result r = FisherEstimator.estimate(
                    m, seqs.subList(1, seqs.size()).iterator(), o.withMaxTokens(tokens), null);
            double cpu = (os.getProcessCpuTime() - cpu0) / 1e9;
            System.out.printf(
                    Locale.ROOT,
                    "RESULT fisher %s: %d sequences, %d tokens in %.2f s: %.1f tokens/s, %.2f GFLOP/s in matrix products"
                            + " (%.1f GFLOP), %d threads; process CPU %.1f s: %.2f GFLOP per CPU-second%n",
                    model.getFileName(),
                    r.sequences(),
                    r.tokens(),
                    r.seconds(),
                    r.tokens() / r.seconds(),
                    r.flops() / r.seconds() / 1e9,
                    r.flops() / 1e9,
                    Runtime.getRuntime().availableProcessors(),
                    cpu,
                    r.flops() / cpu / 1e9);
        }
        int t = 128;
        int k = 384;
        int nn = 1536;
        float[] a = new float[t * k];
        float[] b = new float[k * nn];
        for (int i = 0; i < a.length; i++) {
            a[i] = (i % 7) * 0.1f;
        }
        for (int i = 0; i < b.length; i++) {
            b[i] = (i % 5) * 0.1f;
        }
        float[] c = new float[t * nn];
        for (int w = 0; w < 20; w++) {
            FisherOps.gemm(a, b, c, t, k, nn);
        }
        int reps = 200;
        long t0 = System.nanoTime();
        for (int w = 0; w < reps; w++) {
            FisherOps.gemm(a, b, c, t, k, nn);
        }
        double s = (System.nanoTime() - t0) / 1e9;
        System.out.printf(
                Locale.ROOT, "RESULT gemm %dx%dx%d: %.2f GFLOP/s%n", t, k, nn, 2.0 * t * k * nn * reps / s / 1e9);
    }
}
