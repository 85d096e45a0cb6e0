package scion.io.onnx;

import ai.onnx.proto.OnnxMl.AttributeProto;
import ai.onnx.proto.OnnxMl.GraphProto;
import ai.onnx.proto.OnnxMl.ModelProto;
import ai.onnx.proto.OnnxMl.NodeProto;
import ai.onnx.proto.OnnxMl.TensorShapeProto;
import ai.onnx.proto.OnnxMl.ValueInfoProto;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import scion.io.InvalidInputException;
import scion.io.arch.Axis;
import scion.io.arch.Dims;
import scion.io.arch.Role;
import scion.io.arch.WeightGraph;
import scion.io.arch.WeightGraph.Weight;
import scion.io.tensor.BufferTensor;
import scion.io.tensor.DType;
import scion.io.tensor.Tensor;

/**
 * Rewrites the integer shape constants of an ONNX graph that carry a width or a head count, for an operator that
 * changes the model's sizes from {@code src} to {@code dst} with {@code head_dim} kept (width growth, subcloning):
 * the graph's nodes, inputs and outputs stay; only constants (and {@code Split} attributes, static output dims) change.
 *
 * <p>Which constants carry what is read from the graph's structure, not from values alone. Each shape consumer —
 * {@code Reshape} (its shape input, directly or through a {@code Concat} of pieces) and {@code Split} (its sizes) —
 * is traced backwards from its data input through element-wise operators, casts, transposes and reshapes to what
 * produced the data: a {@code MatMul}/{@code Gemm} with a traced weight (its output space: residual, query, key/value,
 * fused QKV or MLP, from the weight's architecture entry), an embedding {@code Gather}, a {@code LayerNormalization}
 * (residual), a {@code Split} of a fused QKV (query for its first output, key/value for the others), or an attention
 * {@code MatMul} of two activations (its context, the query space). Then:
 *
 * <ul>
 *   <li>a head split {@code [..., heads, head_dim]} — the last two entries constant with {@code heads × head_dim} equal
 *       to the space's width — gets the space's new width / {@code head_dim} heads;
 *   <li>any other shape whose last entry is a constant equal to the space's width (a head merge {@code [b, s, 384]},
 *       gpt2's {@code [b, s, 3·hidden]} after its {@code Gemm}) gets the new width;
 *   <li>{@code Split} sizes of a fused QKV {@code [q, kv, kv]} become the new block widths; other sizes that add up to
 *       the space's width are scaled in proportion (when each stays whole).
 * </ul>
 *
 * <p>A rewritten constant must not feed any other consumer (PyTorch exports give each use its own {@code Constant});
 * a shared one is refused rather than guessed. {@code -1} and computed entries need nothing. The static last
 * dimension of a graph output is rewritten when it is a changed width ({@code last_hidden_state [batch, seq, 384]});
 * intermediate {@code value_info} annotations, which ONNX Runtime re-infers, are dropped. Constants feeding shape
 * operators that still hold a source width after the rules ran are listed in {@link Result#suspicious()} (ONNX Runtime
 * judges the result either way). Moved here from growth's {@code OnnxGrowth} so that every operator can use it.
 */
public final class ShapeRewriter {
    private ShapeRewriter() {}

    /** What a width axis is. */
    enum Space {
        RESIDUAL,
        Q,
        KV,
        QKV,
        FFN
    }

    /**
     * One rewritten shape constant.
     *
     * @param tensor the Constant output or integer initializer
     * @param from its values before
     * @param to its values after
     * @param why the consumer and the traced producer
     */
    public record Rewrite(String tensor, long[] from, long[] to, String why) {
        @Override
        public String toString() {
            return tensor + ": " + Arrays.toString(from) + " → " + Arrays.toString(to) + " (" + why + ")";
        }
    }

