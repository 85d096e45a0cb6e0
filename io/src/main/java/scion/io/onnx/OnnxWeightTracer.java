package scion.io.onnx;

import ai.onnx.proto.OnnxMl.AttributeProto;
import ai.onnx.proto.OnnxMl.GraphProto;
import ai.onnx.proto.OnnxMl.NodeProto;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.OptionalDouble;
import java.util.OptionalInt;
import java.util.Set;
import java.util.function.Function;
import java.util.stream.Collectors;
import scion.io.onnx.OnnxShapeHints.ModelKind;
import scion.io.tensor.DType;
import scion.io.tensor.Tensor;

/**
 * Maps the tensors of a PyTorch-exported transformer graph to the Hugging Face parameter names they came from, and
 * reads shape hints (heads, head dim, norm epsilon, encoder or causal LM) from the graph's constants.
 *
 * <p>PyTorch's TorchScript exporter ({@code torch.onnx.export(dynamo=False)}) keeps parameter names for tensors used
 * as they are ({@code encoder.layer.0.attention.self.query.bias}), but an {@code nn.Linear} on a 3-D input becomes
 * {@code MatMul(x, Wᵀ)} whose constant-folded {@code Wᵀ} is an anonymous initializer ({@code onnx::MatMul_787},
 * stored {@code [in, out]}). Node names carry the module path ({@code
 * /encoder/layer.0/attention/self/query/MatMul}). Rules, in order, for each initializer (and each Constant node
 * tensor that feeds a weight input):
 *
 * <ol>
 *   <li>named: a name like a parameter (a dotted path ending in {@code weight}, {@code bias} or a known buffer such
 *       as {@code position_ids}) is kept, also when reached through a {@code Cast} or {@code Identity} (a model Scion
 *       stored in f16 names its initializers {@code <name>_f16});
 *   <li>node scope: a tensor consumed as {@code MatMul} B ({@code transposed}), {@code Gemm} B ({@code transposed}
 *       iff {@code transB = 0}), {@code Gemm} C ({@code .bias}), {@code Gather} data, {@code LayerNormalization}
 *       scale/bias, or {@code Mul}/{@code Add} inside a {@code *norm*}/{@code ln_*} module takes the consuming node's
 *       module path: {@code /a/layer.0/b/MatMul} → {@code a.layer.0.b.weight};
 *   <li>bias: when the node has no module path, a {@code MatMul} whose output goes into an {@code Add} with a named
 *       {@code X.bias} gives {@code X.weight};
 *   <li>a {@code Transpose} between the tensor and the {@code MatMul} flips {@code transposed} (stored as the
 *       parameter).
 * </ol>
 *
 * <p>A tensor that several modules use (tied weights, or identical tensors the exporter deduplicated) also gets one
 * entry per other parameter name, with evidence {@code shared: ...}. Small integer vectors and scalars that nothing
 * above explains are shape plumbing ({@link GraphConstant}). Everything else is {@link Unassigned}, with a reason:
 * every initializer appears in exactly one of the three lists.
 */
public final class OnnxWeightTracer {
    private static final Set<String> KNOWN_BUFFERS = Set.of(
            "position_ids",
            "token_type_ids",
            "inv_freq",
            "original_inv_freq",
            "masked_bias",
            "cos_cached",
            "sin_cached",
            "running_mean",
            "running_var",
            "num_batches_tracked");

    /**
     * An initializer that is graph plumbing rather than a parameter: a shape, axes, indices or a scalar.
     *
     * @param initializer its name
     * @param evidence what it is and which operators use it
     */
    public record GraphConstant(String initializer, String evidence) {}

    /**
     * An initializer no rule could trace.
     *
     * @param initializer its name
     * @param reason why, naming its consumers
     */
    public record Unassigned(String initializer, String reason) {}

