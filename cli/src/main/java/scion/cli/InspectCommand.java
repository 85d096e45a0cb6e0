package scion.cli;

import com.fasterxml.jackson.core.JsonProcessingException;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;
import scion.io.Json;
import scion.io.Model;
import scion.io.arch.Dims;
import scion.io.arch.Role;
import scion.io.arch.WeightGraph;

/** {@code scion inspect MODEL [--json]}: what a checkpoint is, read from headers only. */
@Command(
        name = "inspect",
        description = "Show a model's family, sizes, dtypes, parameters by role, files and provenance.",
        mixinStandardHelpOptions = true)
final class InspectCommand implements Callable<Integer> {
    @Parameters(
            index = "0",
            paramLabel = "MODEL",
            description = "A Hugging Face folder, a .safetensors or an .onnx file.")
    Path model;

    @Option(names = "--json", description = "Print one JSON object instead of text.")
    boolean json;

    @Spec
    picocli.CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() {
        try (Model m = Model.open(model)) {
            Map<String, Object> report = report(m);
            PrintWriter out = spec.commandLine().getOut();
            if (json) {
                out.println(Json.mapper().writeValueAsString(report));
            } else {
                printText(report, out);
            }
            out.flush();
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("cannot serialise the report", e);
        }
        return ExitCodes.OK;
    }

    /** The inspection as an ordered map (the --json schema). */
    static Map<String, Object> report(Model m) {
        WeightGraph g = m.graph();
        Dims d = g.dims();
        Map<String, Object> r = new LinkedHashMap<>();
        r.put("location", m.location().toString());
        r.put("format", m.format().name().toLowerCase(Locale.ROOT));
        r.put("family", g.architecture().family());
        r.put("kind", g.architecture().kind());
        r.put("layers", d.layers());
        r.put("hidden", d.hidden());
        r.put("heads", d.heads());
        r.put("kv_heads", d.kvHeads());
        r.put("head_dim", d.headDim());
        r.put("ffn", d.ffn());
        r.put("vocab", d.vocab());
        if (d.positions() > 0) {
            r.put("positions", d.positions() - g.architecture().positionOffset());
        }
        r.put("norm", g.architecture().norm());
        r.put("mlp", g.architecture().mlp());
        if (g.architecture().isCausalLm()) {
            r.put("tied_embeddings", d.tied());
        }
        Map<String, Long> dtypes = new TreeMap<>();
        for (WeightGraph.Weight w : g.weights()) {
            dtypes.merge(w.tensor().dtype().name(), w.tensor().numel(), Long::sum);
        }
        r.put("dtypes", dtypes);
        r.put("parameters", g.parameterCount());
        Map<String, Long> byRole = new LinkedHashMap<>();
        for (Map.Entry<Role, Long> e : g.parametersByRole().entrySet()) {
            byRole.put(e.getKey().id(), e.getValue());
        }
        r.put("parameters_by_role", byRole);
        int constants = m.checkpoint().tensors().size() - g.weights().size();
        r.put("tensors", g.weights().size());
        r.put("tensors_with_role", g.weights().size());
        r.put("graph_constants", constants);
        r.put("tensors_traced_through_graph", m.tracedCount());
        Map<String, Long> files = new LinkedHashMap<>();
        for (Path p : m.checkpoint().dataFiles()) {
            files.put(
                    m.location()
                                    .toAbsolutePath()
                                    .normalize()
                                    .equals(p.toAbsolutePath().normalize())
                            ? p.getFileName().toString()
                            : relative(m.location(), p),
                    size(p));
        }
        r.put("files", files);
        r.put("metadata", new TreeMap<>(m.checkpoint().metadata()));
        return r;
    }

    private static String relative(Path location, Path p) {
        Path base = Files.isDirectory(location)
                ? location
                : location.toAbsolutePath().getParent();
        try {
            return base.toAbsolutePath()
                    .normalize()
                    .relativize(p.toAbsolutePath().normalize())
                    .toString();
        } catch (IllegalArgumentException e) {
            return p.toString();
        }
    }

    private static long size(Path p) {
        try {
            return Files.size(p);
        } catch (IOException e) {
            throw new UncheckedIOException(p + ": cannot read the file size", e);
        }
    }

    @SuppressWarnings("unchecked")
    private static void printText(Map<String, Object> r, PrintWriter out) {
        out.printf(Locale.ROOT, "%s  (%s)%n", r.get("location"), r.get("format"));
        row(
                out,
                "family",
                r.get("family") + " (" + r.get("kind") + ", norm " + r.get("norm") + ", mlp " + r.get("mlp") + ")");
        row(out, "layers", r.get("layers"));
        row(out, "hidden", r.get("hidden"));
        row(out, "heads", r.get("heads") + " × " + r.get("head_dim") + " (kv heads " + r.get("kv_heads") + ")");
        row(out, "ffn", r.get("ffn"));
        row(out, "vocab", r.get("vocab"));
        if (r.containsKey("positions")) {
            row(out, "positions", r.get("positions"));
        }
        if (r.containsKey("tied_embeddings")) {
            row(out, "tied embeddings", (Boolean) r.get("tied_embeddings") ? "yes" : "no");
        }
        StringBuilder dt = new StringBuilder();
        for (Map.Entry<String, Long> e : ((Map<String, Long>) r.get("dtypes")).entrySet()) {
            dt.append(dt.length() > 0 ? ", " : "")
                    .append(e.getKey())
                    .append(' ')
                    .append(count(e.getValue()));
        }
        row(out, "dtypes", dt + " elements");
        long params = (Long) r.get("parameters");
        row(out, "parameters", String.format(Locale.ROOT, "%.1f M (%,d)", params / 1e6, params));
        for (Map.Entry<String, Long> e : ((Map<String, Long>) r.get("parameters_by_role")).entrySet()) {
            out.printf(
                    Locale.ROOT, "    %-22s %,14d  %5.1f%%%n", e.getKey(), e.getValue(), 100.0 * e.getValue() / params);
        }
        int traced = (Integer) r.get("tensors_traced_through_graph");
        int constants = (Integer) r.get("graph_constants");
        row(
                out,
                "roles",
                r.get("tensors_with_role") + " of " + r.get("tensors") + " tensors assigned a role"
                        + (traced > 0 ? " (" + traced + " traced through the ONNX graph)" : "")
                        + (constants > 0 ? "; " + constants + " graph constants (shapes, axes) are not weights" : ""));
        Map<String, Long> files = (Map<String, Long>) r.get("files");
        String label = "files";
        for (Map.Entry<String, Long> e : files.entrySet()) {
            row(out, label, e.getKey() + "  " + Progress.bytes(e.getValue()));
            label = "";
        }
        Map<String, String> meta = (Map<String, String>) r.get("metadata");
        if (meta.isEmpty()) {
            row(out, "provenance", "none recorded");
        } else {
            label = "metadata";
            for (Map.Entry<String, String> e : meta.entrySet()) {
                row(out, label, e.getKey() + " = " + e.getValue());
                label = "";
            }
        }
    }

    private static String count(long n) {
        return String.format(Locale.ROOT, "%,d", n);
    }

    private static void row(PrintWriter out, String key, Object value) {
        out.printf(Locale.ROOT, "  %-16s %s%n", key, value);
    }

    /** Used by the demo: the text report of a model. */
    static void print(Model m, PrintWriter out) {
        printText(report(m), out);
    }
}
