package scion.cli;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.PropertyNamingStrategies;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;
import scion.io.Json;
import scion.io.runtime.Device;
import scion.io.runtime.Expectation;
import scion.io.runtime.ModelSummary;
import scion.io.runtime.OutputComparison;
import scion.io.runtime.RuntimeModel;
import scion.io.runtime.SessionFactory;
import scion.io.runtime.TokenInputs;
import scion.io.runtime.Validation;

/**
 * {@code scion validate REF CAND}: runs both models in ONNX Runtime on the same token inputs and compares every
 * output; with {@code --expect} it is a gate (exit code 4 and a one-line reason when it fails).
 */
@Command(
        name = "validate",
        description = {
            "Run REF and CAND in ONNX Runtime on the same inputs and compare their outputs.",
            "Per output: max |Δ|, relative error (max|Δ| / max|ref|), cosine, |Δ| percentiles, Spearman rank"
                    + " correlation; causal LMs: top-1 agreement and both perplexities; encoders: mean-pooled"
                    + " embedding cosine; latency and size of each. A CAND wider by an integer factor in the last axis"
                    + " (a grown model) is compared copy by copy."
        },
        mixinStandardHelpOptions = true)
final class ValidateCommand implements Callable<Integer> {
    @Parameters(
            index = "0",
            paramLabel = "REF",
            description = "The reference: an .onnx file, or a safetensors folder / file (exported in memory).")
    Path ref;

    @Parameters(
            index = "1",
            paramLabel = "CAND",
            description = "The candidate: an .onnx file, or a safetensors folder / file (exported in memory).")
    Path cand;

    @Mixin
    InputOptions inputs;

    @Option(
            names = "--expect",
            paramLabel = "identical|close:TOL",
            description = "Gate: bit-identical outputs, or relative error ≤ TOL for every output; exit 4 if not met.")
    String expect;

    @Option(
            names = "--latency-runs",
            paramLabel = "N",
            defaultValue = "5",
            description =
                    "Timed passes of the first batch per model; the median is reported (default: ${DEFAULT-VALUE}).")
    int latencyRuns;

    @Option(
            names = "--residual-stream",
            description = "Safetensors models: also compare the residual stream entering every layer (outputs"
                    + " hidden_states.0 … hidden_states.L of the export; copy by copy for grown models).")
    boolean residualStream;

    @Option(names = "--json", description = "Print one JSON object instead of text.")
    boolean json;

    @Spec
    picocli.CommandLine.Model.CommandSpec spec;

    /** The options both {@code validate} and {@code eval} take to choose inputs and the device. */
    static final class InputOptions {
        @Option(names = "--text", paramLabel = "FILE", description = "A UTF-8 text file to tokenise.")
        Path text;

        @Option(
                names = "--random-tokens",
                paramLabel = "N",
                description = "N uniformly random token ids instead of text (validate's default: 256).")
        Integer randomTokens;

        @Option(
                names = "--seed",
                paramLabel = "S",
                defaultValue = "0",
                description = "Seed of --random-tokens (default: ${DEFAULT-VALUE}).")
        long seed;

        @Option(
                names = "--tokenizer",
                paramLabel = "FILE",
                description = "A tokenizer.json (default: the one beside the model, or <name>-tokenizer.json).")
        Path tokenizer;

        @Option(
                names = "--max-length",
                paramLabel = "N",
                description = "Longest sequence in tokens (default: 128, at most the model's positions).")
        Integer maxLength;

        @Option(
                names = "--stride",
                paramLabel = "N",
                description = "Causal LMs: start a window every N tokens (default: half the max length).")
        Integer stride;

        @Option(
                names = "--batch",
                paramLabel = "N",
                defaultValue = "8",
                description = "Sequences per forward pass (default: ${DEFAULT-VALUE}).")
        int batch;

        @Option(
                names = "--device",
                paramLabel = "cpu|cuda|auto",
                defaultValue = "cpu",
                description = "Where ONNX Runtime runs (cuda needs the -Pgpu build and CUDA 12 + cuDNN 9;"
                        + " default: ${DEFAULT-VALUE}).")
        String device;

        Device device() {
            Device d = Device.parse(device);
            if (d == Device.CUDA) {
                SessionFactory.requireCuda(); // before anything is loaded
            }
            return d;
        }

        TokenInputs.Request request() {
            return new TokenInputs.Request(text, randomTokens, seed, tokenizer, maxLength, stride);
        }
    }

    @Override
    public Integer call() throws JsonProcessingException {
        Expectation gate = expect == null ? null : Expectation.parse(expect);
        if (inputs.text != null && inputs.randomTokens != null) {
            throw new picocli.CommandLine.ParameterException(
                    spec.commandLine(), "--text and --random-tokens are mutually exclusive");
        }
        Device device = inputs.device();
        Validation.Report report;
        try (RuntimeModel r = RuntimeModel.open(ref, device, residualStream);
                RuntimeModel c = RuntimeModel.open(cand, device, residualStream)) {
            TokenInputs in = inputs.request().build(List.of(r, c));
            report = Validation.run(r, c, in, new Validation.Options(inputs.batch, latencyRuns, gate));
        }
        PrintWriter out = spec.commandLine().getOut();
        if (json) {
            out.println(jsonMapper().writeValueAsString(report));
        } else {
            printText(report, out);
        }
        out.flush();
        if (report.verdict() != null && !report.verdict().passed()) {
            PrintWriter err = spec.commandLine().getErr();
            err.println("scion: validate: " + report.verdict().reason());
            err.flush();
            return ExitCodes.CHECK_FAILED;
        }
        return ExitCodes.OK;
    }

