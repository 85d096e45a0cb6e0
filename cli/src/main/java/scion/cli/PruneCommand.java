package scion.cli;

import com.fasterxml.jackson.core.JsonProcessingException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.Provenance;
import scion.io.config.ModelConfig;
import scion.io.config.ModelConfig.Field;
import scion.io.onnx.OnnxWriter;
import scion.io.runtime.calibration.Calibration;
import scion.io.runtime.calibration.ResidualStats;
import scion.prune.LayerDrop;
import scion.prune.OnnxLayerDrop;

/**
 * {@code scion prune MODEL OUT}: a model with transformer blocks removed ({@link LayerDrop}), either the blocks given
 * ({@code --drop 3,4}) or the {@code --remove N} blocks a metric picks from the residual stream of calibration text
 * ({@code angular}: Gromov et al.; {@code block-influence}: ShortGPT; {@code last}: the baseline). Reports the full
 * angular-distance table d(l, n) and block influence when calibrated, and draws the d(l, n) heatmap ({@code --plot}).
 * Safetensors in, safetensors out (config.json updated); ONNX in, ONNX out (graph cut, {@link OnnxLayerDrop}).
 */
@Command(
        name = "prune",
        description = {
            "Remove transformer blocks: --drop I,J,... removes those blocks; --remove N removes the N blocks a metric"
                    + " picks from calibration text (--calib).",
            "Metrics: 'angular' (default; the contiguous block of N whose input and output residual streams are"
                    + " closest, arccos(cos)/π at the last token of each sequence; Gromov et al. 2024),"
                    + " 'block-influence' (the N blocks with the lowest 1 − cos(input, output) over all tokens;"
                    + " ShortGPT), 'last' (the N blocks before the final one; no calibration).",
            "The output is a real smaller checkpoint: blocks removed and renumbered, config.json updated (safetensors),"
                    + " or the graph cut and the residual stream rewired (ONNX). Not function-preserving."
        },
        mixinStandardHelpOptions = true)