    /**
     * The rewritten graph.
     *
     * @param constants Constant output or integer initializer name → its new value
     * @param model the model with Split attributes and output shapes rewritten and intermediate value_info dropped
     * @param rewrites every constant rewritten, with the reason
     * @param suspicious constants feeding shape operators that still hold a source width or head count
     */
    public record Result(
            Map<String, Tensor> constants, ModelProto model, List<Rewrite> rewrites, List<String> suspicious) {}

    /**
     * Traces {@code onnx}'s shape consumers and rewrites the constants for sizes {@code src} → {@code dst} ({@code
     * head_dim} equal in both).
     *
     * @throws InvalidInputException when a constant would have to change for one consumer but also feeds another
     */
    public static Result rewrite(OnnxModel onnx, WeightGraph graph, Dims src, Dims dst) {
        if (src.headDim() != dst.headDim()) {
            throw new IllegalArgumentException("head_dim must be kept: " + src.headDim() + " → " + dst.headDim());
        }
        Rewriter r = new Rewriter(onnx, graph, src, dst);
        r.run();
        Map<String, Tensor> constants = r.constantReplacements();
        ModelProto model = r.rewrittenModel();
        return new Result(constants, model, List.copyOf(r.rewrites), r.suspicious());
    }

    private static final class Rewriter {
        private static final Set<String> PASS_THROUGH = Set.of(
                "Add",
                "Sub",
                "Mul",
                "Div",
                "Cast",
                "Identity",
                "Transpose",
                "Erf",
                "Tanh",
                "Sigmoid",
                "Relu",
                "Gelu",
                "FastGelu",
                "BiasGelu",
                "Neg",
                "Pow",
                "Sqrt",
                "Where",
                "Softmax",
                "Dropout",
                "Squeeze",
                "Unsqueeze",
                "Expand",
                "Reshape",
                "Slice",
                "Concat",
                "Max",
                "Min",
                "Clip",
                "Abs",
                "Exp",
                "Log",
                "Reciprocal",
                "HardSigmoid",
                "LeakyRelu",
                "Softplus",
                "Mish");
        private static final Set<String> SHAPE_CONSUMERS =
                Set.of("Reshape", "Expand", "Tile", "ConstantOfShape", "Split", "Slice", "Range");

        private final OnnxModel onnx;
        private final Dims src;
        private final Dims dst;
        private final String qkvLayout;
        private final Map<String, NodeProto> producer = new HashMap<>();
        private final Map<String, List<NodeProto>> consumers = new HashMap<>();
        private final Map<String, Weight> weightByTensor = new HashMap<>();
        private final Map<String, long[]> newValues = new LinkedHashMap<>();
        private final Map<String, Set<String>> requesters = new HashMap<>(); // constant → node names asking
        private final Map<String, String> why = new HashMap<>();
        private final Map<String, Space> memo = new HashMap<>();
        final List<Rewrite> rewrites = new ArrayList<>();
        private final List<String> problems = new ArrayList<>();

        Rewriter(OnnxModel onnx, WeightGraph graph, Dims src, Dims dst) {
            this.onnx = onnx;
            this.src = src;
            this.dst = dst;
            String layout = "blocks";
            for (Weight w : graph.weights()) {
                weightByTensor.put(w.tensor().name(), w);
                if (w.role() == Role.ATTN_QKV) {
                    layout = w.spec().qkvLayout().orElse("blocks");
                }
            }
            this.qkvLayout = layout;
            for (NodeProto n : onnx.graph().getNodeList()) {
                for (String o : n.getOutputList()) {
                    producer.put(o, n);
                }
                for (String i : n.getInputList()) {
                    if (!i.isEmpty()) {
                        consumers.computeIfAbsent(i, k -> new ArrayList<>()).add(n);
                    }
                }
            }
        }

