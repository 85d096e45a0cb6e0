package scion.cli;

import com.fasterxml.jackson.core.JsonProcessingException;
import java.math.BigDecimal;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;
import scion.growth.DepthGrowth;
import scion.growth.GrowthPlan;
import scion.growth.HyperCloning;
import scion.growth.OnnxGrowth;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.Provenance;
import scion.io.arch.Dims;
import scion.io.config.ModelConfig;
import scion.io.onnx.OnnxWriter;

/**
 * {@code scion grow MODEL OUT}: a larger model from a smaller one — wider by HyperCloning ({@code --width}, {@code
 * --ffn}), deeper by {@link DepthGrowth} ({@code --depth}), or both in one pass. The output is streamed tensor by
 * tensor into a staging folder, checked against its new config.json and renamed into place.
 */
@Command(
        name = "grow",
        description = {
            "Grow a checkpoint: wider by HyperCloning (function-preserving: the grown hidden state is N copies of the"
                    + " source's, logits unchanged) and/or deeper (--depth).",
            "Depth: 'identity' adds blocks with zero output projections (exact on pre-LN families); 'stack'"
                    + " duplicates blocks (depth up-scaling, NOT function-preserving: needs training).",
            "Tied embeddings stay tied (the head's 1/N is folded into the final norm). Weights keep their dtype;"
                    + " bf16 with power-of-two factors and --no-noise gives bit-exact weights."
        },
        mixinStandardHelpOptions = true)
final class GrowCommand implements Callable<Integer> {
    @Parameters(
            index = "0",
            paramLabel = "MODEL",
            description = "A Hugging Face safetensors folder, or an .onnx file (width only; the graph is kept).")
    Path in;

    @Parameters(index = "1", paramLabel = "OUT", description = "The output folder (an .onnx file for ONNX input).")
    Path out;

    @Option(
            names = "--width",
            paramLabel = "N",
            description = "Multiply the hidden size and the attention heads by the integer N (head_dim is kept).")
    String width;

    @Option(
            names = "--ffn",
            paramLabel = "M",
            description = "Multiply the MLP intermediate size by the integer M (default: N).")
    String ffn;

    @Option(
            names = "--kv",
            paramLabel = "auto|grow|keep",
            defaultValue = "auto",
            description = "Key/value heads: grow with the query heads, or keep them (auto: keep only for multi-query"
                    + " attention, one key/value head). Default: ${DEFAULT-VALUE}.")
    String kv;

    @Option(
            names = "--noise-snr-db",
            paramLabel = "D",
            description = "Symmetry-breaking noise, D dB below each weight block's power; zero-sum over the input"
                    + " copies, so still function-preserving (default: "
                    + HyperCloning.DEFAULT_NOISE_SNR_DB + ").")
    Double noiseSnrDb;

    @Option(names = "--no-noise", description = "Exact copies, no symmetry-breaking noise.")
    boolean noNoise;

    @Option(
            names = "--seed",
            paramLabel = "S",
            defaultValue = "0",
            description = "Seed of the noise (same seed, same" + " bytes). Default: ${DEFAULT-VALUE}.")
    long seed;

    @Option(names = "--depth", paramLabel = "L", description = "Grow to L transformer blocks.")
    Integer depth;

    @Option(
            names = "--depth-method",
            paramLabel = "identity|stack",
            description = "How new blocks are made (default: identity).")
    String depthMethod;

    @Option(
            names = "--positions",
            paramLabel = "I,J,...",
            description = "Source block indices after which new blocks go, one per new block.")
    String positions;

    @Mixin
    ShardOptions shards;

    @Mixin
    ThreadOptions threads;

    @Mixin
    OutputOptions output;

    @Spec
    picocli.CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws JsonProcessingException {
        if (noNoise && noiseSnrDb != null) {
            throw InvalidInputException.of("--no-noise", "contradicts --noise-snr-db", "one of them", "both");
        }
        if (width == null && ffn == null && depth == null) {
            throw InvalidInputException.of("scion grow", "nothing to grow", "--width N and/or --depth L", "neither");
        }
        threads.threads(); // a bad --threads is refused before anything is read
        Map<String, Object> summary = new LinkedHashMap<>();
        try (Model m = Model.open(in)) {
            boolean onnx = m.format() == Model.Format.ONNX; // ONNX in, ONNX out: growOnnx below
            if (!onnx
                    && (out.getFileName().toString().endsWith(".onnx")
                            || out.getFileName().toString().endsWith(".safetensors"))) {
                throw InvalidInputException.of(
                        out.toString(), "a grown model needs its own config.json", "an output folder", "a file name");
            }
            Dims dims = m.graph().dims();
            Optional<HyperCloning.Params> widthParams = Optional.empty();
            if (width != null || ffn != null) {
                int n = width == null ? 1 : factor("--width", width, dims);
                int f = ffn == null ? n : factor("--ffn", ffn, dims);
                double snr = noNoise
                        ? Double.POSITIVE_INFINITY
                        : noiseSnrDb != null ? noiseSnrDb : HyperCloning.DEFAULT_NOISE_SNR_DB;
                widthParams = Optional.of(new HyperCloning.Params(n, f, kvMode(kv), snr, seed));
            }
            Optional<DepthGrowth.Params> depthParams = Optional.empty();
            if (depth != null) {
                depthParams = Optional.of(DepthGrowth.Params.parse(depth, depthMethod, positions));
            } else if (depthMethod != null || positions != null) {
                throw InvalidInputException.of(
                        depthMethod != null ? "--depth-method" : "--positions",
                        "applies to depth growth",
                        "--depth L with it",
                        "no --depth");
            }
            if (onnx) {
                growOnnx(m, widthParams, depthParams, summary);
            } else {
                long shard = shards.bytes();
                GrowthPlan plan = GrowthPlan.plan(m.graph(), widthParams, depthParams);
                write(m, plan, shard, summary);
            }
        }
        output.print(summary, spec.commandLine().getOut(), 14);
        return ExitCodes.OK;
    }

