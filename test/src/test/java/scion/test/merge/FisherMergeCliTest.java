package scion.test.merge;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.Model;
import scion.io.runtime.TextTokenizer;
import scion.io.runtime.calibration.TokenChunks;
import scion.merge.fisher.FisherEstimator;
import scion.test.Fixtures;
import scion.test.cli.CliRun;

/**
 * {@code scion merge --method fisher} and {@code merge_method: fisher} end to end on the fine-tuned-like llama
 * fixtures (fixtures/merge/llama-ft*): every output element equals {@code Σ λᵢ(Fᵢ + ε)θᵢ / Σ λᵢ(Fᵢ + ε)} recomputed in
 * float64 from Fisher diagonals estimated independently here (same text, byte tokenizer, windows and seed) — within
 * 1e-6 absolute (float32 output of a float64 formula on values of order 0.1); refusals write nothing.
 */
class FisherMergeCliTest {
    private static final String TEXT = "Bridges carry roads and railways over rivers, valleys and other bridges.\n"
            + "\n"
            + "A suspension bridge hangs its deck from cables slung between towers; an arch bridge pushes its load"
            + " outwards into the abutments at either end.\n";

    private static Path ft(int i) {
        return Fixtures.resource("merge/llama-ft" + i);
    }

    private static Path text(Path dir) throws Exception {
        Path t = dir.resolve("calib.txt");
        Files.writeString(t, TEXT, StandardCharsets.UTF_8);
        return t;
    }

    /** The estimate the command makes: non-blank lines, byte tokens, windows of {@code length}, seed 0, true Fisher. */
    private static Map<String, float[]> fisher(Path model, Path text, int length) throws Exception {
        try (Model m = Model.open(model);
                TextTokenizer tok =
                        TextTokenizer.forModel(model, null, m.graph().dims().vocab())) {
            List<long[]> docs = new ArrayList<>();
            for (String line : Files.readAllLines(text)) {
                if (!line.isBlank()) {
                    docs.add(tok.encode(line));
                }
            }
            return FisherEstimator.estimate(
                            m,
                            TokenChunks.of(docs.iterator(), length, tok::wrap),
                            FisherEstimator.Options.defaults().withMaxTokens(4096),
                            null)
                    .diagonal();
        }
    }

    private static double maxDiff(Path out, List<Path> models, Path text, double[] lambda, int length)
            throws Exception {
        Map<String, float[]> o = MergeReferenceTest.read(out);
        List<Map<String, float[]>> theta = new ArrayList<>();
        List<Map<String, float[]>> f = new ArrayList<>();
        for (Path m : models) {
            theta.add(MergeReferenceTest.read(m));
            f.add(fisher(m, text, length));
        }
        assertEquals(theta.get(0).keySet(), o.keySet());
        double max = 0;
        int covered = 0;
        for (String n : o.keySet()) {
            float[] got = o.get(n);
            for (int i = 0; i < got.length; i++) {
                double num = 0;
                double den = 0;
                for (int k = 0; k < models.size(); k++) {
                    double w = lambda[k] * (f.get(k).get(n)[i] + 1e-8);
                    num += w * theta.get(k).get(n)[i];
                    den += w;
                    covered += f.get(k).get(n)[i] > 1e-6 ? 1 : 0;
                }
                max = Math.max(max, Math.abs(num / den - got[i]));
            }
        }
        assertTrue(covered > 10_000, "the Fisher weights most elements: " + covered);
        return max;
    }

    @Test
    void methodOnTheCommandLineEqualsTheFormula(@TempDir Path tmp) throws Exception {
        Path text = text(tmp);
        Path out = tmp.resolve("merged");
        CliRun r = CliRun.of(
                "merge",
                "--method",
                "fisher",
                ft(1).toString(),
                ft(2).toString(),
                out.toString(),
                "--calib",
                text.toString(),
                "--calib-length",
                "64",
                "--json");
        assertEquals(0, r.code(), r.toString());
        assertTrue(r.out().contains("\"fisher\""), r.out());
        double d = maxDiff(out, List.of(ft(1), ft(2)), text, new double[] {1, 1}, 64);
        assertTrue(d < 1e-6, "max |Δ| " + d);
        try (Stream<Path> s = Files.list(tmp)) {
            assertFalse(s.anyMatch(p -> p.getFileName().toString().contains(".fisher-")), "Fisher staging removed");
        }
    }