        void run() {
            for (NodeProto n : onnx.graph().getNodeList()) {
                switch (n.getOpType()) {
                    case "Reshape":
                        reshape(n);
                        break;
                    case "Split":
                        split(n);
                        break;
                    default:
                        break;
                }
            }
            for (Map.Entry<String, long[]> e : newValues.entrySet()) {
                String c = e.getKey();
                Set<String> asked = requesters.getOrDefault(c, Set.of());
                for (NodeProto user : consumers.getOrDefault(c, List.of())) {
                    if (!asked.contains(nodeId(user))) {
                        problems.add("shape constant '" + c + "' is rewritten for " + asked + " but also feeds "
                                + user.getOpType() + " '" + nodeId(user) + "'");
                    }
                }
                rewrites.add(new Rewrite(c, values(c), e.getValue(), why.get(c)));
            }
            if (!problems.isEmpty()) {
                throw InvalidInputException.of(
                        onnx.location().getFileName().toString(),
                        "cannot rewrite the graph's shape constants for the new widths: " + String.join("; ", problems),
                        "constants used by one shape operator each",
                        problems.size() + " problem(s); hint: transform the safetensors checkpoint and export it");
            }
        }

        // ---- widths of the spaces

        private long oldWidth(Space s) {
            return widthOf(s, src);
        }

        private long newWidth(Space s) {
            return widthOf(s, dst);
        }

        private static long widthOf(Space s, Dims d) {
            switch (s) {
                case RESIDUAL:
                    return d.hidden();
                case Q:
                    return (long) d.heads() * d.headDim();
                case KV:
                    return (long) d.kvHeads() * d.headDim();
                case QKV:
                    return (long) (d.heads() + 2L * d.kvHeads()) * d.headDim();
                default:
                    return d.ffn();
            }
        }

        /** Whether the space is split into heads (a Reshape to {@code [..., heads, head_dim]}). */
        private boolean hasHeads(Space s) {
            return s == Space.Q || s == Space.KV || (s == Space.QKV && "per_head".equals(qkvLayout));
        }

        // ---- tracing

        /** What the last axis of activation {@code name} is, traced backwards; null when unknown. */
        private Space spaceOf(String name) {
            if (memo.containsKey(name)) {
                return memo.get(name);
            }
            memo.put(name, null); // cycles (none in a valid graph) and depth end here
            Space s = trace(name);
            memo.put(name, s);
            return s;
        }

        private Space trace(String name) {
            NodeProto p = producer.get(name);
            if (p == null || isConstant(name)) {
                return null;
            }
            String op = p.getOpType();
            switch (op) {
                case "MatMul":
                case "Gemm":
                case "FusedMatMul": {
                    Weight w = null;
                    for (String in : p.getInputList()) {
                        Weight cand = weightBehind(in);
                        if (cand != null && cand.role().isLinear() && !cand.isBias()) {
                            w = cand;
                        }
                    }
                    if (w != null) {
                        return outSpace(w);
                    }
                    if (p.getInputCount() >= 2 && !isConstant(p.getInput(0)) && !isConstant(p.getInput(1))) {
                        return Space.Q; // attention context: probabilities × values, heads × head_dim
                    }
                    return null;
                }
                case "Gather": {
                    Weight w = weightBehind(p.getInput(0));
                    return w != null && w.role() != Role.BUFFER
                            ? axisSpace(w.spec().axes().get(1))
                            : null;
                }
                case "LayerNormalization":
                case "SimplifiedLayerNormalization":
                case "SkipLayerNormalization":
                case "SkipSimplifiedLayerNormalization":
                    return Space.RESIDUAL;
                case "Split": {
                    Space in = spaceOf(p.getInput(0));
                    if (in == Space.QKV && !"per_head".equals(qkvLayout)) {
                        return p.getOutput(0).equals(name) ? Space.Q : Space.KV;
                    }
                    return in;
                }
                default:
                    if (!PASS_THROUGH.contains(op)) {
                        return null;
                    }
                    for (String in : p.getInputList()) {
                        if (!in.isEmpty() && !isConstant(in)) {
                            Space s = spaceOf(in);
                            if (s != null) {
                                return s;
                            }
                        }
                    }
                    return null;
            }
        }