    /** The project's JSON mapper with snake_case names for report records. */
    static ObjectMapper jsonMapper() {
        return Json.mapper().copy().setPropertyNamingStrategy(PropertyNamingStrategies.SNAKE_CASE);
    }

    static void printText(Validation.Report r, PrintWriter o) {
        model(o, "REF", r.ref());
        model(o, "CAND", r.cand());
        o.printf(Locale.ROOT, "  %-10s %s%n", "inputs", r.inputs());
        for (OutputComparison.Result x : r.outputs()) {
            o.println();
            o.printf(
                    Locale.ROOT,
                    "  output '%s'  first batch REF %s, CAND %s%s%n",
                    x.name(),
                    java.util.Arrays.toString(x.refShape()),
                    java.util.Arrays.toString(x.candShape()),
                    x.copies() > 1 ? "  → " + x.copies() + " copies (" + x.layout() + ")" : "");
            List<String[]> rows = new ArrayList<>();
            for (OutputComparison.CopyResult c : x.perCopy()) {
                rows.add(new String[] {
                    x.copies() > 1 ? "copy " + c.copy() : "",
                    c.identical() ? "bit-identical" : "differs",
                    sci(c.maxAbsDiff()),
                    sci(c.meanAbsDiff()),
                    sci(c.relativeError()),
                    String.format(Locale.ROOT, "%.9f", c.cosine())
                });
            }
            o.printf(
                    Locale.ROOT,
                    "    %-7s %-13s %11s %11s %11s %13s%n",
                    "",
                    "",
                    "max |Δ|",
                    "mean |Δ|",
                    "rel. error",
                    "cosine");
            for (String[] row : rows) {
                o.printf(Locale.ROOT, "    %-7s %-13s %11s %11s %11s %13s%n", (Object[]) row);
            }
            o.printf(
                    Locale.ROOT,
                    "    |Δ| p50 %s  p90 %s  p99 %s   Spearman %.9f   (%,d values per copy, max |ref| %.4g)%n",
                    sci(x.absDiffP50()),
                    sci(x.absDiffP90()),
                    sci(x.absDiffP99()),
                    x.spearman(),
                    x.values(),
                    x.perCopy().get(0).maxAbsRef());
        }
        if (!r.unmatched().isEmpty()) {
            o.printf(Locale.ROOT, "  %-10s %s%n", "unmatched", String.join(", ", r.unmatched()));
        }
        o.println();
        if (r.languageModel() != null) {
            Validation.LanguageModelAgreement lm = r.languageModel();
            o.printf(
                    Locale.ROOT,
                    "  %-10s %.4f %% of %,d positions%n",
                    "top-1",
                    100 * lm.top1Agreement(),
                    lm.positions());
            o.printf(
                    Locale.ROOT,
                    "  %-10s REF %.6g   CAND %.6g   (%,d scored tokens)%n",
                    "perplexity",
                    lm.refPerplexity(),
                    lm.candPerplexity(),
                    lm.scoredTokens());
        }
        if (r.embeddings() != null) {
            Validation.EmbeddingAgreement e = r.embeddings();
            o.printf(
                    Locale.ROOT,
                    "  %-10s mean-pooled cosine: mean %.9f  min %.9f   Spearman %.9f   (%d sequences%s)%n",
                    "embeddings",
                    e.meanCosine(),
                    e.minCosine(),
                    e.spearman(),
                    e.sequences(),
                    e.copies() > 1 ? " × " + e.copies() + " copies" : "");
        }
        if (r.verdict() != null) {
            o.printf(
                    Locale.ROOT,
                    "  %-10s %s: %s — %s%n",
                    "gate",
                    r.expect(),
                    r.verdict().passed() ? "passed" : "FAILED",
                    r.verdict().reason());
        }
    }

    static void model(PrintWriter o, String label, ModelSummary m) {
        o.printf(
                Locale.ROOT,
                "  %-10s %s  (%s %s, %s, %s, %s%s)%n",
                label,
                m.location(),
                m.family(),
                m.kind(),
                m.format(),
                bytes(m.sizeBytes()),
                m.device(),
                m.deviceNote().isEmpty() ? "" : "; " + m.deviceNote());
        if (!Double.isNaN(m.latencyMs())) {
            o.printf(
                    Locale.ROOT,
                    "  %-10s %.2f ms per forward pass, median of %d timed passes of %s%n",
                    "",
                    m.latencyMs(),
                    m.latencyRuns(),
                    m.latencyBatch());
        }
    }

    static String sci(double v) {
        if (v == 0) {
            return "0";
        }
        return String.format(Locale.ROOT, "%.3e", v);
    }

    static String bytes(long n) {
        if (n >= 1L << 30) {
            return String.format(Locale.ROOT, "%.2f GiB", n / (double) (1L << 30));
        }
        if (n >= 1L << 20) {
            return String.format(Locale.ROOT, "%.1f MiB", n / (double) (1L << 20));
        }
        if (n >= 1L << 10) {
            return String.format(Locale.ROOT, "%.1f KiB", n / 1024.0);
        }
        return n + " B";
    }
}
