package scion.cli;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.stream.Stream;
import picocli.CommandLine.ParseResult;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.Provenance;
import scion.merge.ImportanceProvider;
import scion.merge.MergeConfig;
import scion.merge.MergePlan;
import scion.merge.fisher.FisherEstimator;
import scion.merge.fisher.FisherImportance;
import scion.merge.fisher.FisherMerge;

/**
 * The calibration step of {@code scion merge} for methods that need per-element importance ({@code fisher}): for each
 * input model in turn, the calibration text is tokenised with its tokenizer ({@link CalibrationOptions#windows}), its
 * diagonal Fisher estimated ({@link FisherEstimator}) and written as float32 safetensors into a staging folder next to
 * the output; the merge then reads them back tensor by tensor ({@link FisherImportance}). Closing removes the folder.
 *
 * <p>Settings: {@code --calib/--tokens/--calib-length/--calib-tokenizer} when given on the command line, else the
 * config's {@code calib_text/calib_tokens/calib_length} parameters (4096 tokens, 128 per sequence by default); {@code
 * fisher: true|empirical}; the run's {@code --seed}.
 */
final class FisherRun implements AutoCloseable {
    private final Path dir;
    private final FisherImportance importance;
    private final List<Map<String, Object>> report;

    private FisherRun(Path dir, FisherImportance importance, List<Map<String, Object>> report) {
        this.dir = dir;
        this.importance = importance;
        this.report = report;
    }

    /** The provider for the merge loop. */
    ImportanceProvider importance() {
        return importance;
    }

    /** Per model: tokens, sequences, seconds, tokens/s, GFLOP/s. */
    List<Map<String, Object>> report() {
        return report;
    }

    /** Estimates every model's Fisher when the plan's method needs it; null otherwise. */
    static FisherRun ifNeeded(
            MergePlan plan,
            MergeConfig config,
            CalibrationOptions calib,
            ParseResult parsed,
            long seed,
            Path out,
            PrintWriter err) {
        if (!plan.method().needsImportance()) {
            if (calib.given()) {
                throw InvalidInputException.of(
                        "--calib",
                        "merge_method " + plan.method().id() + " does not use calibration text",
                        "--calib only with merge_method fisher",
                        calib.text);
            }
            return null;
        }
        Map<String, JsonNode> p = config.parameters() == null ? Map.of() : config.parameters();
        if (!calib.given()) {
            JsonNode t = p.get(FisherMerge.CALIB_TEXT);
            if (t == null || !t.isTextual() || t.asText().isBlank()) {
                throw InvalidInputException.of(
                        "merge_method " + plan.method().id(),
                        "needs calibration text to estimate each model's Fisher information",
                        "--calib TEXT (or calib_text: FILE in the config's parameters)",
                        "none");
            }
            Path text = Path.of(t.asText());
            if (!text.isAbsolute() && config.where() != null && config.where().getParent() != null) {
                Path rel = config.where().toAbsolutePath().getParent().resolve(text);
                text = Files.exists(rel) ? rel : text;
            }
            calib.text = text;
        }
        long tokens = parsed.hasMatchedOption("--tokens")
                ? calib.tokens
                : (long) number(p, FisherMerge.CALIB_TOKENS, FisherMerge.DEFAULT_TOKENS);
        int length = parsed.hasMatchedOption("--calib-length")
                ? calib.length
                : (int) number(p, FisherMerge.CALIB_LENGTH, 128);
        if (tokens < 1 || length < 2) {
            throw InvalidInputException.of(
                    "calibration",
                    "budget too small",
                    "tokens ≥ 1 and length ≥ 2",
                    tokens + " tokens, length " + length);
        }
        String kindText =
                p.containsKey(FisherMerge.FISHER) ? p.get(FisherMerge.FISHER).asText() : "true";
        FisherEstimator.Kind kind;
        switch (kindText.toLowerCase(Locale.ROOT)) {
            case "true":
                kind = FisherEstimator.Kind.TRUE;
                break;
            case "empirical":
                kind = FisherEstimator.Kind.EMPIRICAL;
                break;
            default:
                throw InvalidInputException.of(
                        "parameter '" + FisherMerge.FISHER + "'", "unknown Fisher", "true or empirical", kindText);
        }
        FisherEstimator.Options options =
                FisherEstimator.Options.defaults().withKind(kind).withSeed(seed).withMaxTokens(tokens);
        Path abs = out.toAbsolutePath();
        Path dir;
        try {
            dir = Files.createTempDirectory(abs.getParent(), "." + abs.getFileName() + ".fisher-");
        } catch (IOException e) {
            throw new UncheckedIOException(abs.getParent() + ": cannot create the Fisher staging folder", e);
        }
        List<Map<String, Object>> report = new ArrayList<>();
        List<Path> files = new ArrayList<>();
        try {
            for (int i = 0; i < plan.models().size(); i++) {
                Model m = plan.models().get(i);
                int max = Math.min(
                        length,
                        m.graph().dims().positions() > 0 ? m.graph().dims().positions() : length);
                FisherEstimator.Result r;
                try (CalibrationOptions.Windows w = calib.windows(m, max);
                        Progress bar = Progress.forTerminal(
                                "fisher " + (i + 1) + "/" + plan.models().size(), tokens)) {
                    long[] done = {0};
                    r = FisherEstimator.estimate(m, w, options, t -> {
                        bar.advance(Math.min(tokens, t) - done[0]);
                        done[0] = Math.min(tokens, t);
                    });
                }
                Map<String, String> meta = Provenance.of(
                        Scion.version(),
                        "fisher",
                        Map.of(
                                "kind", kind.name().toLowerCase(Locale.ROOT),
                                "tokens", Long.toString(r.tokens()),
                                "seed", Long.toString(seed)),
                        Map.of(plan.modelNames().get(i), m.checkpoint()));
                files.add(r.write(dir.resolve("fisher-" + i + ".safetensors"), meta));
                Map<String, Object> row = new LinkedHashMap<>();
                row.put("model", plan.modelNames().get(i));
                row.put("sequences", r.sequences());
                row.put("tokens", r.tokens());
                row.put("seconds", Math.round(r.seconds() * 100) / 100.0);
                row.put("tokens_per_s", Math.round(r.tokens() / r.seconds() * 10) / 10.0);
                row.put("gflop_per_s", Math.round(r.flops() / r.seconds() / 1e7) / 100.0);
                report.add(row);
                err.flush();
            }
            return new FisherRun(dir, new FisherImportance(files), report);
        } catch (RuntimeException e) {
            delete(dir);
            throw e;
        }
    }

    private static double number(Map<String, JsonNode> p, String key, double dflt) {
        JsonNode v = p.get(key);
        if (v == null) {
            return dflt;
        }
        if (!v.isNumber()) {
            throw InvalidInputException.of("parameter '" + key + "'", "not a number", "a number", v.toString());
        }
        return v.asDouble();
    }

    private static void delete(Path dir) {
        try (Stream<Path> s = Files.walk(dir)) {
            for (Path f : (Iterable<Path>) s.sorted(Comparator.reverseOrder())::iterator) {
                Files.deleteIfExists(f);
            }
        } catch (IOException e) {
            throw new UncheckedIOException(dir + ": cannot remove the Fisher staging folder", e);
        }
    }

    @Override
    public void close() {
        importance.close();
        delete(dir);
    }
}
