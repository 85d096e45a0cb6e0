package scion.cli;

import com.fasterxml.jackson.core.JsonProcessingException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
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
import scion.io.arch.Dims;
import scion.io.arch.WeightGraph;
import scion.io.onnx.OnnxWriter;
import scion.io.runtime.calibration.Calibration;
import scion.prune.LayerDrop;
import scion.prune.OnnxSubcloning;
import scion.prune.Subcloning;

/**
 * {@code scion subclone MODEL OUT --hidden D' [--layers L'] [--ffn F'] [--heads H'] --calib TEXT}: a smaller model
 * initialised from a larger one by {@link Subcloning} — the most important residual dimensions, FFN neurons and whole
 * attention heads kept (importance from calibration activations), blocks removed to reach L', norm scales rescaled by
 * √(D/D'). The shape is checked before the calibration runs; the output is streamed into a staging folder (or file),
 * checked and renamed into place.
 */
@Command(
        name = "subclone",
        description = {
            "Initialise a smaller model from a larger one (weight subcloning, Samragh et al. 2023): keep the most"
                    + " important residual dimensions (one set for every layer), FFN neurons and whole attention heads"
                    + " per block, measured on calibration text, and remove blocks to reach --layers.",
            "Not function-preserving: the result is an initialisation for training. Norm scales are multiplied by"
                    + " √(D/D') (--no-rescale to turn off) so normalised activations keep their scale."
        },
        mixinStandardHelpOptions = true)
