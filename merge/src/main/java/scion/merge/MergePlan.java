package scion.merge;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.arch.LayerRemap;
import scion.io.arch.Role;
import scion.io.arch.WeightGraph;
import scion.io.arch.WeightGraph.Weight;
import scion.io.config.ModelConfig;
import scion.io.config.ModelConfig.Field;
import scion.io.tensor.DType;
import scion.io.tensor.Tensor;

/**
 * A checked merge: every output tensor with its sources, base, method and resolved parameters, planned from a {@link
 * MergeConfig} on specs only (names, shapes, dtypes, config.json). Opening it opens every referenced model; closing it
 * closes them.
 *
 * <p><b>Structure.</b> The reference model — the {@code base_model}, else the first model listed — gives the output's
 * family, tensor names, layout (ONNX in, ONNX out: its graph is kept) and config.json. Weights are matched across
 * models by (architecture entry, block), i.e. by role and layer, never by stored name: ONNX exports name MatMul
 * weights anonymously. With {@code models}, the output has the reference's blocks, each merged from the same block of
 * every model. With {@code slices}, output blocks are the slices' blocks in order: slice {@code s} contributes {@code
 * to − from} blocks, output block {@code k} of the slice merged from block {@code from_j + k} of each source {@code j}
 * (one source and {@code passthrough}: a frankenmerge, renumbered as {@link LayerRemap} does). Global weights before
 * the blocks (embeddings) come from the first slice's sources, those after (final norm, head) from the last slice's,
 * as in mergekit.
 *
 * <p><b>The base.</b> With {@code models}, a {@code base_model} that is not listed joins the models as the last one,
 * with the top-level parameters only, as mergekit's planner adds it: methods with a base role ({@link
 * MergeMethod#baseUse()} required or optional) read it as the base, the others ({@code linear}, {@code karcher}, ...)
 * as one more model. {@code slices} take their sources as listed.
 *
 * <p><b>Parameters</b> are resolved per tensor as {@link MergeParams} describes, with the gradient position {@code t}
 * = {@code k / (n − 1)} within the slice ({@code n} its block count; 1 when {@code n = 1}), and 0 for the weights
 * outside the blocks — before them (embeddings, from the first slice) and after them (final norm, head, from the last
 * slice) — as current mergekit's planner reads them (its module planner builds one config reader at {@code t = 0}
 * for both; mergekit before its Transformers-5 port read the weights after the blocks at 1); filters match the output
 * tensor's Hugging Face name.
 *
 * <p><b>Refused</b> (with the reason): models of different families, shapes that differ (including vocabulary sizes:
 * mergekit would keep the common submatrix of the embeddings and needs {@code tokenizer_source} to remap tokens; Scion
 * asks for models with the same vocabulary), {@code tokenizer_source: union}, slices over ONNX graphs. Non-float
 * tensors and buffers (position ids, rotary frequencies) are copied from the reference. A tied reference stays tied;
 * an untied reference takes a tied model's embedding as that model's head.
 */
public final class MergePlan implements AutoCloseable {
    private final MergeConfig config;
    private final MergeMethod method;
    private final List<String> refs; // distinct model references, index = model index
    private final List<Model> models;
    private final int reference;
    private final int base; // model index of the base, or -1
    private final List<Merger.Job> jobs = new ArrayList<>();
    private final List<Tensor> copies = new ArrayList<>(); // tensors copied as they are (output order kept in order)
    private final List<Object> order = new ArrayList<>(); // Merger.Job or Tensor, in output order
    private final List<String> notes = new ArrayList<>();
    private final ModelConfig outConfig;
    private final int outLayers;
    private final Path tokenizerFrom;

