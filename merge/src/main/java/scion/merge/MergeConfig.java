package scion.merge;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import scion.io.InvalidInputException;

/**
 * A merge recipe in mergekit's YAML form, parsed and checked for keys (values are checked by the planner).
 *
 * <p>Accepted keys, as mergekit's {@code MergeConfiguration}: {@code merge_method}, {@code base_model}, exactly one of
 * {@code models} (list of {@code {model, parameters}}) or {@code slices} (list of {@code {sources: [{model,
 * layer_range: [a, b], parameters}], base_model, parameters}}), {@code parameters}, {@code dtype}, {@code out_dtype},
 * {@code tokenizer_source} ({@code base}, a model, or {@code union} which is refused). A parameter value is a scalar,
 * a list of numbers (a gradient), or a list of {@code {filter, value}} entries (see {@link MergeParams}). Any other
 * key is an error naming it; {@code modules}, {@code tokenizer} and {@code chat_template} are refused as not
 * supported.
 *
 * @param method the {@code merge_method} value
 * @param baseModel the {@code base_model}, or null
 * @param models the {@code models} list, or null when {@code slices} is used
 * @param slices the {@code slices} list, or null
 * @param parameters top-level parameters (name → raw setting)
 * @param dtype {@code dtype}, or null
 * @param outDtype {@code out_dtype}, or null
 * @param tokenizerSource {@code tokenizer_source}, or null
 * @param where where the config came from (for messages; relative model paths resolve against its folder too)
 */
