package scion.cli;

import com.fasterxml.jackson.core.JsonProcessingException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.Callable;
import org.ejml.data.DMatrixRMaj;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;
import scion.io.InvalidInputException;
import scion.io.LowRankFactors;
import scion.io.Model;
import scion.io.Provenance;
import scion.io.arch.WeightGraph.Weight;
import scion.io.onnx.OnnxModel;
import scion.io.onnx.OnnxWriter;
import scion.io.runtime.calibration.Calibration;
import scion.io.runtime.calibration.LinearInputStats;
import scion.io.tensor.LowRankTensor;
import scion.lowrank.LowRankOps;
import scion.lowrank.LowRankOutput;
import scion.lowrank.OrtMatMul;
import scion.lowrank.SvdLowRank;

/**
 * {@code scion lowrank MODEL OUT (--rank R | --energy E | --ratio P)}: replaces linear weights by low-rank factor
 * pairs ({@link SvdLowRank}): exact, randomized, activation-aware (ASVD) or whitened (SVD-LLM) truncated SVD. ONNX in,
 * ONNX out (each factored MatMul becomes two, the graph kept); a safetensors folder in, a folder out with factor
 * pairs and a config.json entry ({@link LowRankFactors}), or the dense reconstruction with {@code --store dense}.
 */
@Command(
        name = "lowrank",
        description = {
            "Factorise linear weights by truncated SVD: W [out, in] ≈ B [out, r] · A [r, in].",
            "Methods: svd (exact, Eckart–Young optimal in ‖W − Ŵ‖_F), randomized (Halko–Martinsson–Tropp sketch),"
                    + " asvd (columns scaled by mean|x|^α from --calib text), svd-llm (whitened by the Cholesky factor"
                    + " of XᵀX from --calib text: dropped singular values equal the output error).",
            "Rank rules apply per matrix; a matrix whose rank would be ≥ out·in/(out + in) stays dense."
        },
        mixinStandardHelpOptions = true)