final class SubcloneCommand implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "MODEL", description = "A Hugging Face safetensors folder or an .onnx file.")
    Path in;

    @Parameters(index = "1", paramLabel = "OUT", description = "The output folder (an .onnx file for ONNX input).")
    Path out;

    @Option(names = "--hidden", paramLabel = "D'", required = true, description = "The new hidden size (≤ D).")
    int hidden;

    @Option(names = "--layers", paramLabel = "L'", description = "The new number of blocks (default: all kept).")
    Integer layers;

    @Option(names = "--ffn", paramLabel = "F'", description = "MLP neurons per block (default: F·D'/D).")
    Integer ffn;

    @Option(
            names = "--heads",
            paramLabel = "H'",
            description = "Query heads per block (default: H·D'/D); head_dim is kept; with grouped-query attention a"
                    + " multiple of the group size.")
    Integer heads;

    @Option(
            names = "--metric",
            paramLabel = "block-influence|angular|last",
            defaultValue = "block-influence",
            description = "How blocks are chosen for removal (default: ${DEFAULT-VALUE}).")
    String layerMetric;

    @Option(names = "--no-rescale", description = "Do not multiply the norm scales by √(D/D').")
    boolean noRescale;

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
        calibration.require("for subcloning (neuron importance comes from calibration activations)");
        Map<String, Object> summary = new LinkedHashMap<>();
        try (Model m = Model.open(in)) {
            boolean onnx = m.format() == Model.Format.ONNX;
            String name = out.getFileName().toString();
            if (onnx && !name.endsWith(".onnx")) {
                throw InvalidInputException.of(
                        out.toString(), "ONNX input is subcloned to ONNX", "an output path ending in .onnx", out);
            }
            if (!onnx && (name.endsWith(".onnx") || name.endsWith(".safetensors"))) {
                throw InvalidInputException.of(
                        out.toString(), "a subcloned model needs its own config.json", "an output folder", name);
            }
            if (onnx) {
                shards.refuseForOnnx();
            }
            long shard = shards.bytes();
            WeightGraph graph = m.graph();
            Subcloning.Params params = new Subcloning.Params(
                    hidden,
                    layers == null ? 0 : layers,
                    ffn == null ? 0 : ffn,
                    heads == null ? 0 : heads,
                    !noRescale,
                    LayerDrop.Metric.parse(layerMetric));
            Subcloning.check(graph, params); // every shape problem, before the calibration runs
            if (onnx) {
                OnnxSubcloning.check(m, params);
            }
            Subcloning.Importance importance = new Subcloning.Importance(graph);
            Calibration.Summary cs;
            try (Progress bar = Progress.forTerminal("calibrating (tokens)", calibration.tokens)) {
                cs = calibration.run(m, Subcloning.request(), b -> {
                    importance.accept(b);
                    bar.advance(b.tokens());
                });
            }
            Subcloning.Plan plan = Subcloning.plan(graph, params, importance);
            Map<String, String> prov = new LinkedHashMap<>(plan.describe());
            prov.put("calib", calibration.text.getFileName().toString());
            prov.put("calib_tokens", Long.toString(cs.tokens()));
            Map<String, String> meta = new LinkedHashMap<>(m.checkpoint().metadata());
            meta.putAll(Provenance.of(Scion.version(), "subclone", prov, Map.of(name(in), m.checkpoint())));
            summary.put("output", out.toString());
            summary.put("family", graph.architecture().family());
            if (onnx) {
                OnnxSubcloning.Result r = OnnxSubcloning.write(
                        m,
                        plan,
                        out,
                        OnnxWriter.Options.defaults().withForce(output.force).withMetadata(meta));
                summary.put("weights", r.slicedWeights() + " initializers sliced");
                summary.put("constants", r.rewrites().rewrites().size() + " shape constants rewritten (graph kept)");
                if (!r.rewrites().suspicious().isEmpty()) {
                    summary.put("check", r.rewrites().suspicious());
                }
                summary.put(
                        "model_bytes", r.written().modelBytes() + r.written().dataBytes());
            } else {
                write(m, plan, shard, meta, summary);
            }
            report(plan, importance, cs, summary);
        }
        output.print(summary, spec.commandLine().getOut(), 16);
        return ExitCodes.OK;
    }

    private static String name(Path p) {
        return p.getFileName().toString();
    }

    private void write(Model m, Subcloning.Plan plan, long shard, Map<String, String> meta, Map<String, Object> s) {
        Dims t = plan.shape().target();
        CheckpointFolder.Written w = CheckpointFolder.at(out, meta)
                .force(output.force)
                .shardSize(shard)
                .companionsFrom(m.location())
                .check(
                        staged -> { // the staged folder must read back with the planned shape
                            Dims got = staged.graph().dims();
                            if (got.hidden() != t.hidden() || got.layers() != t.layers() || got.heads() != t.heads()) {
                                throw new IllegalStateException("staged output reads as " + got + "; planned " + t);
                            }
                        })
                .write(
                        Subcloning.tensors(m.graph(), plan),
                        Subcloning.config(m.graph(), plan).toJson());
        s.put("files", w.files().size());
        s.put("tensor_bytes", w.tensorBytes());
    }

    private static void report(
            Subcloning.Plan plan, Subcloning.Importance imp, Calibration.Summary cs, Map<String, Object> s) {
        Dims a = plan.shape().source();
        Dims b = plan.shape().target();
        s.put("hidden", a.hidden() + " → " + b.hidden());
        s.put("heads", a.heads() + " → " + b.heads() + " (head_dim " + a.headDim() + ")");
        s.put("kv_heads", a.kvHeads() + " → " + b.kvHeads());
        s.put("intermediate", a.ffn() + " → " + b.ffn());
        s.put("layers", a.layers() + " → " + b.layers());
        List<Integer> removed = new ArrayList<>();
        for (int l = 0; l < a.layers(); l++) {
            final int x = l;
            if (Arrays.stream(plan.blocks()).noneMatch(v -> v == x)) {
                removed.add(l);
            }
        }
        if (!removed.isEmpty()) {
            double[] bi = imp.residualStats().blockInfluence();
            s.put(
                    "blocks_removed",
                    removed + " by " + plan.params().layerRule().id() + " (block influence " + fmtList(bi, removed)
                            + ")");
        }
        s.put(
                "rescale",
                plan.params().rescale()
                        ? String.format(Locale.ROOT, "norm scales × √(D/D') = %.4f", plan.scale())
                        : "none");
        double[] rs = plan.residualScores();
        s.put(
                "residual_kept",
                String.format(
                        Locale.ROOT,
                        "%d of %d dims, %.1f%% of the importance; first %s",
                        plan.residual().length,
                        rs.length,
                        100 * plan.keptResidualShare(),
                        head(plan.residual(), 12)));
        s.put("residual_scores", stats(rs, plan.residual()));
        double ffnShare = 0;
        int n = 0;
        List<String> headLines = new ArrayList<>();
        for (int l : plan.blocks()) {
            double[] f = imp.ffnScores(l);
            ffnShare += share(f, plan.ffn()[l]);
            n++;
            double[] h = imp.headScores(l, a.heads(), a.headDim());
            headLines.add(String.format(
                    Locale.ROOT,
                    "block %d: q %s kv %s (%.1f%% of head importance)",
                    l,
                    Arrays.toString(plan.qHeads()[l]),
                    Arrays.toString(plan.kvHeads()[l]),
                    100 * share(h, plan.qHeads()[l])));
        }
        s.put(
                "ffn_kept",
                String.format(Locale.ROOT, "%.1f%% of the FFN importance (mean over blocks)", 100 * ffnShare / n));
        s.put("heads_kept", headLines);
        s.put(
                "calibration",
                String.format(
                        Locale.ROOT,
                        "%d tokens in %d sequences, %.1f s, %.0f tokens/s",
                        cs.tokens(),
                        cs.sequences(),
                        cs.seconds(),
                        cs.tokensPerSecond()));
        if (!plan.notes().isEmpty()) {
            s.put("notes", plan.notes());
        }
    }

    private static String fmtList(double[] v, List<Integer> idx) {
        List<String> o = new ArrayList<>();
        for (int i : idx) {
            o.add(String.format(Locale.ROOT, "%.4f", v[i]));
        }
        return String.join(", ", o);
    }

    private static String head(int[] v, int k) {
        StringBuilder sb = new StringBuilder("[");
        for (int i = 0; i < Math.min(k, v.length); i++) {
            sb.append(i == 0 ? "" : ", ").append(v[i]);
        }
        return sb.append(v.length > k ? ", …]" : "]").toString();
    }

    private static double share(double[] scores, int[] kept) {
        double all = 0;
        double k = 0;
        for (double x : scores) {
            all += x;
        }
        for (int i : kept) {
            k += scores[i];
        }
        return all > 0 ? k / all : 0;
    }

    private static String stats(double[] rs, int[] kept) {
        boolean[] isKept = new boolean[rs.length];
        for (int i : kept) {
            isKept[i] = true;
        }
        double minKept = Double.POSITIVE_INFINITY;
        double maxDropped = 0;
        for (int j = 0; j < rs.length; j++) {
            if (isKept[j]) {
                minKept = Math.min(minKept, rs[j]);
            } else {
                maxDropped = Math.max(maxDropped, rs[j]);
            }
        }
        double[] sorted = rs.clone();
        Arrays.sort(sorted);
        return String.format(
                Locale.ROOT,
                "min %.3f, median %.3f, max %.3f; lowest kept %.3f, highest dropped %.3f",
                sorted[0],
                sorted[sorted.length / 2],
                sorted[sorted.length - 1],
                minKept,
                kept.length == rs.length ? Double.NaN : maxDropped);
    }
}