        /** The traced weight {@code name} holds, also through Transpose/Cast/Identity of it. */
        private Weight weightBehind(String name) {
            for (int i = 0; i < 4 && name != null; i++) {
                Weight w = weightByTensor.get(name);
                if (w != null) {
                    return w;
                }
                NodeProto p = producer.get(name);
                if (p == null || !Set.of("Transpose", "Cast", "Identity").contains(p.getOpType())) {
                    return null;
                }
                name = p.getInput(0);
            }
            return null;
        }

        private static Space outSpace(Weight w) {
            List<Axis> axes = w.spec().axes();
            if (axes.size() != 2) {
                return null;
            }
            return axisSpace(axes.get(w.spec().inOut() ? 1 : 0));
        }

        private static Space axisSpace(Axis a) {
            switch (a) {
                case RESIDUAL:
                    return Space.RESIDUAL;
                case Q:
                    return Space.Q;
                case KV:
                    return Space.KV;
                case QKV:
                    return Space.QKV;
                case FFN:
                    return Space.FFN;
                default:
                    return null;
            }
        }

        private boolean isConstant(String name) {
            if (onnx.isInitializer(name)) {
                return true;
            }
            NodeProto p = producer.get(name);
            return p != null && p.getOpType().equals("Constant");
        }

        // ---- shape entries

        /** One entry of a shape vector: a constant's element, or a computed value (tensor null). */
        private record Entry(String tensor, int index, long value, String viaNode) {}

        /** The entries of shape input {@code name} consumed by {@code user}: a constant, or a Concat of pieces. */
        private List<Entry> entries(String name, NodeProto user) {
            List<Entry> out = new ArrayList<>();
            if (isIntConstant(name)) {
                long[] v = values(name);
                for (int i = 0; i < v.length; i++) {
                    out.add(new Entry(name, i, v[i], nodeId(user)));
                }
                return out;
            }
            NodeProto p = producer.get(name);
            if (p != null && p.getOpType().equals("Concat")) {
                for (String in : p.getInputList()) {
                    if (isIntConstant(in)) {
                        long[] v = values(in);
                        for (int i = 0; i < v.length; i++) {
                            out.add(new Entry(in, i, v[i], nodeId(p)));
                        }
                    } else {
                        out.add(new Entry(null, 0, 0, null)); // computed (a Gather of a Shape, unsqueezed)
                    }
                }
                return out;
            }
            return null;
        }

        private void reshape(NodeProto n) {
            if (n.getInputCount() < 2) {
                return;
            }
            List<Entry> e = entries(n.getInput(1), n);
            if (e == null || e.isEmpty()) {
                return;
            }
            Space s = spaceOf(n.getInput(0));
            if (s == null) {
                return;
            }
            Entry last = e.get(e.size() - 1);
            long oldW = oldWidth(s);
            if (e.size() >= 2 && hasHeads(s)) {
                Entry heads = e.get(e.size() - 2);
                if (heads.tensor() != null
                        && last.tensor() != null
                        && heads.value() > 0
                        && last.value() > 0
                        && heads.value() * last.value() == oldW) {
                    long newHeads = newWidth(s) / last.value(); // head_dim is kept
                    if (newHeads != heads.value()) {
                        set(heads, newHeads, "heads of a " + name(s) + " head split in Reshape '" + nodeId(n) + "'");
                    }
                    return;
                }
                if (heads.value() == -1 || last.value() == src.headDim()) {
                    return; // [.., -1, head_dim] or a computed head count: nothing to rewrite
                }
            }
            if (last.tensor() != null && last.value() == oldW && oldW != newWidth(s)) {
                set(last, newWidth(s), name(s) + " width of Reshape '" + nodeId(n) + "'");
            }
        }