    private void write(Model m, GrowthPlan plan, long shard, Map<String, Object> summary) {
        Map<String, String> params = new LinkedHashMap<>(plan.parameters());
        params.put("shard_size", shards.describe());
        Map<String, String> meta = new LinkedHashMap<>(m.checkpoint().metadata());
        meta.putAll(Provenance.of(
                Scion.version(), "grow", params, Map.of(in.getFileName().toString(), m.checkpoint())));
        ModelConfig cfg =
                plan.config(out.toAbsolutePath().normalize().getFileName().toString());
        CheckpointFolder.Written w = CheckpointFolder.at(out, meta)
                .force(output.force)
                .shardSize(shard)
                .companionsFrom(m.location())
                .label("growing")
                .write(plan.tensors(threads.threads()), cfg.toJson());
        Dims grown = w.dims();
        Dims src = m.graph().dims();
        summary.put("output", out.toString());
        summary.put("family", m.graph().architecture().family());
        summary.put("hidden", src.hidden() + " → " + grown.hidden());
        summary.put("heads", src.heads() + " → " + grown.heads());
        summary.put("kv_heads", src.kvHeads() + " → " + grown.kvHeads());
        summary.put("intermediate", src.ffn() + " → " + grown.ffn());
        summary.put("layers", src.layers() + " → " + grown.layers());
        summary.put("tied", src.tied() + " → " + grown.tied());
        summary.put("files", w.files().size());
        summary.put("tensor_bytes", w.tensorBytes());
        summary.put("notes", plan.notes());
    }

    // ---- ONNX in, ONNX out (OnnxGrowth): width only; the graph, its inputs and outputs are kept.

    private void growOnnx(
            Model m,
            Optional<HyperCloning.Params> widthParams,
            Optional<DepthGrowth.Params> depthParams,
            Map<String, Object> summary) {
        if (depthParams.isPresent()) {
            DepthGrowth.plan(m.graph(), depthParams.get()); // refuses ONNX with the reason and a hint
        }
        if (!out.getFileName().toString().endsWith(".onnx")) {
            throw InvalidInputException.of(
                    out.toString(), "ONNX input grows to ONNX", "an output path ending in .onnx", out);
        }
        shards.refuseForOnnx();
        OnnxGrowth.Plan plan = OnnxGrowth.plan(m, widthParams.orElseThrow(), threads.threads());
        Map<String, String> params = new LinkedHashMap<>(plan.width().params().describe());
        params.put("kv", plan.width().kvMode().id());
        Map<String, String> meta = Provenance.of(
                Scion.version(), "grow", params, Map.of(in.getFileName().toString(), m.checkpoint()));
        OnnxWriter.Written w = OnnxGrowth.write(
                m,
                plan,
                out,
                OnnxWriter.Options.defaults().withForce(output.force).withMetadata(meta));
        Dims src = plan.width().source();
        Dims grown = plan.width().grown();
        summary.put("output", w.model().toString());
        w.dataFile().ifPresent(p -> summary.put("external_data", p.toString()));
        summary.put("family", m.graph().architecture().family());
        summary.put("hidden", src.hidden() + " → " + grown.hidden());
        summary.put("heads", src.heads() + " → " + grown.heads());
        summary.put("kv_heads", src.kvHeads() + " → " + grown.kvHeads());
        summary.put("intermediate", src.ffn() + " → " + grown.ffn());
        summary.put("weights", plan.grownWeights() + " initializers grown");
        summary.put("constants", plan.rewrites().size() + " shape constants rewritten (graph kept)");
        if (!plan.suspicious().isEmpty()) {
            summary.put("check", plan.suspicious());
        }
        summary.put("inputs", String.join(", ", m.onnx().orElseThrow().inputNames()) + " (unchanged)");
        summary.put("outputs", String.join(", ", m.onnx().orElseThrow().outputNames()) + " (unchanged)");
        summary.put("model_bytes", w.modelBytes() + w.dataBytes());
    }

    /** An integer factor ≥ 1; anything else is refused with what it would mean for this model. */
    private static int factor(String option, String value, Dims dims) {
        BigDecimal v;
        try {
            v = new BigDecimal(value.trim());
        } catch (NumberFormatException e) {
            throw InvalidInputException.of(option, "not a number", "an integer ≥ 1", "'" + value + "'");
        }
        boolean integral = v.signum() > 0 && v.stripTrailingZeros().scale() <= 0;
        if (!integral || v.compareTo(BigDecimal.valueOf(1 << 16)) > 0) {
            String why = "--width".equals(option)
                    ? "HyperCloning stacks whole copies of the hidden state: " + dims.heads() + " heads × " + value
                            + " must be a whole number of heads and " + dims.hidden() + " × " + value
                            + " a whole number of copies"
                    : "each of the " + dims.ffn() + " MLP neurons is copied a whole number of times";
            throw InvalidInputException.of(
                    option, "not an integer growth factor (" + why + ")", "an integer ≥ 1", value);
        }
        return v.intValueExact();
    }

    private static HyperCloning.KvMode kvMode(String s) {
        for (HyperCloning.KvMode k : HyperCloning.KvMode.values()) {
            if (k.id().equals(s.trim().toLowerCase(Locale.ROOT))) {
                return k;
            }
        }
        throw InvalidInputException.of("--kv", "unknown mode", "auto, grow or keep", "'" + s + "'");
    }
}