    /**
     * The trace of a graph.
     *
     * @param weights parameters, in initializer order (a shared tensor has one entry per parameter name)
     * @param constants initializers that are graph plumbing
     * @param unassigned initializers nothing explains: callers treat them as errors
     * @param hints shape hints read from the graph
     */
    public record Result(
            List<TracedWeight> weights,
            List<GraphConstant> constants,
            List<Unassigned> unassigned,
            OnnxShapeHints hints) {
        public Result {
            weights = List.copyOf(weights);
            constants = List.copyOf(constants);
            unassigned = List.copyOf(unassigned);
        }

        /** The tensor holding Hugging Face parameter {@code hfName}, if traced. */
        public Optional<TracedWeight> weight(String hfName) {
            return weights.stream().filter(w -> w.hfName().equals(hfName)).findFirst();
        }

        /** Every parameter traced to this ONNX tensor (more than one when shared). */
        public List<TracedWeight> forInitializer(String initializer) {
            return weights.stream()
                    .filter(w -> w.initializer().equals(initializer))
                    .collect(Collectors.toList());
        }
    }

    private record Use(NodeProto node, int index) {}

    /** Where a tensor ends up after pass-through nodes (Cast, Identity, 2-D Transpose). */
    private record Reach(String name, boolean transposed, String via) {}

    private record Derived(String hfName, boolean transposed, String evidence) {}

    private final OnnxModel model;
    private final GraphProto graph;
    private final Map<String, NodeProto> producer = new HashMap<>();
    private final Map<String, List<Use>> consumers = new HashMap<>();
    private final Map<String, Tensor> tensors = new HashMap<>();
    private final Map<String, TracedWeight> primary = new LinkedHashMap<>(); // tensor → its first parameter

    private OnnxWeightTracer(OnnxModel model) {
        this.model = model;
        this.graph = model.graph();
        for (NodeProto n : graph.getNodeList()) {
            for (String o : n.getOutputList()) {
                producer.put(o, n);
            }
            for (int i = 0; i < n.getInputCount(); i++) {
                if (!n.getInput(i).isEmpty()) {
                    consumers
                            .computeIfAbsent(n.getInput(i), k -> new ArrayList<>())
                            .add(new Use(n, i));
                }
            }
        }
        for (Tensor t : model.tensors()) {
            tensors.put(t.name(), t);
        }
    }

    /** Traces every initializer of {@code model} and reads its shape hints. */
    public static Result trace(OnnxModel model) {
        return new OnnxWeightTracer(model).run();
    }

    private Result run() {
        List<TracedWeight> weights = new ArrayList<>();
        List<GraphConstant> constants = new ArrayList<>();
        List<Unassigned> unassigned = new ArrayList<>();
        Map<String, String> owner = new HashMap<>(); // hfName → tensor
        List<String> candidates = new ArrayList<>();
        for (Tensor t : model.tensors()) {
            if (model.isInitializer(t.name()) || feedsWeightInput(t)) {
                candidates.add(t.name());
            }
        }
        for (String name : candidates) {
            Tensor t = tensors.get(name);
            Reach r = reach(name);
            List<Derived> derived = new ArrayList<>();
            Set<String> seen = new HashSet<>();
            for (Use u : uses(r.name)) {
                Derived d = derive(u, r);
                if (d != null && seen.add(d.hfName)) {
                    derived.add(d);
                }
            }
            Derived main;
            if (isParameterName(name)) {
                main = new Derived(name, false, "named");
            } else if (!r.name.equals(name) && !r.transposed && isParameterName(r.name)) {
                main = new Derived(r.name, false, "named, through " + r.via.trim());
            } else if (!derived.isEmpty()) {
                main = derived.get(0);
            } else {
                main = throughBias(r);
            }
            if (main == null) {
                String users = describeUses(r.name);
                if (isPlumbing(t)) {
                    constants.add(new GraphConstant(
                            name,
                            (t.numel() <= 1 ? "scalar " : "integer vector ")
                                    + t.dtype().shortName()
                                    + shape(t)
                                    + users));
                } else {
                    unassigned.add(new Unassigned(
                            name,
                            "anonymous " + t.dtype().shortName() + shape(t) + users
                                    + ", and no module path in the node names nor a named bias after it"));
                }
                continue;
            }
            String taken = owner.putIfAbsent(main.hfName, name);
            if (taken != null) {
                unassigned.add(new Unassigned(
                        name,
                        "traces to '" + main.hfName + "' (" + main.evidence + "), which '" + taken
                                + "' already holds"));
                continue;
            }
            TracedWeight w = new TracedWeight(name, main.hfName, main.transposed, main.evidence);
            weights.add(w);
            primary.put(name, w);
            for (Derived d : derived) {
                if (!d.hfName.equals(main.hfName) && owner.putIfAbsent(d.hfName, name) == null) {
                    weights.add(new TracedWeight(
                            name,
                            d.hfName,
                            d.transposed,
                            "shared (tied, or deduplicated by the exporter): " + d.evidence));
                }
            }
        }
        return new Result(weights, constants, unassigned, hints());
    }