final class PruneCommand implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "MODEL", description = "A Hugging Face safetensors folder or an .onnx file.")
    Path in;

    @Parameters(index = "1", paramLabel = "OUT", description = "The output folder (an .onnx file for ONNX input).")
    Path out;

    @Option(names = "--drop", paramLabel = "I,J,...", description = "Remove these blocks (0-based indices).")
    String drop;

    @Option(names = "--remove", paramLabel = "N", description = "Remove N blocks chosen by --metric.")
    Integer remove;

    @Option(
            names = "--metric",
            paramLabel = "angular|block-influence|last",
            description = "How --remove chooses (default: angular; angular and block-influence need --calib).")
    String metric;

    @Option(
            names = "--all-tokens",
            description = "Average the angular distance over every token, not the last token of each sequence"
                    + " (block influence and encoders always use every token).")
    boolean allTokens;

    @Option(
            names = "--plot",
            paramLabel = "FILE.png",
            description = "Draw the angular distance d(l, n) for every start l and block length n (needs --calib).")
    Path plot;

    @Mixin
    ShardOptions shards;

    @Mixin
    CalibrationOptions calibration;

    @Mixin
    OutputOptions output;

    @Spec
    picocli.CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws JsonProcessingException {
        if ((drop == null) == (remove == null)) {
            throw InvalidInputException.of(
                    "scion prune",
                    "which blocks to remove",
                    "exactly one of --drop I,J,... and --remove N",
                    drop == null ? "neither" : "both");
        }
        if (metric != null && remove == null) {
            throw InvalidInputException.of("--metric", "applies to --remove", "--remove N with it", "--drop");
        }
        LayerDrop.Metric m = metric == null ? LayerDrop.Metric.ANGULAR : LayerDrop.Metric.parse(metric);
        if (remove != null && m.calibrated() && !calibration.given()) {
            throw InvalidInputException.of(
                    "--metric " + m.id(),
                    "needs calibration activations",
                    "--calib TEXT (real text the model was trained for)",
                    "no --calib; hint: --metric last needs none");
        }
        if (plot != null && !calibration.given()) {
            throw InvalidInputException.of("--plot", "draws the calibrated distances", "--calib TEXT", "no --calib");
        }
        if (plot != null
                && !plot.getFileName().toString().toLowerCase(Locale.ROOT).endsWith(".png")) {
            throw InvalidInputException.of("--plot", "writes a PNG image", "a file name ending in .png", plot);
        }
        if (calibration.given() && !Files.isRegularFile(calibration.text)) {
            throw InvalidInputException.of(
                    calibration.text.toString(), "calibration text not found", "a UTF-8 text file", "none");
        }
        if (Files.exists(out, LinkOption.NOFOLLOW_LINKS) && !output.force) {
            throw InvalidInputException.of(
                    out.toString(), "output already exists", "a new path (or --force)", "an existing file or folder");
        }
        Map<String, Object> summary = new LinkedHashMap<>();
        try (Model model = Model.open(in)) {
            boolean onnx = model.format() == Model.Format.ONNX;
            checkOutput(onnx);
            int layers = model.graph().dims().layers();
            int[] given = drop != null ? LayerDrop.parseDrop(drop, layers) : null;
            if (remove != null) {
                LayerDrop.last(layers, remove); // range check before any calibration
            }
            if (calibration.given()) {
                calibration.options(); // --calib-length and --calib-device checked before the model runs
            }
            ResidualStats stats = null;
            Calibration.Summary cs = null;
            Calibration.Positions positions = allTokens
                    ? Calibration.Positions.ALL_TOKENS
                    : m.defaultPositions(model.graph().architecture().isCausalLm());
            if (calibration.given()) {
                stats = new ResidualStats(layers);
                ResidualStats acc = stats;
                spec.commandLine()
                        .getErr()
                        .printf(
                                Locale.ROOT,
                                "prune: calibrating %s on %s (up to %d tokens, %s)%n",
                                in.getFileName(),
                                calibration.text.getFileName(),
                                calibration.tokens,
                                positions == Calibration.Positions.LAST_TOKEN
                                        ? "last token of each sequence"
                                        : "every token");
                spec.commandLine().getErr().flush();
                try (Progress bar = Progress.forTerminal("calibrating (tokens)", calibration.tokens)) {
                    cs = calibration.run(model, m.request(positions), b -> {
                        acc.accept(b);
                        bar.advance(b.tokens());
                    });
                }
            }
            if (stats != null) {
                plotted = stats;
                plotTitle = plotTitle(
                        in.getFileName().toString(),
                        cs.tokens(),
                        positions == Calibration.Positions.LAST_TOKEN ? "last token" : "all tokens",
                        layers);
            }
            int[] chosen = given != null
                    ? given
                    : stats != null ? LayerDrop.choose(m, remove, stats) : LayerDrop.last(layers, remove);
            LayerDrop.Plan plan = LayerDrop.plan(model.graph(), chosen, given != null ? null : m);

            Map<String, String> params = new LinkedHashMap<>(plan.parameters());
            if (cs != null) {
                params.put("calib", calibration.text.getFileName().toString());
                params.put("calib_tokens", Long.toString(cs.tokens()));
                params.put("calib_positions", positions.name().toLowerCase(Locale.ROOT));
            }
            Map<String, String> meta = new LinkedHashMap<>(model.checkpoint().metadata());
            meta.putAll(Provenance.of(
                    Scion.version(), "prune", params, Map.of(in.getFileName().toString(), model.checkpoint())));

            summary.put("output", out.toString());
            summary.put("family", model.graph().architecture().family());
            summary.put("layers", layers + " → " + plan.layers());
            summary.put("metric", given != null ? "given (--drop)" : m.id());
            summary.put("dropped", LayerDrop.join(plan.dropped()));
            summary.put(
                    "kept",
                    LayerDrop.join(plan.kept()) + " (source blocks, renumbered 0.." + (plan.layers() - 1) + ")");
            if (cs != null) {
                summary.put(
                        "calibration",
                        String.format(
                                Locale.ROOT,
                                "%d tokens in %d sequences (%s), %.1f s, %.0f tokens/s",
                                cs.tokens(),
                                cs.sequences(),
                                positions == Calibration.Positions.LAST_TOKEN
                                        ? "distances at the last token of each"
                                        : "distances over every token",
                                cs.seconds(),
                                cs.tokensPerSecond()));
                summary.put("reason", reason(plan, m, given != null, stats));
                if (output.json) {
                    summary.put("angular_distance", table(stats));
                    summary.put("block_influence", toList(stats.blockInfluence()));
                } else {
                    summary.put("angular_distance", tableLines(stats));
                    summary.put("block_influence", influenceLine(stats.blockInfluence()));
                }
            } else if (given == null) {
                summary.put("reason", "last: the " + plan.dropped().length + " block(s) before the final one");
            }
            if (onnx) {
                writeOnnx(model, plan, meta, summary);
            } else {
                writeSafetensors(model, plan, meta, summary);
            }
        }
        if (plot != null) {
            drawPlot();
            summary.put("plot", plot.toString());
        }
        output.print(summary, spec.commandLine().getOut(), 16);
        return ExitCodes.OK;
    }

    private ResidualStats plotted;
    private String plotTitle;

    /** A title that fits the heatmap's width (Plots draws about 8 px per character of its bold title font). */
    private static String plotTitle(String model, long tokens, String positions, int layers) {
        int cell = Math.max(18, Math.min(56, 720 / Math.max(1, layers)));
        int chars = (layers * cell + 110) / 8;
        String name = model.length() > 28 ? model.substring(0, 27) + "…" : model;
        String[] options = {
            "angular distance d(l, n): " + name + ", " + tokens + " tokens, " + positions,
            "d(l, n): " + name + ", " + tokens + " tokens, " + positions,
            "d(l, n): " + name,
            "d(l, n)"
        };
        for (String t : options) {
            if (t.length() <= chars) {
                return t;
            }
        }
        return options[options.length - 1];
    }

    /** The heatmap of d(l, n): rows n = 1..L (block length), columns l = 0..L−1 (first block removed). */
    private void drawPlot() {
        int layers = plotted.layers();
        double[][] v = new double[layers][layers];
        List<String> rows = new ArrayList<>();
        List<String> cols = new ArrayList<>();
        for (int n = 1; n <= layers; n++) {
            rows.add(Integer.toString(n));
            for (int l = 0; l < layers; l++) {
                v[n - 1][l] = l + n <= layers ? plotted.angularDistance(l, n) : Double.NaN;
            }
        }
        for (int l = 0; l < layers; l++) {
            cols.add(Integer.toString(l));
        }
        Plots.heatmap(plot, plotTitle, v, rows, cols, "block length n", "first block removed l");
    }

    private void checkOutput(boolean onnx) {
        String name = out.getFileName().toString();
        if (onnx && !name.endsWith(".onnx")) {
            throw InvalidInputException.of(
                    out.toString(), "ONNX input prunes to ONNX", "an output path ending in .onnx", out);
        }
        if (!onnx && (name.endsWith(".onnx") || name.endsWith(".safetensors"))) {
            throw InvalidInputException.of(
                    out.toString(), "a pruned model needs its own config.json", "an output folder", "a file name");
        }
        if (onnx) {
            shards.refuseForOnnx();
        }
    }

    private String reason(LayerDrop.Plan plan, LayerDrop.Metric m, boolean given, ResidualStats stats) {
        int[] d = plan.dropped();
        boolean contiguous = d[d.length - 1] - d[0] == d.length - 1;
        String dist = contiguous
                ? String.format(
                        Locale.ROOT, "; d(%d, %d) = %.4f", d[0], d.length, stats.angularDistance(d[0], d.length))
                : "";
        if (given) {
            return "given" + dist;
        }
        switch (m) {
            case ANGULAR:
                return String.format(
                        Locale.ROOT,
                        "angular: blocks %d..%d have the smallest d(l, %d) of the %d starts%s",
                        d[0],
                        d[d.length - 1],
                        d.length,
                        stats.layers() - d.length + 1,
                        dist);
            case BLOCK_INFLUENCE:
                StringBuilder b = new StringBuilder("block-influence: the " + d.length + " lowest BI:");
                double[] bi = stats.blockInfluence();
                for (int l : d) {
                    b.append(String.format(Locale.ROOT, " BI_%d = %.4f", l, bi[l]));
                }
                return b.toString();
            default:
                return "last: the " + d.length + " block(s) before the final one" + dist;
        }
    }

    /** Rows n = 1..L, columns l = 0..L−1; null where l + n > L. */
    private static List<List<Double>> table(ResidualStats s) {
        List<List<Double>> rows = new ArrayList<>();
        for (int n = 1; n <= s.layers(); n++) {
            List<Double> row = new ArrayList<>();
            for (int l = 0; l < s.layers(); l++) {
                row.add(l + n <= s.layers() ? round(s.angularDistance(l, n)) : null);
            }
            rows.add(row);
        }
        return rows;
    }

    private static List<String> tableLines(ResidualStats s) {
        List<String> lines = new ArrayList<>();
        StringBuilder head = new StringBuilder("d(l, n)  n\\l");
        for (int l = 0; l < s.layers(); l++) {
            head.append(String.format(Locale.ROOT, " %6d", l));
        }
        lines.add(head.toString());
        for (int n = 1; n <= s.layers(); n++) {
            StringBuilder b = new StringBuilder(String.format(Locale.ROOT, "         %4d", n));
            for (int l = 0; l + n <= s.layers(); l++) {
                b.append(String.format(Locale.ROOT, " %6.4f", s.angularDistance(l, n)));
            }
            lines.add(b.toString());
        }
        return lines;
    }

    private static String influenceLine(double[] bi) {
        StringBuilder b = new StringBuilder();
        for (int l = 0; l < bi.length; l++) {
            b.append(String.format(Locale.ROOT, "%s%d: %.4f", l > 0 ? "  " : "", l, bi[l]));
        }
        return b.toString();
    }

    private static List<Double> toList(double[] v) {
        List<Double> out = new ArrayList<>();
        for (double x : v) {
            out.add(round(x));
        }
        return out;
    }

    private static double round(double v) {
        return Math.round(v * 1e6) / 1e6;
    }

    private void writeSafetensors(Model m, LayerDrop.Plan plan, Map<String, String> meta, Map<String, Object> summary) {
        long shard = shards.bytes();
        ModelConfig cfg = LayerDrop.config(plan, m.config())
                .with(Field.NAME, out.toAbsolutePath().normalize().getFileName().toString());
        CheckpointFolder.Written w = CheckpointFolder.at(out, meta)
                .force(output.force)
                .shardSize(shard)
                .companionsFrom(m.location())
                .check(
                        staged -> { // the staged folder must have L − n blocks
                            int layers = staged.graph().dims().layers();
                            if (layers != plan.layers()) {
                                throw new IllegalStateException(
                                        "pruned model has " + layers + " blocks, planned " + plan.layers());
                            }
                        })
                .write(LayerDrop.tensors(plan, m.graph()), cfg.toJson());
        summary.put("parameters", m.graph().parameterCount() + " → " + w.parameters());
        summary.put("files", w.files().size());
        summary.put("tensor_bytes", w.tensorBytes());
    }

    private void writeOnnx(Model m, LayerDrop.Plan plan, Map<String, String> meta, Map<String, Object> summary) {
        OnnxLayerDrop.Result r = OnnxLayerDrop.prune(m, plan);
        OnnxWriter.Written w = OnnxWriter.write(
                m.onnx().orElseThrow(),
                r.proto(),
                r.replacements(),
                out,
                OnnxWriter.Options.defaults().withForce(output.force).withMetadata(meta));
        summary.put("output", w.model().toString());
        w.dataFile().ifPresent(p -> summary.put("external_data", p.toString()));
        summary.put(
                "graph",
                r.removedNodes() + " nodes and " + r.removedInitializers() + " initializers removed ("
                        + Progress.bytes(r.removedBytes()) + "), residual stream rewired");
        summary.put("inputs", String.join(", ", m.onnx().orElseThrow().inputNames()) + " (unchanged)");
        summary.put("outputs", String.join(", ", m.onnx().orElseThrow().outputNames()) + " (unchanged)");
        summary.put("model_bytes", w.modelBytes() + w.dataBytes());
    }
}
