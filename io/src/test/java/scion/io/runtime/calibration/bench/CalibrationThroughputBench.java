package scion.io.runtime.calibration.bench;

import java.nio.file.Path;
import java.util.Locale;
import scion.io.Model;
import scion.io.runtime.calibration.Calibration;
import scion.io.runtime.calibration.Calibration.Options;
import scion.io.runtime.calibration.Calibration.Positions;
import scion.io.runtime.calibration.Calibration.Request;
import scion.io.runtime.calibration.ResidualStats;
import scion.io.runtime.calibration.Rows;

/**
 * Calibration throughput of the Java path (run by {@code test/bench/calibration-throughput.sh}, not a test).
 *
 * <p>Usage: {@code CalibrationThroughputBench MODEL.onnx BATCH SEQ TOKENS THREADS REPEATS}. Streams {@code TOKENS /
 * SEQ} sequences of {@code SEQ} token ids ({@link #ids}, the same formula as the Python side) through {@link
 * Calibration} with the residual stream at every position, {@code BATCH × SEQ} tokens per run, after one untimed
 * warm-up batch. Two consumers, each timed {@code REPEATS} times: {@code taps} packs all L + 1 tap matrices (what
 * a consumer receives; the equivalent of PyTorch returning {@code hidden_states}), {@code stats} also accumulates
 * {@link ResidualStats} (the pruning tables). Prints {@code RESULT <consumer> <rep> <tokens> <seconds> <tok/s>
 * <forward seconds>}.
 */
public final class CalibrationThroughputBench {
    private CalibrationThroughputBench() {}

    /** Token id of position t in sequence s: deterministic, spread over the vocabulary, [CLS] ... [SEP]. */
    static long[][] ids(int sequences, int length) {
        long[][] out = new long[sequences][length];
        for (int s = 0; s < sequences; s++) {
            for (int t = 0; t < length; t++) {
                out[s][t] = 1000 + Math.floorMod(17L + 31L * s + 13L * t + 7L * t * t, 28_000);
            }
            out[s][0] = 101;
            out[s][length - 1] = 102;
        }
        return out;
    }

    public static void main(String[] args) {
        Path model = Path.of(args[0]);
        int batch = Integer.parseInt(args[1]);
        int seq = Integer.parseInt(args[2]);
        long tokens = Long.parseLong(args[3]);
        int threads = Integer.parseInt(args[4]);
        int repeats = Integer.parseInt(args[5]);
        long[][] seqs = ids(Math.toIntExact(tokens / seq), seq);
        long t0 = System.nanoTime();
        try (Model m = Model.open(model);
                Calibration c = Calibration.open(
                        m,
                        Request.of(Positions.ALL_TOKENS).withResidualStream(),
                        Options.defaults().withBatchTokens(batch * seq).withThreads(threads))) {
            System.out.printf(
                    Locale.ROOT,
                    "open %.2f s, %s, %d taps, threads %d%n",
                    (System.nanoTime() - t0) / 1e9,
                    c.loading(),
                    c.residualPositions().size(),
                    threads);
            int layers = c.taps().layers();
            double[] sink = new double[1];
            java.util.function.Consumer<Calibration.Batch> taps = b -> {
                for (int p = 0; p <= layers; p++) {
                    Rows r = b.residual(p);
                    sink[0] += r.data()[r.data().length - 1];
                }
            };
            long[][] warm = java.util.Arrays.copyOf(seqs, Math.min(batch, seqs.length));
            c.run(warm, taps);
            for (int rep = 0; rep < repeats; rep++) {
                report("taps", rep, c.run(seqs, taps));
                ResidualStats stats = new ResidualStats(layers);
                report("stats", rep, c.run(seqs, stats));
            }
            System.out.println("(checksum " + sink[0] + ")");
        }
    }

    private static void report(String consumer, int rep, Calibration.Summary s) {
        System.out.printf(
                Locale.ROOT,
                "RESULT %s %d %d %.4f %.1f %.4f%n",
                consumer,
                rep,
                s.tokens(),
                s.seconds(),
                s.tokensPerSecond(),
                s.forwardSeconds());
    }
}