    private MergePlan(MergeConfig config, long seedUnused) {
        this.config = config;
        this.method = MergeMethods.byId(config.method(), where() + ": merge_method");
        List<MergeConfig.SliceDef> slices = config.slices();
        LinkedHashSet<String> names = new LinkedHashSet<>();
        if (config.baseModel() != null) {
            names.add(config.baseModel());
        }
        if (config.models() != null) {
            config.models().forEach(m -> names.add(m.model()));
        } else {
            for (MergeConfig.SliceDef s : slices) {
                s.sources().forEach(so -> names.add(so.model()));
                if (s.baseModel() != null) {
                    names.add(s.baseModel());
                }
            }
        }
        this.refs = new ArrayList<>(names);
        this.models = new ArrayList<>();
        try {
            for (String r : refs) {
                models.add(Model.open(resolve(r)));
            }
            String first = config.models() != null
                    ? config.models().get(0).model()
                    : slices.get(0).sources().get(0).model();
            this.base = config.baseModel() == null ? -1 : refs.indexOf(config.baseModel());
            this.reference = base >= 0 ? base : refs.indexOf(first);
            Model ref = models.get(reference);
            checkFamilies();
            if (config.models() != null) {
                int layers = ref.graph().dims().layers();
                List<MergeConfig.SourceDef> src = new ArrayList<>();
                for (MergeConfig.ModelDef m : config.models()) {
                    src.add(new MergeConfig.SourceDef(m.model(), 0, layers, m.parameters()));
                }
                if (base >= 0
                        && method.baseUse() == MergeMethod.BaseUse.UNUSED
                        && src.stream().noneMatch(so -> so.model().equals(config.baseModel()))) {
                    // mergekit: a base_model missing from `models` joins them as the last model (top-level
                    // parameters only); methods with a base role read it as the base, the others as one more model
                    src.add(new MergeConfig.SourceDef(config.baseModel(), 0, layers, Map.of()));
                    notes.add("base_model " + config.baseModel() + " takes part in " + method.id()
                            + " as one more model (as in mergekit)");
                }
                slices = List.of(new MergeConfig.SliceDef(src, null, Map.of()));
            } else if (ref.format() == Model.Format.ONNX) {
                throw InvalidInputException.of(
                        where() + ": slices",
                        "layer slices rename blocks; an ONNX graph's blocks are nodes",
                        "safetensors models for slices (or 'models' for ONNX)",
                        ref.location());
            }
            if (ref.format() == Model.Format.ONNX && (config.dtype() != null || config.outDtype() != null)) {
                notes.add("dtype/out_dtype ignored: ONNX output keeps each initializer's stored dtype");
            }
            checkModelCount(slices);
            checkParamNames(slices);
            int total = 0;
            for (MergeConfig.SliceDef s : slices) {
                MergeConfig.SourceDef s0 = s.sources().get(0);
                for (MergeConfig.SourceDef so : s.sources()) {
                    int have = model(so.model()).graph().dims().layers();
                    if (so.to() > have) {
                        throw InvalidInputException.of(
                                where() + ": layer_range of " + so.model(),
                                "beyond the model's blocks",
                                "[from, to) within 0.." + have,
                                "[" + so.from() + ", " + so.to() + "]");
                    }
                }
                total += s0.to() - s0.from();
            }
            this.outLayers = total;
            plan(slices);
            this.outConfig = outConfig(slices);
            this.tokenizerFrom = tokenizer();
        } catch (RuntimeException e) {
            close();
            throw e;
        }
    }

    /** Opens every model the config names and plans the merge; throws {@link InvalidInputException} on a problem. */
    public static MergePlan open(MergeConfig config) {
        return new MergePlan(config, 0);
    }

    private String where() {
        return config.where() == null ? "merge" : config.where().getFileName().toString();
    }

    private Path resolve(String ref) {
        return config.resolve(ref);
    }

    private Model model(String ref) {
        return models.get(refs.indexOf(ref));
    }

    private void checkFamilies() {
        String fam = models.get(reference).graph().architecture().family();
        for (int i = 0; i < models.size(); i++) {
            String f = models.get(i).graph().architecture().family();
            if (!f.equals(fam)) {
                throw InvalidInputException.of(
                        refs.get(i), "a different model family", fam + " (as " + refs.get(reference) + ")", f);
            }
        }
    }

    private void checkModelCount(List<MergeConfig.SliceDef> slices) {
        for (MergeConfig.SliceDef s : slices) {
            String b = s.baseModel() != null ? s.baseModel() : config.baseModel();
            if (method.baseUse() == MergeMethod.BaseUse.REQUIRED && b == null) {
                throw InvalidInputException.of(
                        where() + ": base_model", method.id() + " needs a base model", "base_model: <model>", "none");
            }
            method.checkModels(s.sources().size(), b != null).ifPresent(why -> {
                throw InvalidInputException.of(
                        where() + ": " + method.id(),
                        why,
                        "a valid model list",
                        s.sources().size() + " model(s)");
            });
        }
        if ("union".equals(config.tokenizerSource())) {
            throw InvalidInputException.of(
                    where() + ": tokenizer_source",
                    "'union' builds a merged vocabulary and remaps embedding rows, which scion merge does not do",
                    "base or a model's name",
                    "union");
        }
    }