public record MergeConfig(
        String method,
        String baseModel,
        List<ModelDef> models,
        List<SliceDef> slices,
        Map<String, JsonNode> parameters,
        String dtype,
        String outDtype,
        String tokenizerSource,
        Path where) {

    private static final Set<String> TOP_KEYS = Set.of(
            "merge_method",
            "base_model",
            "models",
            "slices",
            "parameters",
            "dtype",
            "out_dtype",
            "tokenizer_source",
            "modules",
            "tokenizer",
            "chat_template",
            "name");
    private static final Set<String> UNSUPPORTED = Set.of("modules", "tokenizer", "chat_template");

    /** One entry of {@code models}. */
    public record ModelDef(String model, Map<String, JsonNode> parameters) {}

    /** One source of a slice: {@code layer_range} is {@code [from, to)}. */
    public record SourceDef(String model, int from, int to, Map<String, JsonNode> parameters) {}

    /** One output slice. */
    public record SliceDef(List<SourceDef> sources, String baseModel, Map<String, JsonNode> parameters) {}

    /** Reads a YAML file. */
    public static MergeConfig read(Path file) {
        return parse(readText(file), file);
    }

    /** A config file's text, or an error naming the file. */
    static String readText(Path file) {
        try {
            return Files.readString(file);
        } catch (IOException e) {
            throw InvalidInputException.of(file.toString(), "cannot read the config", "a readable YAML file", e);
        }
    }

    /**
     * Parses YAML text holding one document; {@code where} names it in messages. A text with several documents (a
     * multi-stage recipe) is refused here: {@link MergeStages} reads those.
     */
    public static MergeConfig parse(String yaml, Path where) {
        String w = where == null ? "config" : where.getFileName().toString();
        List<JsonNode> docs = documents(yaml, w);
        if (docs.size() != 1) {
            throw InvalidInputException.of(
                    w,
                    docs.isEmpty() ? "no YAML document" : "holds " + docs.size() + " YAML documents",
                    "one merge config (several documents are a multi-stage recipe, read by MergeStages)",
                    docs.size());
        }
        return of(docs.get(0), w, where);
    }

    /** The non-empty YAML documents of {@code yaml}, in order (a document that is only a comment is skipped). */
    static List<JsonNode> documents(String yaml, String w) {
        List<JsonNode> docs = new ArrayList<>();
        ObjectMapper mapper = new ObjectMapper(new YAMLFactory());
        try (com.fasterxml.jackson.databind.MappingIterator<JsonNode> it =
                mapper.readerFor(JsonNode.class).readValues(yaml)) {
            while (it.hasNextValue()) {
                JsonNode d = it.nextValue();
                if (d != null && !d.isNull() && !d.isMissingNode()) {
                    docs.add(d);
                }
            }
        } catch (IOException | RuntimeException e) {
            throw InvalidInputException.of(w, "not valid YAML", "a mergekit config", firstLine(e.getMessage()));
        }
        return docs;
    }

    /** One parsed document; {@code w} names it in messages. */
    static MergeConfig of(JsonNode root, String w, Path where) {
        if (root == null || !root.isObject()) {
            throw InvalidInputException.of(
                    w,
                    "not a mapping",
                    "a YAML mapping with merge_method",
                    "'" + root.asText().strip() + "'");
        }
        for (Iterator<String> it = root.fieldNames(); it.hasNext(); ) {
            String k = it.next();
            if (!TOP_KEYS.contains(k)) {
                throw InvalidInputException.of(
                        w,
                        "unknown key '" + k + "'",
                        "one of merge_method, base_model, models, slices, parameters, dtype, out_dtype,"
                                + " tokenizer_source",
                        "'" + k + "'");
            }
            if (UNSUPPORTED.contains(k)) {
                throw InvalidInputException.of(
                        w, "key '" + k + "' is not supported by scion merge", "models or slices", "'" + k + "'");
            }
        }
        String method = text(root, "merge_method", w)
                .orElseThrow(() -> InvalidInputException.of(
                        w, "missing key 'merge_method'", "one of " + MergeMethods.ids(), "none"));
        MergeMethods.byId(method, w + ": merge_method");
        boolean hasModels = root.has("models");
        boolean hasSlices = root.has("slices");
        if (hasModels == hasSlices) {
            throw InvalidInputException.of(
                    w, "needs exactly one of 'models' and 'slices'", "one", hasModels ? "both" : "neither");
        }
        List<ModelDef> models = null;
        List<SliceDef> slices = null;
        if (hasModels) {
            models = new ArrayList<>();
            JsonNode arr = list(root.get("models"), w + ": models");
            for (int i = 0; i < arr.size(); i++) {
                String wi = w + ": models[" + i + "]";
                JsonNode m = arr.get(i);
                if (m.isTextual()) {
                    models.add(new ModelDef(m.asText(), Map.of()));
                    continue;
                }
                keys(m, wi, Set.of("model", "parameters"));
                models.add(new ModelDef(text(m, "model", wi).orElseThrow(() -> missing(wi, "model")), params(m, wi)));
            }
            if (models.isEmpty()) {
                throw InvalidInputException.of(w + ": models", "empty list", "at least one model", "none");
            }
        } else {
            slices = new ArrayList<>();
            JsonNode arr = list(root.get("slices"), w + ": slices");
            for (int i = 0; i < arr.size(); i++) {
                String wi = w + ": slices[" + i + "]";
                JsonNode s = arr.get(i);
                keys(s, wi, Set.of("sources", "base_model", "parameters", "residual_weight"));
                if (s.has("residual_weight")) {
                    throw InvalidInputException.of(
                            wi, "residual_weight is not supported", "no residual_weight", s.get("residual_weight"));
                }
                JsonNode src = list(s.get("sources"), wi + ".sources");
                List<SourceDef> sources = new ArrayList<>();
                for (int j = 0; j < src.size(); j++) {
                    String wj = wi + ".sources[" + j + "]";
                    JsonNode so = src.get(j);
                    keys(so, wj, Set.of("model", "layer_range", "parameters"));
                    JsonNode lr = so.get("layer_range");
                    if (lr == null
                            || !lr.isArray()
                            || lr.size() != 2
                            || !lr.get(0).canConvertToInt()
                            || !lr.get(1).canConvertToInt()
                            || !lr.get(0).isIntegralNumber()
                            || !lr.get(1).isIntegralNumber()) {
                        throw InvalidInputException.of(
                                wj + ".layer_range", "not a layer range", "[from, to) as two integers", lr);
                    }
                    int a = lr.get(0).asInt();
                    int b = lr.get(1).asInt();
                    if (a < 0 || b <= a) {
                        throw InvalidInputException.of(
                                wj + ".layer_range",
                                "empty or negative range",
                                "0 ≤ from < to",
                                "[" + a + ", " + b + "]");
                    }
                    sources.add(new SourceDef(
                            text(so, "model", wj).orElseThrow(() -> missing(wj, "model")), a, b, params(so, wj)));
                }
                if (sources.isEmpty()) {
                    throw InvalidInputException.of(wi + ".sources", "empty list", "at least one source", "none");
                }
                int n = sources.get(0).to() - sources.get(0).from();
                for (SourceDef sd : sources) {
                    if (sd.to() - sd.from() != n) {
                        throw InvalidInputException.of(
                                wi, "sources of a slice must have the same number of layers", n, sd.to() - sd.from());
                    }
                }
                slices.add(new SliceDef(sources, text(s, "base_model", wi).orElse(null), params(s, wi)));
            }
            if (slices.isEmpty()) {
                throw InvalidInputException.of(w + ": slices", "empty list", "at least one slice", "none");
            }
        }
        return new MergeConfig(
                method,
                text(root, "base_model", w).orElse(null),
                models,
                slices,
                params(root, w),
                text(root, "dtype", w).orElse(null),
                text(root, "out_dtype", w).orElse(null),
                text(root, "tokenizer_source", w).orElse(null),
                where);
    }

    /**
     * Every model reference of the config with where it is written: {@code base_model}, {@code models[i].model},
     * {@code slices[i].sources[j].model}, {@code slices[i].base_model}, and {@code tokenizer_source} when it names a
     * model (not {@code base} or {@code union}). Keys are places ({@code models[1]}), values the references.
     */
    public Map<String, String> references() {
        Map<String, String> r = new LinkedHashMap<>();
        if (baseModel != null) {
            r.put("base_model", baseModel);
        }
        if (models != null) {
            for (int i = 0; i < models.size(); i++) {
                r.put("models[" + i + "]", models.get(i).model());
            }
        }
        if (slices != null) {
            for (int i = 0; i < slices.size(); i++) {
                SliceDef s = slices.get(i);
                for (int j = 0; j < s.sources().size(); j++) {
                    r.put(
                            "slices[" + i + "].sources[" + j + "]",
                            s.sources().get(j).model());
                }
                if (s.baseModel() != null) {
                    r.put("slices[" + i + "].base_model", s.baseModel());
                }
            }
        }
        if (tokenizerSource != null && !"base".equals(tokenizerSource) && !"union".equals(tokenizerSource)) {
            r.put("tokenizer_source", tokenizerSource);
        }
        return r;
    }

    /** This config with every model reference ({@link #references()}) replaced by {@code f} of it. */
    public MergeConfig withReferences(java.util.function.UnaryOperator<String> f) {
        List<ModelDef> ms = null;
        if (models != null) {
            ms = new ArrayList<>();
            for (ModelDef m : models) {
                ms.add(new ModelDef(f.apply(m.model()), m.parameters()));
            }
        }
        List<SliceDef> ss = null;
        if (slices != null) {
            ss = new ArrayList<>();
            for (SliceDef s : slices) {
                List<SourceDef> src = new ArrayList<>();
                for (SourceDef so : s.sources()) {
                    src.add(new SourceDef(f.apply(so.model()), so.from(), so.to(), so.parameters()));
                }
                ss.add(new SliceDef(src, s.baseModel() == null ? null : f.apply(s.baseModel()), s.parameters()));
            }
        }
        String ts = tokenizerSource == null || "base".equals(tokenizerSource) || "union".equals(tokenizerSource)
                ? tokenizerSource
                : f.apply(tokenizerSource);
        return new MergeConfig(
                method, baseModel == null ? null : f.apply(baseModel), ms, ss, parameters, dtype, outDtype, ts, where);
    }

    /**
     * Where a model reference points: the path as written when it exists, else the same path relative to the config's
     * folder when that exists, else the path as written (which {@link scion.io.Model#open} may still find in the
     * Hugging Face cache, or refuse).
     */
    public Path resolve(String ref) {
        Path p = Path.of(ref);
        if (!Files.exists(p) && where != null && !p.isAbsolute()) {
            Path alt = where.toAbsolutePath().getParent().resolve(ref);
            if (Files.exists(alt)) {
                return alt;
            }
        }
        return p;
    }

    /** A config built from the command line: {@code models} form, per-model weight 1 unless given. */
    public static MergeConfig ofModels(
            String method, String base, List<String> models, Map<String, String> params, Path where) {
        Map<String, JsonNode> p = new LinkedHashMap<>();
        for (Map.Entry<String, String> e : params.entrySet()) {
            p.put(e.getKey(), scalar(e.getValue()));
        }
        List<ModelDef> defs = new ArrayList<>();
        for (String m : models) {
            defs.add(new ModelDef(m, Map.of()));
        }
        MergeMethods.byId(method, "--method");
        return new MergeConfig(method, base, defs, null, p, null, null, null, where);
    }

    /** A command-line value: a number, a boolean, a list {@code [a,b,c]} of numbers, or text. */
    static JsonNode scalar(String v) {
        String s = v.trim();
        JsonNodeFactory f = JsonNodeFactory.instance;
        if (s.equalsIgnoreCase("true") || s.equalsIgnoreCase("false")) {
            return f.booleanNode(Boolean.parseBoolean(s.toLowerCase(java.util.Locale.ROOT)));
        }
        if (s.startsWith("[") && s.endsWith("]")) {
            com.fasterxml.jackson.databind.node.ArrayNode a = f.arrayNode();
            for (String part : s.substring(1, s.length() - 1).split(",", -1)) {
                a.add(scalar(part));
            }
            return a;
        }
        try {
            return f.numberNode(Double.parseDouble(s));
        } catch (NumberFormatException e) {
            return f.textNode(s);
        }
    }

    private static InvalidInputException missing(String where, String key) {
        return InvalidInputException.of(where, "missing key '" + key + "'", "a value", "none");
    }

    private static JsonNode list(JsonNode n, String where) {
        if (n == null || !n.isArray()) {
            throw InvalidInputException.of(where, "not a list", "a YAML list", n == null ? "nothing" : n.getNodeType());
        }
        return n;
    }

    private static void keys(JsonNode n, String where, Set<String> allowed) {
        if (n == null || !n.isObject()) {
            throw InvalidInputException.of(where, "not a mapping", "keys " + allowed, n);
        }
        for (Iterator<String> it = n.fieldNames(); it.hasNext(); ) {
            String k = it.next();
            if (!allowed.contains(k)) {
                throw InvalidInputException.of(where, "unknown key '" + k + "'", "one of " + allowed, "'" + k + "'");
            }
        }
    }

    private static Optional<String> text(JsonNode n, String key, String where) {
        JsonNode v = n.get(key);
        if (v == null || v.isNull()) {
            return Optional.empty();
        }
        if (!v.isValueNode()) {
            throw InvalidInputException.of(where + "." + key, "not a single value", "a string", v);
        }
        return Optional.of(v.asText());
    }

    private static Map<String, JsonNode> params(JsonNode n, String where) {
        JsonNode p = n.get("parameters");
        if (p == null || p.isNull()) {
            return Map.of();
        }
        if (!p.isObject()) {
            throw InvalidInputException.of(where + ".parameters", "not a mapping", "name: value pairs", p);
        }
        Map<String, JsonNode> out = new LinkedHashMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = p.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            checkSetting(e.getValue(), where + ".parameters." + e.getKey());
            out.put(e.getKey(), e.getValue());
        }
        return out;
    }

    private static void checkSetting(JsonNode v, String where) {
        if (v.isValueNode()) {
            return;
        }
        if (v.isObject()) {
            keys(v, where, Set.of("filter", "value"));
            if (!v.has("value")) {
                throw InvalidInputException.of(where, "a conditional parameter needs 'value'", "{filter, value}", v);
            }
            checkSetting(v.get("value"), where + ".value");
            return;
        }
        if (v.isArray()) {
            if (v.isEmpty()) {
                throw InvalidInputException.of(where, "empty list", "a gradient or filter list", "[]");
            }
            for (JsonNode e : v) {
                checkSetting(e, where + "[]");
            }
        }
    }

    /** An empty parameter map, mutable copy helper. */
    static ObjectNode emptyObject() {
        return JsonNodeFactory.instance.objectNode();
    }

    private static String firstLine(String s) {
        if (s == null) {
            return "?";
        }
        int i = s.indexOf('\n');
        return i < 0 ? s : s.substring(0, i);
    }
}