final class LowRankCommand implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "MODEL", description = "A Hugging Face safetensors folder or an .onnx file.")
    Path in;

    @Parameters(index = "1", paramLabel = "OUT", description = "The output folder (an .onnx file for ONNX input).")
    Path out;

    @Option(names = "--rank", paramLabel = "R", description = "Keep rank R in every factored matrix.")
    Integer rank;

    @Option(
            names = "--energy",
            paramLabel = "E",
            description = "Keep the smallest rank whose singular values hold a fraction E of Σσ² (per matrix).")
    Double energy;

    @Option(
            names = "--ratio",
            paramLabel = "P",
            description = "Per matrix, factors hold a fraction P of its parameters: r = ⌊P·out·in/(out + in)⌋.")
    Double ratio;

    @Option(
            names = "--method",
            paramLabel = "svd|randomized|asvd|svd-llm",
            defaultValue = "svd",
            description = "Factorisation (default: ${DEFAULT-VALUE}).")
    String method;

    @Option(
            names = "--targets",
            paramLabel = "PATTERN",
            defaultValue = SvdLowRank.DEFAULT_TARGETS,
            description = "Comma-separated groups (attention, mlp), roles (attn_q, attn_k, attn_v, attn_o, mlp_gate,"
                    + " mlp_up, mlp_down, lm_head) or name patterns with * (default: ${DEFAULT-VALUE}). Embeddings"
                    + " and norms are never factored.")
    String targets;

    @Option(
            names = "--store",
            paramLabel = "factors|dense",
            defaultValue = "factors",
            description = "Write factor pairs, or the dense reconstruction for tools that cannot load factors"
                    + " (default: ${DEFAULT-VALUE}).")
    String store;

    @Option(names = "--alpha", paramLabel = "A", description = "ASVD's exponent α of mean|x| (default: 0.5).")
    Double alpha;

    @Option(
            names = "--oversampling",
            paramLabel = "P",
            description = "Randomized SVD: extra sketch columns (default: " + SvdLowRank.DEFAULT_OVERSAMPLING + ").")
    Integer oversampling;

    @Option(
            names = "--power-iterations",
            paramLabel = "Q",
            description = "Randomized SVD: power iterations (default: " + SvdLowRank.DEFAULT_POWER_ITERATIONS + ").")
    Integer powerIterations;

    @Option(names = "--seed", paramLabel = "S", defaultValue = "0", description = "Randomized SVD seed.")
    long seed;

    @Option(names = "--plot", paramLabel = "FILE.png", description = "Write the singular-value spectra as a PNG.")
    Path plot;

    @Mixin
    CalibrationOptions calib;

    @Mixin
    OutputOptions output;

    @Spec
    picocli.CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws JsonProcessingException {
        SvdLowRank.Params params = params();
        LowRankOutput.Store storeMode = LowRankOutput.Store.parse(store);
        if (params.method().needsCalibration()) {
            calib.require("by --method " + params.method().id() + " (it needs calibration activations)");
        } else if (calib.given()) {
            throw InvalidInputException.of(
                    "--calib",
                    "--method " + params.method().id() + " uses no activations",
                    "--calib only with asvd or svd-llm",
                    calib.text);
        }
        if (plot != null && !plot.getFileName().toString().endsWith(".png")) {
            throw InvalidInputException.of("--plot", "not a PNG file name", "FILE.png", plot);
        }
        Map<String, Object> summary = new LinkedHashMap<>();
        try (Model m = Model.open(in)) {
            boolean onnx = m.format() == Model.Format.ONNX;
            checkOutput(onnx);
            for (Weight w : m.graph().weights()) {
                if (w.tensor() instanceof LowRankTensor) {
                    throw InvalidInputException.of(
                            in.toString(),
                            "already factorised (weight '" + w.name() + "' is stored as factors)",
                            "a dense model",
                            "factor pairs; hint: factor the original model");
                }
            }
            List<Weight> chosen = SvdLowRank.targets(m.graph(), targets);
            List<String> skipped = new ArrayList<>();
            if (onnx && storeMode == LowRankOutput.Store.FACTORS) {
                List<Weight> ok = new ArrayList<>();
                for (Weight w : chosen) {
                    Optional<String> why = LowRankOutput.onnxRefusal(m.onnx().orElseThrow(), w);
                    if (why.isPresent()) {
                        skipped.add(w.name() + ": left dense (" + why.get() + ")");
                    } else {
                        ok.add(w);
                    }
                }
                chosen = ok;
            }
            Map<String, Weight> byName = new LinkedHashMap<>();
            for (Weight w : chosen) {
                byName.put(w.name(), w);
            }
            // Plan on shapes: rank and ratio rules fix every rank (and the matrices left dense) before any data is
            // read; the energy rule needs each spectrum (a planning pass below, after calibration).
            Map<String, SvdLowRank.Result> known = new LinkedHashMap<>(); // decided before writing (dense)
            Map<String, Weight> toFactor = new LinkedHashMap<>();
            Map<String, Integer> ranks = new LinkedHashMap<>();
            for (Weight w : chosen) {
                int[] oi = SvdLowRank.outIn(w);
                int r = SvdLowRank.rankFromShape(params, oi[0], oi[1]);
                if (r == 0) {
                    known.put(w.name(), SvdLowRank.denseFromShape(w.name(), oi[0], oi[1], params));
                } else {
                    toFactor.put(w.name(), w);
                    if (r > 0) {
                        ranks.put(w.name(), r);
                    }
                }
            }
            LinearInputStats stats = calibrate(m, params, toFactor, summary);
            Map<String, String> meta =
                    new LinkedHashMap<>(onnx ? Map.of() : m.checkpoint().metadata());
            Map<String, String> described = new LinkedHashMap<>(params.describe());
            described.put("targets", targets);
            described.put("store", storeMode.id());
            if (calib.given()) {
                described.put("calib", calib.text.getFileName().toString());
                described.put("calib_tokens", Long.toString(calib.tokens));
            }
            meta.putAll(Provenance.of(
                    Scion.version(),
                    "lowrank",
                    described,
                    Map.of(in.getFileName().toString(), m.checkpoint())));
            Map<String, SvdLowRank.Result> done;
            try (Factoring f = new Factoring(params, stats, toFactor)) {
                if (params.rule().kind() == SvdLowRank.RankRule.Kind.ENERGY) {
                    f.planEnergy(known, ranks);
                }
                Map<String, Weight> factored = new LinkedHashMap<>();
                for (String name : ranks.keySet()) {
                    factored.put(name, byName.get(name));
                }
                // Stream: each target is factored when the writer reaches its tensors, and dropped once written.
                LowRankOutput.Streamed streamed = new LowRankOutput.Streamed(factored, ranks, storeMode, f::factor);
                if (onnx) {
                    writeOnnx(m, byName, streamed, storeMode, meta, summary);
                } else {
                    writeSafetensors(m, byName, streamed, ranks, params, storeMode, meta, summary);
                }
                done = streamed.results();
            }
            Map<String, SvdLowRank.Result> results = new LinkedHashMap<>();
            for (String name : byName.keySet()) {
                SvdLowRank.Result r = known.containsKey(name) ? known.get(name) : done.get(name);
                if (r == null) {
                    throw new IllegalStateException("'" + name + "' was planned but not written");
                }
                results.put(name, r);
            }
            report(output.json, m, results, skipped, params, summary);
            if (plot != null) {
                plot(results, byName, params);
                summary.put("plot", plot.toString());
            }
        }
        output.print(summary, spec.commandLine().getOut(), 16);
        return ExitCodes.OK;
    }

    private SvdLowRank.Params params() {
        int given = (rank != null ? 1 : 0) + (energy != null ? 1 : 0) + (ratio != null ? 1 : 0);
        if (given != 1) {
            throw InvalidInputException.of(
                    "scion lowrank",
                    "exactly one rank rule is needed",
                    "one of --rank R, --energy E, --ratio P",
                    given == 0 ? "none" : given + " of them");
        }
        SvdLowRank.RankRule rule = rank != null
                ? new SvdLowRank.RankRule(SvdLowRank.RankRule.Kind.RANK, rank)
                : energy != null
                        ? new SvdLowRank.RankRule(SvdLowRank.RankRule.Kind.ENERGY, energy)
                        : new SvdLowRank.RankRule(SvdLowRank.RankRule.Kind.RATIO, ratio);
        SvdLowRank.Method mth = SvdLowRank.Method.parse(method);
        if (alpha != null && mth != SvdLowRank.Method.ASVD) {
            throw InvalidInputException.of("--alpha", "applies to asvd", "--method asvd", method);
        }
        if ((oversampling != null || powerIterations != null) && mth != SvdLowRank.Method.RANDOMIZED) {
            throw InvalidInputException.of(
                    oversampling != null ? "--oversampling" : "--power-iterations",
                    "applies to the randomized SVD",
                    "--method randomized",
                    method);
        }
        return new SvdLowRank.Params(
                mth,
                rule,
                alpha == null ? SvdLowRank.DEFAULT_ALPHA : alpha,
                oversampling == null ? SvdLowRank.DEFAULT_OVERSAMPLING : oversampling,
                powerIterations == null ? SvdLowRank.DEFAULT_POWER_ITERATIONS : powerIterations,
                seed);
    }

    private void checkOutput(boolean onnx) {
        String name = out.getFileName().toString();
        if (onnx && !name.endsWith(".onnx")) {
            throw InvalidInputException.of(
                    out.toString(), "ONNX input factorises to ONNX", "an output .onnx file", out);
        }
        if (!onnx && (name.endsWith(".onnx") || name.endsWith(".safetensors"))) {
            throw InvalidInputException.of(
                    out.toString(), "a factorised model needs its own config.json", "an output folder", "a file name");
        }
    }

    private LinearInputStats calibrate(
            Model m, SvdLowRank.Params params, Map<String, Weight> targets, Map<String, Object> summary) {
        if (!params.method().needsCalibration()) {
            return null;
        }
        List<String> names = new ArrayList<>(targets.keySet());
        LinearInputStats stats = params.method() == SvdLowRank.Method.SVD_LLM
                ? LinearInputStats.withGram(names)
                : LinearInputStats.meanAbs(names);
        try (stats) {
            Calibration.Request request =
                    Calibration.Request.of(Calibration.Positions.ALL_TOKENS).withLinearInputs(names);
            Calibration.Summary s = calib.run(m, request, stats);
            summary.put(
                    "calibration",
                    String.format(
                            Locale.ROOT,
                            "%d tokens in %d sequences from %s (%.1f s)",
                            s.tokens(),
                            s.sequences(),
                            calib.text.getFileName(),
                            s.seconds()));
        }
        return stats;
    }

    /**
     * One weight's factorisation on demand: reads W (float64), takes its calibration statistics and factors it. Owns
     * the ONNX Runtime products of the randomized SVD and the progress bar (target elements factored).
     */
    private static final class Factoring implements AutoCloseable {
        private final SvdLowRank.Params params;
        private final LinearInputStats stats;
        private final OrtMatMul ort;
        private final LowRankOps.Products products;
        private final Progress bar;
        private final Map<String, Weight> targets;

        Factoring(SvdLowRank.Params params, LinearInputStats stats, Map<String, Weight> targets) {
            this.params = params;
            this.stats = stats;
            this.targets = targets;
            this.ort = params.method() == SvdLowRank.Method.RANDOMIZED
                    ? new OrtMatMul(Runtime.getRuntime().availableProcessors())
                    : null;
            this.products = ort != null ? ort : LowRankOps.Products.JAVA;
            long total = 0;
            for (Weight w : targets.values()) {
                total += w.tensor().numel();
            }
            boolean twice = params.rule().kind() == SvdLowRank.RankRule.Kind.ENERGY;
            this.bar = Progress.forTerminal(
                    twice ? "spectra, then factorising" : "factorising", twice ? 2 * total : total);
        }

        SvdLowRank.Result factor(Weight w) {
            DMatrixRMaj mat = SvdLowRank.read(w);
            double[] meanAbs = params.method() == SvdLowRank.Method.ASVD ? stats.meanAbs(w.name()) : null;
            DMatrixRMaj gram = params.method() == SvdLowRank.Method.SVD_LLM ? stats.gram(w.name()) : null;
            SvdLowRank.Result r = SvdLowRank.factor(w.name(), mat, params, meanAbs, gram, products);
            bar.advance(w.tensor().numel());
            return r;
        }

        /**
         * The energy rule's ranks, before anything is written (the stored shapes depend on them): every target is
         * factored once here and only its rank kept ({@code ranks}), or its report when it stays dense ({@code
         * known}); the writer factors the others again (same result, deterministic).
         */
        void planEnergy(Map<String, SvdLowRank.Result> known, Map<String, Integer> ranks) {
            for (Weight w : targets.values()) {
                SvdLowRank.Result r = factor(w);
                if (r.dense()) {
                    known.put(w.name(), r.withoutFactors());
                    bar.advance(w.tensor().numel());
                } else {
                    ranks.put(w.name(), r.rank());
                }
            }
        }

        @Override
        public void close() {
            bar.close();
            if (ort != null) {
                ort.close();
            }
        }
    }

    private void writeSafetensors(
            Model m,
            Map<String, Weight> byName,
            LowRankOutput.Streamed streamed,
            Map<String, Integer> ranks,
            SvdLowRank.Params params,
            LowRankOutput.Store storeMode,
            Map<String, String> meta,
            Map<String, Object> summary) {
        String cfg = LowRankOutput.config(m.config(), byName, ranks, params, storeMode);
        // No writing bar: the factorising bar follows the work, since the writer's reads drive the factorisation.
        // The staged folder must open as a model of its family: factors pair up and multiply to the shapes.
        CheckpointFolder.Written w = CheckpointFolder.at(out, meta)
                .force(output.force)
                .companionsFrom(m.location())
                .label(null)
                .write(LowRankOutput.safetensors(m, byName, streamed.tensors()), cfg);
        summary.put("output", out.toString());
        summary.put("files", w.files().size());
        summary.put("tensor_bytes", w.tensorBytes());
    }

    private void writeOnnx(
            Model m,
            Map<String, Weight> byName,
            LowRankOutput.Streamed streamed,
            LowRankOutput.Store storeMode,
            Map<String, String> meta,
            Map<String, Object> summary) {
        OnnxModel src = m.onnx().orElseThrow();
        LowRankOutput.OnnxRewrite rw = LowRankOutput.onnx(src, byName, streamed.tensors(), storeMode);
        OnnxWriter.Written w = OnnxWriter.write(
                src,
                rw.proto(),
                rw.replacements(),
                out,
                OnnxWriter.Options.defaults().withForce(output.force).withMetadata(meta));
        summary.put("output", w.model().toString());
        w.dataFile().ifPresent(p -> summary.put("external_data", p.toString()));
        summary.put("model_bytes", w.modelBytes() + w.dataBytes());
        summary.put("inputs", String.join(", ", src.inputNames()) + " (unchanged)");
        summary.put("outputs", String.join(", ", src.outputNames()) + " (unchanged)");
    }

    private static void report(
            boolean json,
            Model m,
            Map<String, SvdLowRank.Result> results,
            List<String> skipped,
            SvdLowRank.Params params,
            Map<String, Object> summary) {
        long before = 0;
        long after = 0;
        long bytesSaved = 0;
        int factored = 0;
        List<Object> rows = new ArrayList<>();
        for (SvdLowRank.Result r : results.values()) {
            before += r.parametersBefore();
            after += r.parametersAfter();
            Weight w = m.graph().find(r.name()).orElseThrow();
            int size = w.tensor().dtype().size();
            long saved = (r.parametersBefore() - r.parametersAfter()) * size;
            bytesSaved += saved;
            factored += r.dense() ? 0 : 1;
            Map<String, Object> row = new LinkedHashMap<>();
            row.put("name", r.name());
            row.put("shape", List.of(r.out(), r.in()));
            row.put("rank", r.rank());
            row.put("dense", r.dense());
            row.put("kept_energy", r.keptEnergy());
            row.put("relative_error", r.relativeError());
            row.put(params.method() == SvdLowRank.Method.SVD_LLM ? "output_error" : "tail", r.tail());
            row.put("parameters", r.parametersBefore());
            row.put("parameters_after", r.parametersAfter());
            row.put("bytes_saved", saved);
            if (!r.note().isEmpty()) {
                row.put("note", r.note());
            }
            rows.add(json ? row : text(r, params, saved));
        }
        long all = m.graph().parameterCount();
        summary.put("family", m.graph().architecture().family());
        summary.put("method", params.method().id() + " (" + params.rule().describe() + ", per matrix)");
        summary.put("factored", factored + " of " + results.size() + " target matrices");
        summary.put(
                "parameters",
                String.format(
                        Locale.ROOT,
                        "targets %d → %d (%.1f %%); model %d → %d (%.1f %%)",
                        before,
                        after,
                        before > 0 ? 100.0 * after / before : 100.0,
                        all,
                        all - (before - after),
                        100.0 * (all - (before - after)) / all));
        summary.put("bytes_saved", bytesSaved);
        if (!skipped.isEmpty()) {
            summary.put("skipped", skipped);
        }
        summary.put("matrices", rows);
    }

    /** One line per matrix for the text report. */
    private static String text(SvdLowRank.Result r, SvdLowRank.Params params, long saved) {
        String shape = r.out() + "×" + r.in();
        if (r.dense()) {
            return String.format(Locale.ROOT, "%-48s %-10s dense  (%s)", r.name(), shape, r.note());
        }
        return String.format(
                Locale.ROOT,
                "%-48s %-10s r=%-5d energy %.4f  rel.err %.4f  %s %.4f  params %d → %d  −%s%s",
                r.name(),
                shape,
                r.rank(),
                r.keptEnergy(),
                r.relativeError(),
                params.method() == SvdLowRank.Method.SVD_LLM ? "out.err" : "tail",
                r.tail(),
                r.parametersBefore(),
                r.parametersAfter(),
                Progress.bytes(saved),
                r.note().isEmpty() ? "" : "  (" + r.note() + ")");
    }

    /** σ_i/σ_1 per role, averaged over layers, on a log scale. */
    private void plot(Map<String, SvdLowRank.Result> results, Map<String, Weight> byName, SvdLowRank.Params params) {
        Map<String, double[]> sums = new LinkedHashMap<>();
        Map<String, Integer> counts = new LinkedHashMap<>();
        for (SvdLowRank.Result r : results.values()) {
            double[] s = r.spectrum();
            if (s.length == 0 || s[0] <= 0) {
                continue;
            }
            String key = byName.get(r.name()).role().id() + " " + r.out() + "×" + r.in();
            double[] acc = sums.computeIfAbsent(key, k -> new double[s.length]);
            int n = Math.min(acc.length, s.length);
            for (int i = 0; i < n; i++) {
                acc[i] += s[i] / s[0];
            }
            counts.merge(key, 1, Integer::sum);
        }
        List<Plots.Series> series = new ArrayList<>();
        for (Map.Entry<String, double[]> e : sums.entrySet()) {
            double[] y = e.getValue().clone();
            int c = counts.get(e.getKey());
            for (int i = 0; i < y.length; i++) {
                y[i] /= c;
            }
            series.add(Plots.Series.ofRanks(e.getKey() + " (" + c + ")", y));
        }
        Plots.lines(
                plot,
                "Singular values σ_i/σ_1 of the factored matrices ("
                        + params.method().id() + "), mean per role over layers",
                series,
                "rank i",
                "σ_i / σ_1",
                true);
    }
}