    private void checkParamNames(List<MergeConfig.SliceDef> slices) {
        Set<String> mine = new LinkedHashSet<>();
        method.params().forEach(p -> mine.add(p.name()));
        List<String> known = MergeMethods.allParamNames();
        Set<String> seen = new LinkedHashSet<>(config.parameters().keySet());
        for (MergeConfig.SliceDef s : slices) {
            seen.addAll(s.parameters().keySet());
            s.sources().forEach(so -> seen.addAll(so.parameters().keySet()));
        }
        for (String n : seen) {
            if (!mine.contains(n)) {
                if (known.contains(n)) {
                    notes.add("parameter '" + n + "' is not used by " + method.id() + " (ignored)");
                } else {
                    throw InvalidInputException.of(
                            where() + ": parameters",
                            "unknown parameter '" + n + "' for " + method.id(),
                            mine.isEmpty() ? "no parameters" : "one of " + mine,
                            "'" + n + "'");
                }
            }
        }
    }

    private static String key(Weight w) {
        return w.spec().template() + "#" + w.layer();
    }

    private final Map<Integer, Map<String, Weight>> index = new HashMap<>();

    private Weight find(int model, Weight like, int layer) {
        Map<String, Weight> m = index.computeIfAbsent(model, k -> {
            Map<String, Weight> x = new HashMap<>();
            for (Weight w : models.get(k).graph().weights()) {
                x.put(key(w), w);
            }
            return x;
        });
        Weight w = m.get(like.spec().template() + "#" + layer);
        if (w == null && like.role() == Role.LM_HEAD) {
            for (Weight e : models.get(model).graph().byRole(Role.EMBEDDING)) {
                if (!e.isBias()) {
                    return e; // a tied model's head is its embedding
                }
            }
        }
        if (w == null) {
            throw InvalidInputException.of(
                    refs.get(model),
                    "has no tensor matching '"
                            + like.spec().name(models.get(reference).graph().prefix(), layer) + "'",
                    "the same architecture entries as " + refs.get(reference),
                    "none");
        }
        return w;
    }

    private void plan(List<MergeConfig.SliceDef> slices) {
        Model ref = models.get(reference);
        WeightGraph rg = ref.graph();
        boolean blocksDone = false;
        for (Weight w : rg.weights()) {
            if (w.layer() < 0) {
                boolean post = isPost(w.role());
                MergeConfig.SliceDef s = post ? slices.get(slices.size() - 1) : slices.get(0);
                addTensor(w, w.name(), w.tensor().name(), -1, s, 0, 0.0);
                continue;
            }
            if (blocksDone) {
                continue;
            }
            blocksDone = true;
            int out = 0;
            for (MergeConfig.SliceDef s : slices) {
                MergeConfig.SourceDef s0 = s.sources().get(0);
                int n = s0.to() - s0.from();
                // models: the reference's own blocks (its stored names, ONNX included); slices: the first source's
                WeightGraph g0 =
                        config.models() != null ? rg : model(s0.model()).graph();
                for (int k = 0; k < n; k++) {
                    double t = n > 1 ? k / (double) (n - 1) : 1.0;
                    for (Weight lw : g0.layer(s0.from() + k)) {
                        String hf = lw.spec().name(rg.prefix(), out);
                        String stored =
                                ref.format() == Model.Format.ONNX ? lw.tensor().name() : hf;
                        addTensor(lw, hf, stored, out, s, k, t);
                    }
                    out++;
                }
            }
        }
    }

    private static boolean isPost(Role r) {
        return r == Role.FINAL_NORM || r == Role.LM_HEAD || r == Role.POOLER || r == Role.OUTPUT_PROJECTION;
    }