    /**
     * The Fisher moves the merge away from the plain average where one model is more certain: on these fixtures a
     * sizeable share of elements differ from the average by more than 1e-4.
     */
    @Test
    void yamlWithWeightsAndCalibrationParameters(@TempDir Path tmp) throws Exception {
        Path text = text(tmp);
        Path cfg = tmp.resolve("fisher.yml");
        Files.writeString(
                cfg,
                "merge_method: fisher\n"
                        + "models:\n"
                        + "  - model: " + ft(1) + "\n"
                        + "    parameters:\n"
                        + "      weight: 2.0\n"
                        + "  - model: " + ft(2) + "\n"
                        + "  - model: " + ft(3) + "\n"
                        + "    parameters:\n"
                        + "      weight: 0.5\n"
                        + "parameters:\n"
                        + "  calib_text: calib.txt\n"
                        + "  calib_length: 32\n"
                        + "dtype: float32\n");
        Path out = tmp.resolve("merged");
        CliRun r = CliRun.of("merge", cfg.toString(), out.toString());
        assertEquals(0, r.code(), r.toString());
        double d = maxDiff(out, List.of(ft(1), ft(2), ft(3)), text, new double[] {2, 1, 0.5}, 32);
        assertTrue(d < 1e-6, "max |Δ| " + d);
        Map<String, float[]> o = MergeReferenceTest.read(out);
        Map<String, float[]> a = MergeReferenceTest.read(ft(1));
        Map<String, float[]> b = MergeReferenceTest.read(ft(2));
        Map<String, float[]> c = MergeReferenceTest.read(ft(3));
        long differ = 0;
        long all = 0;
        for (String n : o.keySet()) {
            for (int i = 0; i < o.get(n).length; i++) {
                double avg = (2 * a.get(n)[i] + b.get(n)[i] + 0.5 * c.get(n)[i]) / 3.5;
                differ += Math.abs(avg - o.get(n)[i]) > 1e-4 ? 1 : 0;
                all++;
            }
        }
        assertTrue(differ > all / 10, differ + " of " + all + " elements differ from the weighted average");
    }

    @Test
    void aModelMergedWithItselfIsUnchanged(@TempDir Path tmp) throws Exception {
        Path out = tmp.resolve("same");
        CliRun r = CliRun.of(
                "merge",
                "--method",
                "fisher",
                ft(1).toString(),
                ft(1).toString(),
                out.toString(),
                "--calib",
                text(tmp).toString());
        assertEquals(0, r.code(), r.toString());
        Map<String, float[]> a = MergeReferenceTest.read(ft(1));
        Map<String, float[]> o = MergeReferenceTest.read(out);
        for (String n : a.keySet()) {
            assertArrayEquals(a.get(n), o.get(n), 1e-7f, n);
        }
    }

    @Test
    void withoutCalibrationTextNothingIsWritten(@TempDir Path tmp) {
        Path out = tmp.resolve("none");
        CliRun r = CliRun.of("merge", "--method", "fisher", ft(1).toString(), ft(2).toString(), out.toString());
        assertEquals(3, r.code(), r.toString());
        assertTrue(r.err().contains("needs calibration text") && r.err().contains("--calib"), r.err());
        assertFalse(Files.exists(out));
    }

    @Test
    void unsupportedFamilyIsRefusedByName(@TempDir Path tmp) throws Exception {
        Path out = tmp.resolve("gpt2");
        Path g = Fixtures.hf("gpt2");
        CliRun r = CliRun.of(
                "merge",
                "--method",
                "fisher",
                g.toString(),
                g.toString(),
                out.toString(),
                "--calib",
                text(tmp).toString());
        assertEquals(3, r.code(), r.toString());
        assertTrue(r.err().contains("gpt2") && r.err().contains("Fisher"), r.err());
        assertFalse(Files.exists(out));
        try (Stream<Path> s = Files.list(tmp)) {
            assertFalse(s.anyMatch(p -> p.getFileName().toString().contains(".fisher-")), "Fisher staging removed");
        }
    }

    @Test
    void calibrationTextWithAnotherMethodIsRefused(@TempDir Path tmp) throws Exception {
        Path out = tmp.resolve("lin");
        CliRun r = CliRun.of(
                "merge",
                "--method",
                "linear",
                ft(1).toString(),
                ft(2).toString(),
                out.toString(),
                "--calib",
                text(tmp).toString());
        assertEquals(3, r.code(), r.toString());
        assertTrue(r.err().contains("does not use calibration text"), r.err());
        assertFalse(Files.exists(out));
    }
}