        private void split(NodeProto n) {
            Space s = spaceOf(n.getInput(0));
            if (s == null) {
                return;
            }
            long[] sizes = null;
            String sizesTensor = null;
            if (n.getInputCount() >= 2 && !n.getInput(1).isEmpty() && isIntConstant(n.getInput(1))) {
                sizesTensor = n.getInput(1);
                sizes = values(sizesTensor);
            } else {
                for (AttributeProto a : n.getAttributeList()) {
                    if (a.getName().equals("split")) {
                        sizes = a.getIntsList().stream()
                                .mapToLong(Long::longValue)
                                .toArray();
                    }
                }
            }
            if (sizes == null) {
                return; // equal parts: follow the grown input by themselves
            }
            long[] grown = sizes.clone();
            long oldQ = oldWidth(Space.Q);
            long oldKv = oldWidth(Space.KV);
            if (s == Space.QKV && sizes.length == 3 && sizes[0] == oldQ && sizes[1] == oldKv && sizes[2] == oldKv) {
                grown = new long[] {newWidth(Space.Q), newWidth(Space.KV), newWidth(Space.KV)};
            } else {
                long sum = Arrays.stream(sizes).sum();
                if (sum != oldWidth(s)) {
                    return;
                }
                for (int i = 0; i < grown.length; i++) {
                    if (sizes[i] * newWidth(s) % oldWidth(s) != 0) {
                        return; // not a proportional split of this space
                    }
                    grown[i] = sizes[i] * newWidth(s) / oldWidth(s);
                }
            }
            if (Arrays.equals(grown, sizes)) {
                return;
            }
            String reason = name(s) + " split sizes of Split '" + nodeId(n) + "'";
            if (sizesTensor != null) {
                for (int i = 0; i < grown.length; i++) {
                    set(new Entry(sizesTensor, i, sizes[i], nodeId(n)), grown[i], reason);
                }
            } else {
                splitAttributes.put(nodeId(n), grown);
                attributeRewrites.add(new Rewrite("attribute split of " + nodeId(n), sizes, grown, reason));
            }
        }

        private final Map<String, long[]> splitAttributes = new HashMap<>();
        private final List<Rewrite> attributeRewrites = new ArrayList<>();

        private void set(Entry e, long value, String reason) {
            long[] v = newValues.computeIfAbsent(e.tensor(), k -> values(k).clone());
            if (v[e.index()] != e.value() && v[e.index()] != value) {
                problems.add("'" + e.tensor() + "'[" + e.index() + "] asked to become both " + v[e.index()] + " and "
                        + value);
            }
            v[e.index()] = value;
            requesters.computeIfAbsent(e.tensor(), k -> new HashSet<>()).add(e.viaNode());
            why.merge(e.tensor(), reason, (a, b) -> a.equals(b) ? a : a + "; " + b);
        }

        private static String name(Space s) {
            return s.name().toLowerCase(java.util.Locale.ROOT);
        }

        private static String nodeId(NodeProto n) {
            return n.getName().isEmpty() ? n.getOpType() + "→" + n.getOutput(0) : n.getName();
        }

        private boolean isIntConstant(String name) {
            if (!isConstant(name)) {
                return false;
            }
            Optional<Tensor> t = onnx.find(name);
            return t.isPresent()
                    && (t.get().dtype() == DType.I64 || t.get().dtype() == DType.I32)
                    && t.get().shape().length <= 1
                    && t.get().numel() <= 16;
        }

        private final Map<String, long[]> valueCache = new HashMap<>();

        private long[] values(String name) {
            return valueCache.computeIfAbsent(name, k -> {
                Tensor t = onnx.find(k).orElseThrow();
                ByteBuffer b =
                        ByteBuffer.allocate(Math.toIntExact(t.byteSize())).order(ByteOrder.LITTLE_ENDIAN);
                t.readBytes(0, b);
                b.flip();
                long[] v = new long[Math.toIntExact(t.numel())];
                for (int i = 0; i < v.length; i++) {
                    v[i] = t.dtype() == DType.I64 ? b.getLong() : b.getInt();
                }
                return v;
            });
        }