    private void addTensor(Weight tw, String hf, String stored, int outLayer, MergeConfig.SliceDef s, int k, double t) {
        Tensor tt = tw.tensor();
        if (!tt.dtype().isFloatingPoint() || tw.role() == Role.BUFFER) {
            Tensor c = LayerRemap.rename(tt, stored);
            copies.add(c);
            order.add(c);
            return;
        }
        List<Merger.Source> sources = new ArrayList<>();
        int baseIndex = -1;
        String b = s.baseModel() != null ? s.baseModel() : config.baseModel();
        int bm = b == null ? -1 : refs.indexOf(b);
        Merger.Source baseSrc = null;
        List<MergeParams> mp = new ArrayList<>();
        for (int j = 0; j < s.sources().size(); j++) {
            MergeConfig.SourceDef so = s.sources().get(j);
            int mi = refs.indexOf(so.model());
            int layer = tw.layer() < 0 ? -1 : so.from() + k;
            Weight w = find(mi, tw, layer);
            checkShape(tw, w, so.model(), hf);
            sources.add(new Merger.Source(mi, w));
            if (mi == bm && baseIndex < 0) {
                baseIndex = j;
                baseSrc = new Merger.Source(mi, w);
            }
            mp.add(resolveModel(so.model(), j == baseIndex, s, hf, t));
        }
        if (bm >= 0 && baseSrc == null) {
            int layer = tw.layer() < 0 ? -1 : s.sources().get(0).from() + k;
            Weight w = find(bm, tw, layer);
            checkShape(tw, w, b, hf);
            baseSrc = new Merger.Source(bm, w);
        }
        MergeParams gp = resolveGlobal(s, hf, t);
        DType dt = outDtype(tt.dtype());
        if (method.id().equals("passthrough")
                && sources.size() == 1
                && mp.get(0).number("scale") == 1.0
                && sources.get(0).weight().tensor().dtype() == dt
                && sources.get(0).weight().transposed() == tw.transposed()) {
            // a plain copy: the stored tensor under its new name, copied by the writer without decoding (zero-copy)
            Tensor c = LayerRemap.rename(sources.get(0).weight().tensor(), stored);
            copies.add(c);
            order.add(c);
            return;
        }
        Merger.Job job = new Merger.Job(
                hf,
                tw.role(),
                outLayer,
                outLayers,
                tt.shape().clone(),
                tw.transposed(),
                dt,
                method,
                sources,
                baseIndex,
                baseSrc,
                mp,
                gp);
        jobs.add(job);
        order.add(new Named(job, stored));
    }

    /** A job (named by its Hugging Face name) with the name it is stored under (they differ in ONNX). */
    private record Named(Merger.Job job, String stored) {}

    private void checkShape(Weight tw, Weight w, String model, String hf) {
        long[] a = tw.tensor().shape();
        long[] b = w.tensor().shape().clone();
        if (w.transposed() != tw.transposed() && b.length == 2) {
            b = new long[] {b[1], b[0]};
        }
        if (!Arrays.equals(a, b)) {
            boolean vocab = tw.role() == Role.EMBEDDING || tw.role() == Role.LM_HEAD;
            throw new InvalidInputException(model + ": tensor '" + hf + "' has shape " + Arrays.toString(b)
                    + "; expected " + Arrays.toString(a) + " as in " + refs.get(reference)
                    + (vocab
                            ? "; hint: the vocabularies differ — mergekit keeps the common rows and remaps tokens with"
                                    + " tokenizer_source; scion merge needs models with the same vocabulary"
                            : ""));
        }
    }

    private DType outDtype(DType stored) {
        if (models.get(reference).format() == Model.Format.ONNX) {
            return stored;
        }
        String d = config.outDtype() != null ? config.outDtype() : config.dtype();
        if (d == null) {
            return stored;
        }
        switch (d.toLowerCase(Locale.ROOT)) {
            case "float32":
            case "fp32":
            case "f32":
                return DType.F32;
            case "float16":
            case "fp16":
            case "f16":
                return DType.F16;
            case "bfloat16":
            case "bf16":
                return DType.BF16;
            default:
                throw InvalidInputException.of(
                        where() + ": " + (config.outDtype() != null ? "out_dtype" : "dtype"),
                        "unsupported dtype",
                        "float32, float16 or bfloat16",
                        "'" + d + "'");
        }
    }

    private MergeParams resolveModel(String model, boolean isBase, MergeConfig.SliceDef s, String hf, double t) {
        Map<String, Object> out = new LinkedHashMap<>();
        for (MergeMethod.Param p : method.params()) {
            if (p.scope() != MergeMethod.Scope.PER_MODEL) {
                continue;
            }
            Object v = null;
            for (MergeConfig.SourceDef so : s.sources()) {
                if (so.model().equals(model) && so.parameters().containsKey(p.name())) {
                    v = evaluate(so.parameters().get(p.name()), hf, t);
                    if (v != null) {
                        break;
                    }
                }
            }
            if (v == null) {
                v = levels(p.name(), s, hf, t);
            }
            if (v == null) {
                v = p.defaultValue();
            }
            if (v == null) {
                if (isBase && method.baseUse() != MergeMethod.BaseUse.UNUSED) {
                    continue; // the base's own weight is not read by base-using methods
                }
                boolean unlistedBase = model.equals(config.baseModel())
                        && config.models() != null
                        && config.models().stream().noneMatch(m -> m.model().equals(model));
                throw InvalidInputException.of(
                        where(),
                        "missing required parameter '" + p.name() + "' for " + model + " (tensor " + hf + ")",
                        p.name() + ": <value> under the model, its slice or the top-level parameters",
                        "none"
                                + (unlistedBase
                                        ? "; hint: the base_model takes part in " + method.id()
                                                + " as a model (as in mergekit): list it under models with a "
                                                + p.name() + ", or give a top-level " + p.name()
                                        : ""));
            }
            out.put(p.name(), v);
        }
        return new MergeParams(out);
    }

