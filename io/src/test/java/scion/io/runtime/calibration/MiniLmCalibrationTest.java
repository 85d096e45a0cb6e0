package scion.io.runtime.calibration;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import org.ejml.data.DMatrixRMaj;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.UnavailableException;
import scion.io.arch.Role;
import scion.io.onnx.OnnxWriter;
import scion.io.runtime.Device;
import scion.io.runtime.SessionFactory;
import scion.io.runtime.calibration.Calibration.Options;
import scion.io.runtime.calibration.Calibration.Positions;
import scion.io.runtime.calibration.Calibration.Request;

/**
 * Calibration on the real all-MiniLM-L6-v2 ONNX export (BERT, post-LN, 6 layers, hidden 384, FFN 1536). One ONNX
 * Runtime session for all-token rows is shared by the tests (loading costs a second or two on 2 cores).
 */
class MiniLmCalibrationTest {
    private static final int HIDDEN = 384;
    private static final int LAYERS = 6;
    private static final String Q0 = "encoder.layer.0.attention.self.query.weight";
    private static final String DOWN0 = "encoder.layer.0.output.dense.weight";

    @TempDir
    static Path dir;

    private static Model model;
    private static Calibration all;

    @BeforeAll
    static void open() {
        model = Model.open(miniLm(dir.resolve("all-minilm-l6-v2.onnx")));
        all = Calibration.open(
                model,
                Request.of(Positions.ALL_TOKENS).withResidualStream().withLinearInputs(List.of(Q0, DOWN0)),
                Options.defaults().withBatchTokens(64).withThreads(2));
    }

    @AfterAll
    static void close() {
        if (all != null) {
            all.close();
        }
        if (model != null) {
            model.close();
        }
    }

