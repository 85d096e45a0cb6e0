package scion.test.lowrank;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.Json;
import scion.io.LowRankFactors;
import scion.io.Model;
import scion.io.arch.WeightGraph.Weight;
import scion.io.onnx.OnnxModel;
import scion.io.runtime.calibration.Calibration;
import scion.io.runtime.calibration.LinearInputStats;
import scion.io.tensor.LowRankTensor;
import scion.test.Fixtures;
import scion.test.cli.CliRun;

/**
 * {@code scion lowrank} end to end on real models: all-MiniLM-L6-v2 (ONNX in and out) and the trained Rust-book llama
 * (safetensors factor pairs), judged by ONNX Runtime; Eckart–Young checked on the written factors; refusals write
 * nothing.
 */
class LowRankCliTest {
    private static final String LAYER0 = "encoder.layer.0.*";

    static Path english() {
        try (InputStream in = LowRankCliTest.class.getResourceAsStream("/scion/demo/bridges.txt")) {
            Path f = Files.createTempFile("scion-bridges", ".txt");
            f.toFile().deleteOnExit();
            Files.copy(in, f, StandardCopyOption.REPLACE_EXISTING);
            return f;
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static JsonNode json(CliRun r) throws IOException {
        assertEquals(0, r.code(), r.toString());
        return Json.mapper().readTree(r.out());
    }

    /**
     * The written factors of every matrix satisfy Eckart–Young: ‖W − B·A‖_F = √(Σ_{i>r} σ_i²) within 1e-6 relative
     * (the factors are stored in float32: rounding moves the error by ~1e-7·‖W‖, far below 1e-6 of a tail of
     * 0.3·‖W‖); the graph has two MatMuls per factored weight and keeps its inputs and outputs.
     */
    @Test
    void miniLmSvdFactorsAreEckartYoungOptimalAndTheGraphIsKept(@TempDir Path dir) throws IOException {
        Path src = Fixtures.miniLmOnnx();
        Path out = dir.resolve("f.onnx");
        JsonNode rep = json(
                CliRun.of("lowrank", src.toString(), out.toString(), "--rank", "48", "--targets", LAYER0, "--json"));
        assertEquals(6, rep.get("matrices").size());
        try (Model a = Model.open(src);
                Model b = Model.open(out)) {
            OnnxModel o = b.onnx().orElseThrow();
            assertEquals(a.onnx().orElseThrow().inputNames(), o.inputNames());
            assertEquals(a.onnx().orElseThrow().outputNames(), o.outputNames());
            long split = o.graph().getNodeList().stream()
                    .filter(n -> n.getName().startsWith("lowrank:"))
                    .count();
            assertEquals(12, split, "two MatMuls per factored weight");
            assertEquals(
                    a.onnx().orElseThrow().graph().getNodeCount() + 6,
                    o.graph().getNodeCount(),
                    "nothing else changed");
            for (JsonNode m : rep.get("matrices")) {
                String name = m.get("name").asText();
                assertEquals(48, m.get("rank").asInt());
                Weight wb = b.graph().find(name).orElseThrow();
                assertTrue(wb.tensor() instanceof LowRankTensor, name + " is read as factors");
                float[] w = a.graph().find(name).orElseThrow().tensor().toFloats();
                float[] rec = wb.tensor().toFloats();
                double err = 0;
                double norm = 0;
                for (int i = 0; i < w.length; i++) {
                    err += (w[i] - (double) rec[i]) * (w[i] - (double) rec[i]);
                    norm += (double) w[i] * w[i];
                }
                double rel = Math.sqrt(err / norm);
                double tail = m.get("tail").asDouble();
                assertEquals(tail, rel, 1e-6 * tail, name);
                assertEquals(m.get("relative_error").asDouble(), rel, 1e-6 * rel, name);
                long rows = m.get("shape").get(0).asLong();
                long cols = m.get("shape").get(1).asLong();
                assertEquals(48L * (rows + cols), m.get("parameters_after").asLong());
            }
        }
    }

    /** The factor graph runs in ONNX Runtime and computes what the dense reconstruction computes. */
    @Test
    void onnxFactorsMatchTheDenseReconstructionInOrt(@TempDir Path dir) {
        Path src = Fixtures.miniLmOnnx();
        Path factors = dir.resolve("factors.onnx");
        Path dense = dir.resolve("dense.onnx");
        for (String[] args :
                List.of(new String[] {factors.toString(), "factors"}, new String[] {dense.toString(), "dense"})) {
            List<String> a = new ArrayList<>(List.of("lowrank", src.toString(), args[0], "--ratio", "0.5"));
            a.addAll(List.of("--targets", LAYER0, "--store", args[1]));
            CliRun r = CliRun.of(a.toArray(new String[0]));
            assertEquals(0, r.code(), r.toString());
        }
        assertTrue(sizeOf(factors) < sizeOf(dense), "factors take fewer bytes");
        try (InputStream in = LowRankCliTest.class.getResourceAsStream("/all-minilm-l6-v2-tokenizer.json")) {
            Files.copy(in, dir.resolve("tokenizer.json"));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        // Same Ŵ, computed as x·A·B instead of x·(A·B): float32 reassociation only.
        CliRun v = CliRun.of(
                "validate",
                dense.toString(),
                factors.toString(),
                "--text",
                english().toString(),
                "--expect",
                "close:1e-4");
        assertEquals(0, v.code(), v.toString());
    }

    /**
     * randomized (defaults p = 10, q = 4) stays within 1 % of the exact SVD's error on MiniLM's attention matrices,
     * whose flat spectra are the hard case (relative error ~0.7 at rank 32).
     */
    @Test
    void randomizedIsWithinOnePercentOfExact(@TempDir Path dir) throws IOException {
        Path src = Fixtures.miniLmOnnx();
        String attention = "encoder.layer.0.attention.*";
        JsonNode exact = json(CliRun.of(
                "lowrank",
                src.toString(),
                dir.resolve("e.onnx").toString(),
                "--rank",
                "32",
                "--targets",
                attention,
                "--json"));
        JsonNode rnd = json(CliRun.of(
                "lowrank",
                src.toString(),
                dir.resolve("r.onnx").toString(),
                "--rank",
                "32",
                "--targets",
                attention,
                "--method",
                "randomized",
                "--json"));
        assertEquals(4, rnd.get("matrices").size());
        for (int i = 0; i < 4; i++) {
            double e = exact.get("matrices").get(i).get("relative_error").asDouble();
            double r = rnd.get("matrices").get(i).get("relative_error").asDouble();
            assertTrue(r >= e - 1e-6 && r <= e * 1.01, i + ": randomized " + r + " vs exact " + e);
        }
    }

    /**
     * Safetensors factor pairs are a first-class model: the folder opens with its targets read as factors, ONNX
     * Runtime runs it through the exporter's two Gemms (here inside calibration, whose taps find the input factor),
     * and its activations equal those of the dense reconstruction ({@code --store dense}).
     */
    @Test
    void safetensorsFactorPairsOpenRunAndCalibrate(@TempDir Path dir) throws IOException {
        Path lm = Fixtures.hf("llama");
        Path out = dir.resolve("f");
        Path dense = dir.resolve("d");
        JsonNode rep = json(CliRun.of("lowrank", lm.toString(), out.toString(), "--ratio", "0.5", "--json"));
        int n = rep.get("matrices").size();
        CliRun d = CliRun.of("lowrank", lm.toString(), dense.toString(), "--ratio", "0.5", "--store", "dense");
        assertEquals(0, d.code(), d.toString());
        JsonNode entry =
                Json.mapper().readTree(out.resolve("config.json").toFile()).get(LowRankFactors.CONFIG_KEY);
        assertEquals("factors", entry.get("format").asText());
        assertEquals(n, entry.get("factored").size());
        String target = "model.layers.1.mlp.down_proj.weight";
        double[] fromFactors;
        double[] fromDense;
        try (Model m = Model.open(out)) {
            long factored = m.graph().weights().stream()
                    .filter(w -> w.tensor() instanceof LowRankTensor)
                    .count();
            assertEquals(n, factored);
            assertTrue(m.checkpoint()
                    .find("model.layers.0.mlp.up_proj.lowrank_a.weight")
                    .isPresent());
            assertFalse(m.checkpoint().find("model.layers.0.mlp.up_proj.weight").isPresent());
            fromFactors = downInputs(m, target);
        }
        try (Model m = Model.open(dense)) {
            assertEquals(
                    0,
                    m.graph().weights().stream()
                            .filter(w -> w.tensor() instanceof LowRankTensor)
                            .count());
            fromDense = downInputs(m, target);
        }
        // The same Ŵ applied as (x·Aᵀ)·Bᵀ or x·Ŵᵀ, after a block of factored layers: float32 reassociation only.
        for (int j = 0; j < fromDense.length; j++) {
            assertEquals(fromDense[j], fromFactors[j], 1e-4 * Math.abs(fromDense[j]) + 1e-6, "column " + j);
        }
    }

    /** Mean |x| of the input of {@code target}, from a calibration run of two fixed token sequences. */
    private static double[] downInputs(Model m, String target) {
        try (LinearInputStats stats = LinearInputStats.meanAbs(List.of(target));
                Calibration c = Calibration.open(
                        m,
                        Calibration.Request.of(Calibration.Positions.ALL_TOKENS).withLinearInputs(List.of(target)),
                        Calibration.Options.defaults().withMaxLength(16))) {
            c.run(new long[][] {{1, 5, 9, 20, 17, 3}, {4, 8, 15, 16, 23, 42, 7}}, stats);
            assertEquals(13, stats.rows(target));
            return stats.meanAbs(target);
        }
    }

    /**
     * svd-llm on the trained Rust-book llama, calibrated on its training text: the factor model evaluates (perplexity
     * through the exporter) and ONNX Runtime finds it equal to its dense reconstruction.
     */
    @Test
    void svdLlmOnTheTrainedLlama(@TempDir Path dir) throws IOException {
        Path lm = Fixtures.trainedLm();
        assumeTrue(Files.exists(lm.resolve("config.json")), "trained llama fixture not present yet");
        Path out = dir.resolve("f");
        Path dense = dir.resolve("d");
        String calib = lm.resolve("calib.txt").toString();
        JsonNode rep = json(CliRun.of(
                "lowrank",
                lm.toString(),
                out.toString(),
                "--ratio",
                "0.5",
                "--method",
                "svd-llm",
                "--calib",
                calib,
                "--tokens",
                "4096",
                "--targets",
                "mlp",
                "--json"));
        assertEquals(24, rep.get("matrices").size());
        for (JsonNode m : rep.get("matrices")) {
            double e = m.get("output_error").asDouble(); // ‖(W − Ŵ)Xᵀ‖/‖WXᵀ‖ on the calibration tokens
            assertTrue(e > 0 && e < 1, m.toString());
        }
        CliRun d = CliRun.of(
                "lowrank",
                lm.toString(),
                dense.toString(),
                "--ratio",
                "0.5",
                "--method",
                "svd-llm",
                "--calib",
                calib,
                "--tokens",
                "4096",
                "--targets",
                "mlp",
                "--store",
                "dense");
        assertEquals(0, d.code(), d.toString());
        // The first 6 kB of the held-out text: enough windows to judge, few enough to keep the test short.
        Path text6k = dir.resolve("heldout-6k.txt");
        String held = Files.readString(lm.resolve("heldout.txt"));
        Files.writeString(text6k, held.substring(0, held.indexOf('\n', 6000) + 1));
        String text = text6k.toString();
        CliRun v = CliRun.of("validate", dense.toString(), out.toString(), "--text", text, "--expect", "close:1e-2");
        assertEquals(0, v.code(), v.toString());
        JsonNode ev = json(
                CliRun.of("eval", out.toString(), "--text", text, "--max-length", "129", "--stride", "129", "--json"));
        double ppl = ev.get("perplexity").get("perplexity").asDouble();
        assertTrue(Double.isFinite(ppl) && ppl > 1, ev.toString());
    }

    @Test
    void refusalsNameTheProblemAndWriteNothing(@TempDir Path dir) throws IOException {
        Path src = Fixtures.hf("llama");
        Path out = dir.resolve("x");
        String[][] cases = {
            {"--method", "asvd", "--rank", "8"},
            {"--rank", "8", "--ratio", "0.5"},
            {"--method", "svd"},
            {"--ratio", "1.5"},
            {"--rank", "8", "--targets", "embedding"},
            {"--rank", "8", "--targets", "*norm*"},
            {"--rank", "8", "--targets", "nothing.matches.*"},
            {"--rank", "8", "--method", "qr"},
            {"--rank", "8", "--calib", src.resolve("config.json").toString()},
        };
        String[] expected = {
            "--calib TEXT is required by --method asvd",
            "exactly one rank rule",
            "exactly one rank rule",
            "--ratio: out of range",
            "not a linear projection",
            "not linear projections",
            "matches no weight",
            "--method: unknown method",
            "uses no activations",
        };
        for (int i = 0; i < cases.length; i++) {
            List<String> a = new ArrayList<>(List.of("lowrank", src.toString(), out.toString()));
            a.addAll(List.of(cases[i]));
            CliRun r = CliRun.of(a.toArray(new String[0]));
            assertEquals(3, r.code(), r.toString());
            assertTrue(r.err().contains(expected[i]), expected[i] + " in " + r.err());
            assertFalse(Files.exists(out), "nothing written");
        }
        // An existing output without --force is kept as it was.
        Files.createDirectories(out);
        Files.writeString(out.resolve("keep.txt"), "keep");
        CliRun r = CliRun.of("lowrank", src.toString(), out.toString(), "--rank", "8");
        assertEquals(3, r.code(), r.toString());
        assertEquals("keep", Files.readString(out.resolve("keep.txt")));
        assertEquals(1, Files.list(out).count());
        // ONNX input needs an .onnx output; a factored model is not factored again.
        CliRun onnx = CliRun.of(
                "lowrank", Fixtures.miniLmOnnx().toString(), dir.resolve("y").toString(), "--rank", "8");
        assertEquals(3, onnx.code(), onnx.toString());
        assertTrue(onnx.err().contains("ONNX input factorises to ONNX"), onnx.err());
        Path f = dir.resolve("f");
        assertEquals(
                0,
                CliRun.of("lowrank", src.toString(), f.toString(), "--rank", "4")
                        .code());
        CliRun again = CliRun.of("lowrank", f.toString(), dir.resolve("g").toString(), "--rank", "2");
        assertEquals(3, again.code(), again.toString());
        assertTrue(again.err().contains("already factorised"), again.err());
        assertFalse(Files.exists(dir.resolve("g")));
    }

    private static long sizeOf(Path p) {
        try {
            return Files.size(p);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