    private MergeParams resolveGlobal(MergeConfig.SliceDef s, String hf, double t) {
        Map<String, Object> out = new LinkedHashMap<>();
        for (MergeMethod.Param p : method.params()) {
            if (p.scope() != MergeMethod.Scope.GLOBAL) {
                continue;
            }
            Object v = levels(p.name(), s, hf, t);
            if (v == null) {
                v = p.defaultValue();
            }
            if (v == null) {
                throw InvalidInputException.of(
                        where(),
                        "missing required parameter '" + p.name() + "' for " + method.id(),
                        p.name() + ": <value> under parameters",
                        "none");
            }
            out.put(p.name(), v);
        }
        return new MergeParams(out);
    }

    private Object levels(String name, MergeConfig.SliceDef s, String hf, double t) {
        if (s.parameters().containsKey(name)) {
            Object v = evaluate(s.parameters().get(name), hf, t);
            if (v != null) {
                return v;
            }
        }
        if (config.parameters().containsKey(name)) {
            return evaluate(config.parameters().get(name), hf, t);
        }
        return null;
    }

    /**
     * mergekit's {@code evaluate_setting}: a scalar is itself; a list of numbers is interpolated at {@code t·(n−1)};
     * a list of other scalars is indexed at {@code ⌊t·(n−1)⌋}; a list of {@code {filter, value}} (or one such map)
     * gives the first entry whose filter is absent, {@code *} or a substring of the tensor name; none: null.
     */
    static Object evaluate(JsonNode v, String tensorName, double t) {
        if (v == null || v.isNull()) {
            return null;
        }
        if (v.isValueNode()) {
            return scalarValue(v);
        }
        if (v.isObject()) {
            return conditional(v, tensorName, t);
        }
        boolean numbers = true;
        boolean scalars = true;
        for (JsonNode e : v) {
            numbers &= e.isNumber();
            scalars &= e.isValueNode();
        }
        int n = v.size();
        if (numbers) {
            double scaled = t * (n - 1);
            int i0 = (int) scaled;
            int i1 = Math.min(n - 1, i0 + 1);
            double frac = scaled - i0;
            return (1 - frac) * v.get(i0).asDouble() + frac * v.get(i1).asDouble();
        }
        if (scalars) {
            return scalarValue(v.get((int) (t * (n - 1))));
        }
        for (JsonNode cond : v) {
            if (!cond.isObject()) {
                throw InvalidInputException.of(
                        "parameter list", "mixes filter entries and values", "{filter, value} entries", cond);
            }
            Object r = conditional(cond, tensorName, t);
            if (r != null) {
                return r;
            }
        }
        return null;
    }

    private static Object conditional(JsonNode cond, String tensorName, double t) {
        JsonNode f = cond.get("filter");
        if (f == null
                || f.isNull()
                || "*".equals(f.asText())
                || (tensorName != null && tensorName.contains(f.asText()))) {
            return evaluate(cond.get("value"), tensorName, t);
        }
        return null;
    }

    private static Object scalarValue(JsonNode v) {
        if (v.isBoolean()) {
            return v.asBoolean();
        }
        if (v.isNumber()) {
            return v.asDouble();
        }
        return v.asText();
    }