    static Path miniLm(Path p) {
        try (InputStream in = MiniLmCalibrationTest.class.getResourceAsStream("/all-minilm-l6-v2.onnx")) {
            if (in == null) {
                throw new IllegalStateException("all-minilm-l6-v2.onnx is not on the test classpath");
            }
            Files.copy(in, p, StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return p;
    }

    /** [CLS] random word pieces [SEP], deterministic. */
    static long[][] sequences(long seed, int... lengths) {
        Random r = new Random(seed);
        long[][] out = new long[lengths.length][];
        for (int i = 0; i < lengths.length; i++) {
            long[] s = new long[lengths[i]];
            for (int t = 0; t < s.length; t++) {
                s[t] = 1000L + r.nextInt(28_000);
            }
            s[0] = 101;
            s[s.length - 1] = 102;
            out[i] = s;
        }
        return out;
    }

    /** A copy of one batch's rows of a tap, for checks after the batch is gone. */
    private static final class Copy {
        private final float[] data;
        private final int rows;
        private final int width;
        private final int[] sequence;
        private final int[] position;

        private Copy(Rows r) {
            rows = r.rows();
            width = r.width();
            data = r.data().clone();
            sequence = new int[rows];
            position = new int[rows];
            for (int i = 0; i < rows; i++) {
                sequence[i] = r.sequence(i);
                position[i] = r.position(i);
            }
        }

        static Copy of(Rows r) {
            return new Copy(r);
        }

        float[] data() {
            return data;
        }

        int rows() {
            return rows;
        }

        int width() {
            return width;
        }

        int[] sequence() {
            return sequence;
        }

        int[] position() {
            return position;
        }

        float[] row(int i) {
            return Arrays.copyOfRange(data, i * width, (i + 1) * width);
        }
    }

    @Test
    void sixPlusOneResidualTapsFoundByDataflow() {
        OnnxTaps taps = all.taps();
        assertEquals(LAYERS, taps.layers());
        assertEquals(LAYERS + 1, taps.residual().size());
        assertEquals("/embeddings/LayerNorm/Add_1_output_0", taps.residual(0).tensor(), "after the embedding norm");
        for (int l = 1; l < LAYERS; l++) {
            assertEquals(
                    "/encoder/layer." + (l - 1) + "/output/LayerNorm/Add_1_output_0",
                    taps.residual(l).tensor());
        }
        assertEquals("last_hidden_state", taps.residual(LAYERS).tensor(), "post-LN: the last output norm");
        assertEquals(
                "/embeddings/LayerNorm/Add_1_output_0", taps.linearInput(Q0).tensor(), "post-LN q input");
        assertEquals(
                "/encoder/layer.0/intermediate/intermediate_act_fn/Mul_1_output_0",
                taps.linearInput(DOWN0).tensor(),
                "the FFN activation");
        assertEquals(
                6 * 6,
                taps.linearInputs(
                                Set.of(Role.ATTN_Q, Role.ATTN_K, Role.ATTN_V, Role.ATTN_O, Role.MLP_UP, Role.MLP_DOWN))
                        .size());
    }

    @Test
    void residualRowsHaveTheHiddenWidthAndOneRowPerRealToken() {
        long[][] seqs = sequences(1, 16, 9, 30);
        List<Integer> rows = new ArrayList<>();
        Calibration.Summary s = all.run(seqs, b -> {
            assertEquals(List.of(0, 1, 2, 3, 4, 5, 6), b.residualPositions());
            for (int p = 0; p <= LAYERS; p++) {
                Rows r = b.residual(p);
                assertEquals(HIDDEN, r.width());
                assertEquals(b.tokens(), r.rows());
            }
            assertEquals(1536, b.linearInput(DOWN0).width());
            rows.add(b.residual(0).rows());
        });
        assertEquals(55, s.tokens());
        assertEquals(55, rows.stream().mapToInt(Integer::intValue).sum());
        assertEquals(3, s.sequences());
    }

    @Test
    void angularDistanceTableAndBlockInfluence() {
        ResidualStats stats = new ResidualStats(LAYERS);
        List<Copy[]> copies = new ArrayList<>();
        all.run(sequences(2, 20, 20, 17, 32), b -> {
            stats.accept(b);
            Copy[] c = new Copy[LAYERS + 1];
            for (int p = 0; p <= LAYERS; p++) {
                c[p] = Copy.of(b.residual(p));
            }
            copies.add(c);
        });
        assertEquals(89, stats.rows());
        double[][] t = stats.angularDistances();
        assertEquals(LAYERS, t.length);
        for (int l = 0; l < LAYERS; l++) {
            assertEquals(LAYERS + 1, t[l].length);
            for (int n = 0; n <= LAYERS; n++) {
                if (n >= 1 && l + n <= LAYERS) {
                    assertTrue(t[l][n] >= 0 && t[l][n] <= 1, "d(" + l + ", " + n + ") = " + t[l][n]);
                    assertTrue(t[l][n] > 0.01, "real layers change the stream: d(" + l + ", " + n + ") = " + t[l][n]);
                } else {
                    assertTrue(Double.isNaN(t[l][n]), "undefined entries are NaN");
                }
            }
        }
        double[] bi = stats.blockInfluence();
        assertEquals(LAYERS, bi.length);
        for (double v : bi) {
            assertTrue(Double.isFinite(v) && v > 0 && v < 2, "BI " + v);
        }
        int block = stats.mostRedundantBlock(2);
        assertTrue(block >= 0 && block <= LAYERS - 2);
        // d(1, 3) and BI_4 recomputed from the copied rows.
        double d = 0;
        double cos = 0;
        int rows = 0;
        for (Copy[] c : copies) {
            for (int r = 0; r < c[0].rows(); r++) {
                d += Math.acos(cosine(c[1].row(r), c[4].row(r))) / Math.PI;
                cos += cosine(c[4].row(r), c[5].row(r));
                rows++;
            }
        }
        assertEquals(d / rows, stats.angularDistance(1, 3), 1e-12);
        assertEquals(1 - cos / rows, bi[4], 1e-12);
        double[] mean = stats.meanAbs(0);
        assertEquals(HIDDEN, mean.length);
        assertTrue(Arrays.stream(mean).allMatch(v -> v > 0 && Double.isFinite(v)));
    }

    private static double cosine(float[] a, float[] b) {
        double ab = 0;
        double aa = 0;
        double bb = 0;
        for (int i = 0; i < a.length; i++) {
            ab += (double) a[i] * b[i];
            aa += (double) a[i] * a[i];
            bb += (double) b[i] * b[i];
        }
        return Math.max(-1, Math.min(1, ab / Math.sqrt(aa * bb)));
    }

    @Test
    void gramAndMeanAbsEqualADirectComputationFromTheTappedActivations() {
        List<Copy> q = new ArrayList<>();
        List<Copy> down = new ArrayList<>();
        try (LinearInputStats stats = new LinearInputStats(List.of(Q0, DOWN0), List.of(Q0, DOWN0), 2)) {
            Calibration.Summary s = all.run(sequences(3, 12, 7, 20, 30), b -> {
                stats.accept(b);
                q.add(Copy.of(b.linearInput(Q0)));
                down.add(Copy.of(b.linearInput(DOWN0)));
            });
            assertTrue(s.batches() >= 2, "accumulated over several batches");
            for (Map.Entry<String, List<Copy>> e : Map.of(Q0, q, DOWN0, down).entrySet()) {
                List<Copy> copies = e.getValue();
                int w = copies.get(0).width();
                int n = copies.stream().mapToInt(Copy::rows).sum();
                float[] x = new float[n * w];
                int off = 0;
                for (Copy c : copies) {
                    System.arraycopy(c.data(), 0, x, off, c.data().length);
                    off += c.data().length;
                }
                double[] expected = CalibrationOpsTest.naiveGram(x, n, w);
                DMatrixRMaj g = stats.gram(e.getKey());
                assertEquals(w, g.numRows);
                double scale = 0;
                double diff = 0;
                for (int i = 0; i < expected.length; i++) {
                    scale = Math.max(scale, Math.abs(expected[i]));
                    diff = Math.max(diff, Math.abs(expected[i] - g.data[i]));
                }
                // float64 sums in another order: ~1e-16 · rows relative; 1e-12 leaves room, catches any lost row.
                assertEquals(0, diff / scale, 1e-12, e.getKey() + ": max |Δ| / max |XᵀX|");
                assertEquals(69, stats.rows(e.getKey()));
                double[] mean = new double[w];
                for (int r = 0; r < n; r++) {
                    for (int j = 0; j < w; j++) {
                        mean[j] += Math.abs((double) x[r * w + j]) / n;
                    }
                }
                assertArrayEquals(mean, stats.meanAbs(e.getKey()), 1e-9);
            }
        }
    }

    @Test
    void paddedPositionsAreMaskedAndNeverCounted() {
        long[][] seqs = sequences(4, 5, 12, 9);
        List<Copy> together = new ArrayList<>();
        all.run(seqs, b -> {
            assertEquals(3, b.sequences(), "one padded batch (3 × 12 ≤ 64)");
            assertEquals(12, b.paddedLength());
            together.add(Copy.of(b.residual(LAYERS)));
        });
        Copy t = together.get(0);
        assertEquals(26, t.rows(), "5 + 12 + 9 real tokens, no padding rows");
        int row = 0;
        for (int s = 0; s < seqs.length; s++) {
            List<Copy> alone = new ArrayList<>();
            all.run(new long[][] {seqs[s]}, b -> alone.add(Copy.of(b.residual(LAYERS))));
            Copy a = alone.get(0);
            assertEquals(seqs[s].length, a.rows());
            for (int r = 0; r < a.rows(); r++, row++) {
                assertEquals(s, t.sequence()[row]);
                assertEquals(r, t.position()[row]);
                float[] x = t.row(row);
                float[] y = a.row(r);
                for (int j = 0; j < HIDDEN; j++) {
                    // The mask makes padding invisible; only the batched kernels' summation order differs.
                    assertEquals(y[j], x[j], 1e-4, "sequence " + s + " token " + r);
                }
            }
        }
    }

    @Test
    void lastTokenRowsAndTheTokenBudget() {
        long[][] seqs = sequences(5, 30, 30, 30, 30, 30, 30);
        List<Copy> allTokens = new ArrayList<>();
        all.run(seqs, b -> allTokens.add(Copy.of(b.residual(3))));
        try (Calibration last = Calibration.open(
                model,
                Request.of(Positions.LAST_TOKEN).withResidualStream(3),
                Options.defaults().withBatchTokens(64).withMaxTokens(100).withThreads(2))) {
            List<Copy> lastRows = new ArrayList<>();
            Calibration.Summary s = last.run(seqs, b -> {
                assertTrue(b.sequences() * b.paddedLength() <= 64, "padded tokens within the batch budget");
                lastRows.add(Copy.of(b.residual(3)));
                assertThrows(IllegalArgumentException.class, () -> b.residual(2), "not requested");
            });
            assertEquals(100, s.tokens(), "the total budget, the fourth sequence cut to 10 tokens");
            assertEquals(4, s.sequences());
            assertEquals(2, s.batches());
            Copy first = lastRows.get(0);
            assertEquals(2, first.rows(), "one row per sequence");
            assertEquals(29, first.position()[0]);
            Copy full = allTokens.get(0);
            for (int j = 0; j < HIDDEN; j++) {
                assertEquals(full.row(29)[j], first.row(0)[j], 1e-5, "the last real token's row");
            }
            assertEquals(9, lastRows.get(1).position()[1], "cut sequence: its own last token");
        }
    }

    @Test
    void activationsDoNotOutliveTheirBatch() {
        List<Calibration.Batch> kept = new ArrayList<>();
        List<Rows> keptRows = new ArrayList<>();
        Calibration.Summary s = all.run(sequences(6, 10, 10, 10, 10, 10, 10, 10, 10), b -> {
            kept.add(b);
            keptRows.add(b.residual(0));
        });
        assertEquals(2, s.batches(), "8 × 10 tokens under a 64-token budget: 6 + 2");
        Set<Integer> distinct = new HashSet<>();
        for (Calibration.Batch b : kept) {
            distinct.add(b.index());
            assertThrows(IllegalStateException.class, b::tokens);
            assertThrows(IllegalStateException.class, () -> b.residual(0));
        }
        for (Rows r : keptRows) {
            assertThrows(IllegalStateException.class, r::data, "a kept reference cannot read activations");
        }
        assertEquals(2, distinct.size());
    }

    @Test
    void externalDataModelIsLoadedFromItsMappingWithTheSameActivations() {
        Path ext = dir.resolve("ext/minilm.onnx");
        try {
            Files.createDirectories(ext.getParent());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        OnnxWriter.write(
                model.onnx().orElseThrow(),
                Map.of(),
                ext,
                OnnxWriter.Options.defaults().withExternalData(OnnxWriter.ExternalData.ON));
        long[][] seqs = sequences(7, 11, 6);
        List<Copy> inline = new ArrayList<>();
        all.run(seqs, b -> inline.add(Copy.of(b.residual(2))));
        try (Model m = Model.open(ext);
                Calibration c = Calibration.open(
                        m,
                        Request.of(Positions.ALL_TOKENS).withResidualStream(2),
                        Options.defaults().withThreads(2))) {
            assertTrue(c.loading().startsWith("mapped external initializers"), c.loading());
            List<Copy> external = new ArrayList<>();
            c.run(seqs, b -> external.add(Copy.of(b.residual(2))));
            assertArrayEquals(inline.get(0).data(), external.get(0).data(), 1e-6f);
        }
    }

    @Test
    void cudaWithoutCudaFailsInsteadOfRunningOnTheCpu() {
        Assumptions.assumeFalse(SessionFactory.cudaProviderPresent(), "a CUDA build");
        UnavailableException e = assertThrows(
                UnavailableException.class,
                () -> Calibration.open(
                        model,
                        Request.of(Positions.ALL_TOKENS).withResidualStream(0),
                        Options.defaults().withDevice(Device.CUDA)));
        assertTrue(e.getMessage().contains("CUDA is not available"), e.getMessage());
        assertEquals(Device.CPU, all.device());
    }

    @Test
    void badRequestsAreRejectedWithTheirReason() {
        InvalidInputException e = assertThrows(
                InvalidInputException.class,
                () -> Calibration.open(
                        model, Request.of(Positions.ALL_TOKENS).withResidualStream(7), Options.defaults()));
        assertTrue(e.getMessage().contains("residual position 7"), e.getMessage());
        e = assertThrows(InvalidInputException.class, () -> all.taps()
                .linearInput("encoder.layer.0.attention.output.LayerNorm.weight"));
        assertTrue(e.getMessage().contains("not a linear projection"), e.getMessage());
        e = assertThrows(
                InvalidInputException.class,
                () -> Calibration.open(model, Request.of(Positions.ALL_TOKENS), Options.defaults()));
        assertTrue(e.getMessage().contains("empty calibration request"), e.getMessage());
        assertThrows(InvalidInputException.class, () -> Options.defaults().withBatchTokens(0));
        assertFalse(all.linearInputs().isEmpty());
    }
}