        Map<String, Tensor> constantReplacements() {
            Map<String, Tensor> out = new LinkedHashMap<>();
            for (Map.Entry<String, long[]> e : newValues.entrySet()) {
                Tensor t = onnx.find(e.getKey()).orElseThrow();
                ByteBuffer b =
                        ByteBuffer.allocate(Math.toIntExact(t.byteSize())).order(ByteOrder.LITTLE_ENDIAN);
                for (long v : e.getValue()) {
                    if (t.dtype() == DType.I64) {
                        b.putLong(v);
                    } else {
                        b.putInt(Math.toIntExact(v));
                    }
                }
                b.flip();
                out.put(e.getKey(), new BufferTensor(e.getKey(), t.dtype(), t.shape(), b));
            }
            return out;
        }

        /** The model with split attributes, output dims and value_info updated. */
        ModelProto rewrittenModel() {
            rewrites.addAll(attributeRewrites);
            ModelProto.Builder m = onnx.proto().toBuilder();
            GraphProto.Builder g = m.getGraphBuilder();
            if (!splitAttributes.isEmpty()) {
                for (NodeProto.Builder nb : g.getNodeBuilderList()) {
                    long[] sizes = splitAttributes.get(nodeId(nb.build()));
                    if (sizes == null) {
                        continue;
                    }
                    for (AttributeProto.Builder ab : nb.getAttributeBuilderList()) {
                        if (ab.getName().equals("split")) {
                            ab.clearInts();
                            for (long s : sizes) {
                                ab.addInts(s);
                            }
                        }
                    }
                }
            }
            for (ValueInfoProto.Builder vb : g.getOutputBuilderList()) {
                if (!vb.hasType() || !vb.getType().hasTensorType()) {
                    continue;
                }
                TensorShapeProto.Builder shape =
                        vb.getTypeBuilder().getTensorTypeBuilder().getShapeBuilder();
                int last = shape.getDimCount() - 1;
                if (last < 0 || !shape.getDim(last).hasDimValue()) {
                    continue;
                }
                Space s = spaceOf(vb.getName());
                long v = shape.getDim(last).getDimValue();
                if (s != null && v == oldWidth(s) && v != newWidth(s)) {
                    shape.getDimBuilder(last).setDimValue(newWidth(s));
                    rewrites.add(new Rewrite(
                            "output " + vb.getName(),
                            new long[] {v},
                            new long[] {newWidth(s)},
                            "static last dimension, " + name(s) + " width"));
                }
            }
            if (g.getValueInfoCount() > 0) {
                g.clearValueInfo();
            }
            return m.build();
        }

        /** Constants feeding shape operators that still hold a source width or head count. */
        List<String> suspicious() {
            Set<Long> widths = new HashSet<>();
            for (Space s : Space.values()) {
                if (oldWidth(s) != newWidth(s)) {
                    widths.add(oldWidth(s));
                }
            }
            if (src.heads() != dst.heads()) {
                widths.add((long) src.heads());
            }
            List<String> out = new ArrayList<>();
            for (NodeProto n : onnx.graph().getNodeList()) {
                if (!SHAPE_CONSUMERS.contains(n.getOpType())) {
                    continue;
                }
                for (int i = 1; i < n.getInputCount(); i++) {
                    List<String> names = new ArrayList<>();
                    NodeProto p = producer.get(n.getInput(i));
                    if (p != null && p.getOpType().equals("Concat")) {
                        names.addAll(p.getInputList());
                    } else {
                        names.add(n.getInput(i));
                    }
                    for (String c : names) {
                        if (!isIntConstant(c) || newValues.containsKey(c)) {
                            continue;
                        }
                        for (long v : values(c)) {
                            if (widths.contains(v) && v > 1) {
                                out.add(c + " " + Arrays.toString(values(c)) + " feeding " + n.getOpType() + " '"
                                        + nodeId(n) + "'");
                                break;
                            }
                        }
                    }
                }
            }
            return out;
        }
    }
}