    // -------------------------------------------------------------------------------------------------------------
    // Weight rules

    /** A dotted parameter path ending in weight, bias or a known buffer name. */
    static boolean isParameterName(String name) {
        if (name.startsWith("/") || name.contains("::") || !name.contains(".")) {
            return false;
        }
        String last = name.substring(name.lastIndexOf('.') + 1);
        return last.equals("weight") || last.equals("bias") || KNOWN_BUFFERS.contains(last);
    }

    /** The module path of a scoped node name: {@code /a/layer.0/b/MatMul_1} → {@code a.layer.0.b}, else null. */
    static String scope(NodeProto n) {
        String name = n.getName();
        if (!name.startsWith("/")) {
            return null;
        }
        String[] parts = name.substring(1).split("/", -1);
        if (parts.length < 2) {
            return null;
        }
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < parts.length - 1; i++) {
            if (parts[i].isEmpty()) {
                return null;
            }
            if (sb.length() > 0) {
                sb.append('.');
            }
            sb.append(parts[i]);
        }
        return sb.toString();
    }

    private List<Use> uses(String name) {
        return consumers.getOrDefault(name, List.of());
    }

    /** Follows a chain of single-consumer Cast / Identity / 2-D Transpose nodes. */
    private Reach reach(String name) {
        String cur = name;
        boolean transposed = false;
        StringBuilder via = new StringBuilder();
        Tensor t = tensors.get(name);
        for (int hop = 0; hop < 4; hop++) {
            List<Use> us = uses(cur);
            if (us.size() != 1 || us.get(0).node.getOutputCount() != 1) {
                break;
            }
            NodeProto n = us.get(0).node;
            String op = n.getOpType();
            if (op.equals("Transpose") && t != null && t.shape().length == 2 && swaps2d(n)) {
                transposed = !transposed;
            } else if (!op.equals("Cast") && !op.equals("Identity")) {
                break;
            }
            via.append(op).append(' ').append(n.getName().isEmpty() ? "" : n.getName() + " ");
            cur = n.getOutput(0);
        }
        return new Reach(cur, transposed, via.toString());
    }

    private static boolean swaps2d(NodeProto n) {
        AttributeProto perm = attribute(n, "perm");
        return perm == null || (perm.getIntsCount() == 2 && perm.getInts(0) == 1 && perm.getInts(1) == 0);
    }

    /** What one consuming node says about the tensor; null when it says nothing. */
    private Derived derive(Use u, Reach r) {
        NodeProto n = u.node;
        String scope = scope(n);
        if (scope == null) {
            return null;
        }
        String suffix;
        boolean transposed;
        switch (n.getOpType()) {
            case "MatMul" -> {
                suffix = ".weight";
                transposed = u.index == 1 ? !r.transposed : r.transposed;
            }
            case "Gemm" -> {
                if (u.index == 2) {
                    suffix = ".bias";
                    transposed = false;
                } else {
                    suffix = ".weight";
                    boolean stored =
                            u.index == 1 ? intAttribute(n, "transB", 0) == 0 : intAttribute(n, "transA", 0) == 1;
                    transposed = stored != r.transposed;
                }
            }
            case "Gather" -> {
                if (u.index != 0) {
                    return null;
                }
                suffix = ".weight";
                transposed = r.transposed;
            }
            case "LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization" -> {
                if (u.index == 1) {
                    suffix = ".weight";
                } else if (u.index == 2) {
                    suffix = ".bias";
                } else {
                    return null;
                }
                transposed = false;
            }
            case "Mul", "Add" -> {
                Tensor t = tensors.get(r.name);
                if (!isNormModule(scope) || (t != null && t.shape().length > 1)) {
                    return null;
                }
                suffix = n.getOpType().equals("Mul") ? ".weight" : ".bias";
                transposed = false;
            }
            default -> {
                return null;
            }
        }
        String via = r.via.isEmpty() ? "" : " (through " + r.via.trim() + ")";
        return new Derived(scope + suffix, transposed, "node scope " + n.getName() + via);
    }

    private static boolean isNormModule(String scope) {
        String last = scope.substring(scope.lastIndexOf('.') + 1).toLowerCase(Locale.ROOT);
        return last.contains("norm") || last.equals("ln") || last.startsWith("ln_");
    }

    /** Rule (c): {@code MatMul(x, W) → Add(·, X.bias)} or {@code Gemm(x, W, X.bias)} gives {@code X.weight}. */
    private Derived throughBias(Reach r) {
        for (Use u : uses(r.name)) {
            NodeProto n = u.node;
            if (n.getOpType().equals("Gemm") && u.index == 1 && n.getInputCount() > 2) {
                String bias = n.getInput(2);
                if (isParameterName(bias) && bias.endsWith(".bias")) {
                    boolean stored = intAttribute(n, "transB", 0) == 0;
                    return new Derived(
                            weightOf(bias), stored != r.transposed, "bias input of Gemm " + label(n) + ": " + bias);
                }
            }
            if (!n.getOpType().equals("MatMul") || u.index != 1) {
                continue;
            }
            for (Use a : uses(n.getOutput(0))) {
                if (!a.node.getOpType().equals("Add") || a.node.getInputCount() != 2) {
                    continue;
                }
                String other = a.node.getInput(1 - a.index);
                if (isParameterName(other) && other.endsWith(".bias")) {
                    return new Derived(weightOf(other), !r.transposed, "bias Add " + other);
                }
            }
        }
        return null;
    }

    private static String weightOf(String bias) {
        return bias.substring(0, bias.length() - ".bias".length()) + ".weight";
    }

    private static String label(NodeProto n) {
        return n.getName().isEmpty() ? "(unnamed)" : "'" + n.getName() + "'";
    }

    /** A Constant node's tensor that reaches a weight input (MatMul, Gemm, Gather data, LayerNormalization). */
    private boolean feedsWeightInput(Tensor t) {
        if (t.numel() <= 1) {
            return false;
        }
        for (Use u : uses(reach(t.name()).name)) {
            String op = u.node.getOpType();
            if (op.equals("MatMul")
                    || op.equals("Gemm")
                    || (op.equals("Gather") && u.index == 0)
                    || (op.equals("LayerNormalization") && u.index > 0)) {
                return true;
            }
        }
        return false;
    }

    private static boolean isPlumbing(Tensor t) {
        return t.numel() <= 1 || (!t.dtype().isFloatingPoint() && t.shape().length <= 1);
    }

    private String describeUses(String name) {
        Set<String> ops = new LinkedHashSet<>();
        for (Use u : uses(name)) {
            ops.add(u.node.getOpType() + (u.node.getName().isEmpty() ? "" : " " + u.node.getName()));
            if (ops.size() == 3) {
                break;
            }
        }
        int n = uses(name).size();
        if (n == 0) {
            return ", unused";
        }
        return ", used by " + String.join(", ", ops) + (n > ops.size() ? " and " + (n - ops.size()) + " more" : "");
    }

    private static String shape(Tensor t) {
        return java.util.Arrays.toString(t.shape());
    }

    // -------------------------------------------------------------------------------------------------------------
    // Shape hints

    private enum Projection {
        QUERY,
        KEY_VALUE,
        FUSED,
        OTHER
    }

    /** A head-splitting Reshape: target {@code [..., heads, headDim]} of a projection's output. */
    private record HeadSplit(long heads, long headDim, Projection projection, long outFeatures) {}

    private OnnxShapeHints hints() {
        List<HeadSplit> splits = new ArrayList<>();
        for (NodeProto n : graph.getNodeList()) {
            if (n.getOpType().equals("Reshape") && n.getInputCount() == 2) {
                HeadSplit s = headSplit(n);
                if (s != null) {
                    splits.add(s);
                }
            }
        }
        OptionalInt heads = mostCommon(splits, Projection.QUERY, HeadSplit::heads);
        OptionalInt kv = mostCommon(splits, Projection.KEY_VALUE, HeadSplit::heads);
        OptionalInt headDim = mostCommon(splits, Projection.QUERY, HeadSplit::headDim);
        if (heads.isEmpty()) {
            heads = mostCommon(splits, Projection.FUSED, HeadSplit::heads);
            headDim = mostCommon(splits, Projection.FUSED, HeadSplit::headDim);
        }
        if (heads.isEmpty()) {
            heads = mostCommon(splits, Projection.OTHER, HeadSplit::heads);
            headDim = mostCommon(splits, Projection.OTHER, HeadSplit::headDim);
        }
        if (headDim.isEmpty()) {
            headDim = mostCommon(splits, Projection.KEY_VALUE, HeadSplit::headDim);
        }
        if (kv.isEmpty()) {
            kv = heads;
        }
        return kind(heads, kv, headDim, epsilon());
    }

    private static OptionalInt mostCommon(List<HeadSplit> splits, Projection p, Function<HeadSplit, Long> field) {
        Map<Long, Integer> counts = new LinkedHashMap<>();
        for (HeadSplit s : splits) {
            long v = field.apply(s);
            if (s.projection == p && v > 0) {
                counts.merge(v, 1, Integer::sum);
            }
        }
        return counts.entrySet().stream()
                .max(Map.Entry.comparingByValue())
                .map(e -> OptionalInt.of(Math.toIntExact(e.getKey())))
                .orElse(OptionalInt.empty());
    }

    private HeadSplit headSplit(NodeProto reshape) {
        long[] tail = shapeTail(reshape.getInput(1));
        if (tail == null) {
            return null;
        }
        long h = tail[0];
        long d = tail[1];
        if (h == 0 || d == 0 || (h < 0 && d < 0) || h < -1 || d < -1) {
            return null;
        }
        Projection p = Projection.OTHER;
        long out = -1;
        Upstream up = upstreamProjection(reshape.getInput(0));
        if (up != null) {
            NodeProto proj = up.projection;
            String w = proj.getInput(1);
            Tensor wt = tensors.get(w);
            TracedWeight tw = primary.get(w);
            if (tw == null) {
                NodeProto cast = producer.get(w); // a Cast or Transpose in front of the weight
                if (cast != null && cast.getInputCount() > 0) {
                    tw = primary.get(cast.getInput(0));
                    wt = tensors.get(cast.getInput(0));
                }
            }
            p = tw == null ? Projection.OTHER : classify(tw.hfName());
            if (wt != null && wt.shape().length == 2 && producer.get(w) == null) {
                boolean transB = proj.getOpType().equals("Gemm") && intAttribute(proj, "transB", 0) == 1;
                out = transB ? wt.shape()[0] : wt.shape()[1];
            }
            if (up.splitWidth > 0) {
                out = up.splitWidth;
            } else if (up.splitParts > 0) {
                out = out > 0 && out % up.splitParts == 0 ? out / up.splitParts : -1;
            }
        } else if (scope(reshape) == null
                || (!scope(reshape).toLowerCase(Locale.ROOT).contains("attn")
                        && !scope(reshape).toLowerCase(Locale.ROOT).contains("attention"))) {
            return null;
        }
        boolean fusedWhole = p == Projection.FUSED && up.splitWidth == 0 && up.splitParts == 0;
        if (out > 0 && !fusedWhole) {
            if (h == -1 && out % d == 0) {
                h = out / d;
            } else if (d == -1 && out % h == 0) {
                d = out / h;
            }
        }
        if (fusedWhole) {
            // Per-head interleaved QKV (GPT-NeoX): the whole fused output is reshaped to [..., heads, parts × headDim]
            // and the last axis is split afterwards, so the reshape's last entry is not the head dimension.
            int parts = lastAxisSplitParts(reshape.getOutput(0));
            if (parts > 1) {
                if (d == -1 && h > 0 && out > 0 && out % h == 0) {
                    d = out / h;
                } else if (h == -1 && d > 0 && out > 0 && out % d == 0) {
                    h = out / d;
                }
                d = d > 0 && d % parts == 0 ? d / parts : -1;
            }
        }
        if (h <= 0 || d <= 0) {
            return null;
        }
        return new HeadSplit(h, d, p, out);
    }

    /**
     * The number of equal parts the last axis of a 4-D reshape output is split into further down (through Transpose,
     * Cast and Identity nodes with a single consumer), else 0.
     */
    private int lastAxisSplitParts(String name) {
        String cur = name;
        int axis = 3; // position of the reshape's last axis in the current tensor
        for (int hop = 0; hop < 4; hop++) {
            List<Use> us = uses(cur);
            int slices = slicesAlong(us, axis);
            if (slices > 1) {
                return slices; // torch's chunk(n, dim=-1): one Slice per part
            }
            if (us.size() != 1) {
                return 0;
            }
            NodeProto n = us.get(0).node;
            switch (n.getOpType()) {
                case "Transpose" -> {
                    AttributeProto perm = attribute(n, "perm");
                    if (perm == null || perm.getIntsCount() != 4) {
                        return 0;
                    }
                    axis = perm.getIntsList().indexOf((long) axis);
                    if (axis < 0) {
                        return 0;
                    }
                    cur = n.getOutput(0);
                }
                case "Cast", "Identity" -> cur = n.getOutput(0);
                case "Split" -> {
                    long a = intAttribute(n, "axis", 0);
                    if ((a < 0 ? a + 4 : a) != axis) {
                        return 0;
                    }
                    long[] sizes = n.getInputCount() > 1 && !n.getInput(1).isEmpty() ? longs(n.getInput(1)) : null;
                    AttributeProto attr = attribute(n, "split");
                    if (sizes == null && attr != null && attr.getIntsCount() > 0) {
                        sizes = attr.getIntsList().stream()
                                .mapToLong(Long::longValue)
                                .toArray();
                    }
                    if (sizes == null) {
                        return n.getOutputCount();
                    }
                    for (long z : sizes) {
                        if (z != sizes[0]) {
                            return 0;
                        }
                    }
                    return sizes.length;
                }
                default -> {
                    return 0;
                }
            }
        }
        return 0;
    }

    /**
     * The number of uses that slice {@code axis} (of a 4-D tensor) only, when every use does so or reads the shape
     * (torch computes the chunk bounds from it); else 0.
     */
    private int slicesAlong(List<Use> us, int axis) {
        int slices = 0;
        for (Use u : us) {
            NodeProto n = u.node;
            if (n.getOpType().equals("Shape")) {
                continue;
            }
            if (!n.getOpType().equals("Slice") || u.index != 0 || n.getInputCount() < 4) {
                return 0;
            }
            long[] axes = longs(n.getInput(3));
            if (axes == null || axes.length != 1 || (axes[0] < 0 ? axes[0] + 4 : axes[0]) != axis) {
                return 0;
            }
            slices++;
        }
        return slices;
    }

    private static Projection classify(String hfName) {
        String[] parts = hfName.toLowerCase(Locale.ROOT).split("\\.");
        String module = parts.length >= 2 ? parts[parts.length - 2] : "";
        return switch (module) {
            case "query", "q_proj", "q", "wq", "q_lin" -> Projection.QUERY;
            case "key", "k_proj", "k", "wk", "k_lin", "value", "v_proj", "v", "wv", "v_lin" -> Projection.KEY_VALUE;
            case "c_attn", "qkv", "qkv_proj", "query_key_value", "wqkv", "in_proj" -> Projection.FUSED;
            default -> Projection.OTHER;
        };
    }

    /**
     * A projection feeding a head split; when the path went through a {@code Split} (fused QKV), the width of the
     * part taken ({@code splitWidth}) or the number of equal parts ({@code splitParts}), else 0.
     */
    private record Upstream(NodeProto projection, long splitWidth, int splitParts) {}

    /** Walks back from a Reshape's data input through element-wise and split nodes to a MatMul/Gemm. */
    private Upstream upstreamProjection(String name) {
        String cur = name;
        long splitWidth = 0;
        int splitParts = 0;
        for (int hop = 0; hop < 6; hop++) {
            NodeProto p = producer.get(cur);
            if (p == null) {
                return null;
            }
            switch (p.getOpType()) {
                case "MatMul", "Gemm" -> {
                    return p.getInputCount() >= 2 && isWeight(p.getInput(1))
                            ? new Upstream(p, splitWidth, splitParts)
                            : null;
                }
                case "Split" -> {
                    int part = p.getOutputList().indexOf(cur);
                    long[] sizes = p.getInputCount() > 1 ? longs(p.getInput(1)) : null;
                    AttributeProto attr = attribute(p, "split");
                    if (sizes == null && attr != null && attr.getIntsCount() > 0) {
                        sizes = attr.getIntsList().stream()
                                .mapToLong(Long::longValue)
                                .toArray();
                    }
                    if (sizes != null && part >= 0 && part < sizes.length) {
                        splitWidth = sizes[part];
                    } else {
                        splitParts = p.getOutputCount();
                    }
                    cur = p.getInput(0);
                }
                case "Add", "Mul", "Sub", "Identity", "Cast", "Slice", "Reshape", "Squeeze", "Unsqueeze" -> {
                    String next = null;
                    for (String in : p.getInputList()) {
                        if (!in.isEmpty() && !isConstantValue(in)) {
                            next = in;
                            break;
                        }
                    }
                    if (next == null) {
                        return null;
                    }
                    cur = next;
                }
                default -> {
                    return null;
                }
            }
        }
        return null;
    }

    private boolean isWeight(String name) {
        if (tensors.containsKey(name)) {
            return true;
        }
        NodeProto p = producer.get(name); // Cast(weight_f16) or Transpose(weight)
        return p != null && p.getInputCount() == 1 && tensors.containsKey(p.getInput(0));
    }

    private boolean isConstantValue(String name) {
        return tensors.containsKey(name);
    }

    /**
     * The last two entries of a shape tensor, if known: a constant int tensor, or a Concat whose trailing inputs are
     * constants. Null when unknown or when the shape is known not to have 4 entries.
     */
    private long[] shapeTail(String shapeName) {
        long[] whole = longs(shapeName);
        if (whole != null) {
            return whole.length == 4 ? new long[] {whole[2], whole[3]} : null;
        }
        NodeProto p = producer.get(shapeName);
        if (p == null || !p.getOpType().equals("Concat")) {
            return null;
        }
        List<Long> tail = new ArrayList<>(); // the last entries, last first
        int length = 0;
        boolean lengthKnown = true;
        for (int i = p.getInputCount() - 1; i >= 0; i--) {
            long[] v = longs(p.getInput(i));
            if (v != null) {
                for (int j = v.length - 1; j >= 0 && tail.size() < 2; j--) {
                    tail.add(v[j]);
                }
                length += v.length;
            } else {
                if (tail.size() < 2) {
                    return null; // a dynamic entry among the last two
                }
                NodeProto q = producer.get(p.getInput(i));
                if (q != null && q.getOpType().equals("Unsqueeze")) {
                    length += 1; // an unsqueezed scalar, e.g. the batch size from Shape → Gather
                } else {
                    lengthKnown = false;
                }
            }
        }
        if (tail.size() < 2 || (lengthKnown && length != 4)) {
            return null;
        }
        return new long[] {tail.get(1), tail.get(0)};
    }

    /** The values of a small constant integer tensor (initializer or Constant node), else null. */
    private long[] longs(String name) {
        Tensor t = tensors.get(name);
        if (t == null || (t.dtype() != DType.I64 && t.dtype() != DType.I32) || t.numel() > 16) {
            return null;
        }
        int n = (int) t.numel();
        ByteBuffer b = ByteBuffer.allocate(n * t.dtype().size()).order(ByteOrder.LITTLE_ENDIAN);
        t.readBytes(0, b);
        b.flip();
        long[] v = new long[n];
        for (int i = 0; i < n; i++) {
            v[i] = t.dtype() == DType.I64 ? b.getLong() : b.getInt();
        }
        return v;
    }

    /** The value of a scalar floating-point constant, else NaN. */
    private double scalar(String name) {
        Tensor t = tensors.get(name);
        if (t == null || !t.dtype().isFloatingPoint() || t.numel() != 1) {
            NodeProto p = producer.get(name); // Cast(eps_f16)
            if (p != null && p.getOpType().equals("Cast") && p.getInputCount() == 1) {
                t = tensors.get(p.getInput(0));
            }
            if (t == null || !t.dtype().isFloatingPoint() || t.numel() != 1) {
                return Double.NaN;
            }
        }
        float[] f = new float[1];
        t.readFloats(0, f, 0, 1);
        return f[0];
    }

    private OptionalDouble epsilon() {
        Map<Double, Integer> counts = new LinkedHashMap<>();
        for (NodeProto n : graph.getNodeList()) {
            double eps = Double.NaN;
            switch (n.getOpType()) {
                case "LayerNormalization",
                        "SimplifiedLayerNormalization",
                        "SkipLayerNormalization",
                        "SkipSimplifiedLayerNormalization",
                        "RMSNormalization" -> {
                    AttributeProto a = attribute(n, "epsilon");
                    eps = a != null ? a.getF() : 1e-5f; // the operator's default
                }
                case "Add" -> {
                    if (n.getInputCount() == 2) {
                        for (int i = 0; i < 2; i++) {
                            if (isVarianceMean(n.getInput(i))) {
                                eps = scalar(n.getInput(1 - i));
                            }
                        }
                    }
                }
                default -> {}
            }
            if (!Double.isNaN(eps) && eps > 0) {
                // Stored as float32: report its shortest decimal (1e-12, not 9.99999996e-13).
                counts.merge(Double.parseDouble(Float.toString((float) eps)), 1, Integer::sum);
            }
        }
        return counts.entrySet().stream()
                .max(Map.Entry.comparingByValue())
                .map(e -> OptionalDouble.of(e.getKey()))
                .orElse(OptionalDouble.empty());
    }

    /** {@code ReduceMean(Pow(x, 2))} or {@code ReduceMean(Mul(x, x))}: the variance (or mean square) of a norm. */
    private boolean isVarianceMean(String name) {
        NodeProto p = producer.get(name);
        if (p == null || !p.getOpType().equals("ReduceMean") || p.getInputCount() < 1) {
            return false;
        }
        NodeProto q = producer.get(p.getInput(0));
        if (q == null) {
            return false;
        }
        if (q.getOpType().equals("Pow") && q.getInputCount() == 2) {
            return scalar(q.getInput(1)) == 2.0;
        }
        return q.getOpType().equals("Mul")
                && q.getInputCount() == 2
                && q.getInput(0).equals(q.getInput(1));
    }

    private OnnxShapeHints kind(OptionalInt heads, OptionalInt kv, OptionalInt headDim, OptionalDouble eps) {
        List<String> inputs = model.inputNames();
        List<String> outputs = model.outputNames();
        Set<String> ops = new HashSet<>();
        for (NodeProto n : graph.getNodeList()) {
            ops.add(n.getOpType());
        }
        ModelKind kind;
        String why;
        boolean cache = inputs.stream().anyMatch(s -> s.startsWith("past_key_values") || s.startsWith("past."))
                || outputs.stream().anyMatch(s -> s.startsWith("present"));
        boolean causalMask = ops.contains("Trilu") || ops.contains("LessOrEqual");
        boolean encoderOut = outputs.stream()
                .anyMatch(s -> s.equals("last_hidden_state")
                        || s.equals("pooler_output")
                        || s.equals("sentence_embedding")
                        || s.equals("token_embeddings"));
        if (cache) {
            kind = ModelKind.CAUSAL_LM;
            why = "key/value cache inputs or outputs";
        } else if (outputs.contains("logits") && !inputs.contains("token_type_ids")) {
            kind = ModelKind.CAUSAL_LM;
            why = "output 'logits' and no 'token_type_ids' input";
        } else if (encoderOut && causalMask) {
            kind = ModelKind.CAUSAL_LM;
            why = "a causal mask (" + (ops.contains("Trilu") ? "Trilu" : "LessOrEqual")
                    + ") before 'last_hidden_state'";
        } else if (encoderOut || inputs.contains("token_type_ids")) {
            kind = ModelKind.ENCODER;
            why = encoderOut ? "output " + outputs + " and no causal mask" : "input 'token_type_ids'";
        } else {
            kind = ModelKind.UNKNOWN;
            why = "inputs " + inputs + ", outputs " + outputs;
        }
        return new OnnxShapeHints(heads, kv, headDim, eps, kind, why);
    }

    // -------------------------------------------------------------------------------------------------------------

    private static AttributeProto attribute(NodeProto n, String name) {
        for (AttributeProto a : n.getAttributeList()) {
            if (a.getName().equals(name)) {
                return a;
            }
        }
        return null;
    }

    private static long intAttribute(NodeProto n, String name, long dflt) {
        AttributeProto a = attribute(n, name);
        return a == null ? dflt : a.getI();
    }
}