    private ModelConfig outConfig(List<MergeConfig.SliceDef> slices) {
        Model ref = models.get(reference);
        ModelConfig cfg = ref.config();
        int refLayers = ref.graph().dims().layers();
        if (config.slices() != null) {
            int[] src = new int[outLayers];
            int o = 0;
            boolean inRange = true;
            for (MergeConfig.SliceDef s : slices) {
                MergeConfig.SourceDef s0 = s.sources().get(0);
                for (int l = s0.from(); l < s0.to(); l++) {
                    inRange &= l < refLayers;
                    src[o++] = l;
                }
            }
            cfg = inRange
                    ? LayerRemap.config(cfg, ref.graph().architecture().family(), src)
                    : cfg.with(Field.LAYERS, outLayers);
        }
        String d = config.outDtype() != null ? config.outDtype() : config.dtype();
        if (d != null && ref.format() == Model.Format.SAFETENSORS) {
            DType dt = outDtype(DType.F32);
            cfg = cfg.with(Field.DTYPE, dt == DType.BF16 ? "bfloat16" : dt == DType.F16 ? "float16" : "float32");
        }
        return cfg;
    }

    private Path tokenizer() {
        String ts = config.tokenizerSource();
        int from;
        if (ts == null || "base".equals(ts)) {
            from = reference;
        } else {
            from = refs.indexOf(ts);
            if (from < 0) {
                throw InvalidInputException.of(
                        where() + ": tokenizer_source",
                        "names no model of the merge",
                        "base or one of " + refs,
                        "'" + ts + "'");
            }
        }
        Path loc = models.get(from).location();
        return Files.isDirectory(loc) ? loc : loc.toAbsolutePath().getParent();
    }

    // ---- results

    /** The method. */
    public MergeMethod method() {
        return method;
    }

    /** The opened models, in reference order ({@link Merger.Source#model()} indexes this list). */
    public List<Model> models() {
        return models;
    }

    /** The model references as written in the config, same order as {@link #models()}. */
    public List<String> modelNames() {
        return refs;
    }

    /** The reference model (output structure, graph, config). */
    public Model reference() {
        return models.get(reference);
    }

    /** The merged tensors' recipes, in output order. */
    public List<Merger.Job> jobs() {
        return jobs;
    }

    /** How many tensors are copied unchanged (buffers, integer tensors, passthrough blocks without a scale). */
    public int copied() {
        return copies.size();
    }

    /** The output's block count. */
    public int layers() {
        return outLayers;
    }

    /** The output's config.json. */
    public ModelConfig outputConfig() {
        return outConfig;
    }

    /** The folder whose tokenizer files the output gets. */
    public Path tokenizerFrom() {
        return tokenizerFrom;
    }

    /** What the report should say (ignored parameters, ...). */
    public List<String> notes() {
        return notes;
    }

    /** The output tensors, lazily merged by {@code merger}, in output order, named as stored. */
    public List<Tensor> tensors(Merger merger) {
        List<Tensor> out = new ArrayList<>();
        for (Object o : order) {
            out.add(
                    o instanceof Named
                            ? LayerRemap.rename(merger.lazy(((Named) o).job()), ((Named) o).stored())
                            : (Tensor) o);
        }
        return out;
    }

    /** The merged tensors by stored name (ONNX initializer names), lazily merged by {@code merger}. */
    public Map<String, Tensor> replacements(Merger merger) {
        Map<String, Tensor> m = new LinkedHashMap<>();
        for (Object o : order) {
            if (o instanceof Named) {
                Named n = (Named) o;
                m.put(n.stored(), LayerRemap.rename(merger.lazy(n.job()), n.stored()));
            }
        }
        return m;
    }

    /** The method parameters as written, for provenance. */
    public Map<String, String> describe() {
        Map<String, String> p = new LinkedHashMap<>();
        p.put("merge_method", method.id());
        if (config.baseModel() != null) {
            p.put("base_model", config.baseModel());
        }
        for (Map.Entry<String, JsonNode> e : config.parameters().entrySet()) {
            p.put(e.getKey(), e.getValue().toString());
        }
        if (config.models() != null) {
            for (int i = 0; i < config.models().size(); i++) {
                MergeConfig.ModelDef m = config.models().get(i);
                p.put("model." + i, m.model() + (m.parameters().isEmpty() ? "" : " " + m.parameters()));
            }
        } else {
            for (int i = 0; i < config.slices().size(); i++) {
                StringBuilder sb = new StringBuilder();
                for (MergeConfig.SourceDef so : config.slices().get(i).sources()) {
                    sb.append(sb.length() > 0 ? "; " : "")
                            .append(so.model())
                            .append('[')
                            .append(so.from())
                            .append(',')
                            .append(so.to())
                            .append(')')
                            .append(so.parameters().isEmpty() ? "" : " " + so.parameters());
                }
                p.put("slice." + i, sb.toString());
            }
        }
        return p;
    }

    @Override
    public void close() {
        for (Model m : models) {
            m.close();
        }
    }
}
