package scion.io.runtime.calibration;

import ai.onnx.proto.OnnxMl.GraphProto;
import ai.onnx.proto.OnnxMl.ModelProto;
import ai.onnx.proto.OnnxMl.NodeProto;
import ai.onnx.proto.OnnxMl.ValueInfoProto;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.arch.Role;
import scion.io.arch.WeightGraph;
import scion.io.arch.WeightGraph.Weight;
import scion.io.onnx.OnnxModel;
import scion.io.tensor.LowRankTensor;

/**
 * Where a transformer's calibration activations are in its ONNX graph: the residual stream entering every layer and
 * after the last one, and the input of every linear weight; and the graph with those tensors added as outputs.
 *
 * <p>Rules (dataflow, no node names needed; the roles come from the model's {@link WeightGraph}):
 *
 * <ul>
 *   <li><b>Linear input</b> of a weight: the weight tensor is followed through {@code Cast}/{@code Identity}/{@code
 *       Transpose} to the {@code MatMul} or {@code Gemm} that multiplies it; the tap is that node's other (data)
 *       input. It is {@code [batch, seq, in]}, or {@code [batch·seq, in]} where the exporter flattened the tokens
 *       first (GPT-2's {@code Conv1D} becomes {@code Reshape → Gemm}).
 *   <li><b>Residual stream entering layer l</b> (l = 0..L−1): let A be the input of layer l's query (or fused qkv)
 *       projection and D every tensor computed from that projection's output. The tap is the nearest tensor X among
 *       A and its ancestors that an {@code Add} sums with a tensor in D: the skip connection {@code X + f(X)} around
 *       the attention block. Pre-LN (llama, gpt2): X is the input of the layer's attention norm; post-LN (BERT): X
 *       is A itself, the previous block's output LayerNorm. Norm internals never match (their {@code Add}s add
 *       constants: ε, the bias).
 *   <li><b>Residual stream after the last layer</b> (index L, before the final norm): with a final norm, the nearest
 *       ancestor of the final norm's weight consumer that an {@code Add} of two tensors computed from stream L−1
 *       produces (the last residual add). Post-LN without a final norm: the output of the last layer's output norm
 *       ({@code MLP_POST_NORM}: the fused LayerNormalization, or the {@code Add} of its bias); the same rule applied
 *       to earlier layers must give the traced stream entering the next layer, which is checked.
 *   <li>A graph that already has outputs {@code hidden_states.0 .. hidden_states.L} (Scion's exporter with residual
 *       outputs) uses them as they are.
 * </ul>
 *
 * <p>Verified against Hugging Face transformers' {@code hidden_states} within 1e-4 relative (observed ≤ 6e-7) on the
 * PyTorch exports of llama, gpt2 and bert ({@code fixtures/onnx}) and on Scion's export of all eight families; on the
 * latter the rule finds exactly the tensors the exporter itself names {@code hidden_states.*}. Values, not tensor
 * identity, are the contract: a tap may be an exporter's float-to-float {@code Cast} of the residual sum rather than
 * the sum itself.
 */
public final class OnnxTaps {
    /** What a tap holds. */
    public enum Kind {
        /** The residual stream, {@code [batch, seq, hidden]}. */
        RESIDUAL,
        /** The data input of a linear weight's MatMul/Gemm, {@code [batch, seq, in]} or {@code [batch·seq, in]}. */
        LINEAR_INPUT
    }

    /**
     * A graph tensor to be fetched.
     *
     * @param kind residual stream or linear input
     * @param index for {@link Kind#RESIDUAL} the stream position 0..L (L = after the last layer); for {@link
     *     Kind#LINEAR_INPUT} the weight's layer (−1 for global weights)
     * @param weight the Hugging Face name of the linear weight, or empty for residual taps
     * @param tensor the tensor's name in the ONNX graph (also the graph output name once tapped)
     * @param evidence how it was found, for reports
     */
    public record Tap(Kind kind, int index, String weight, String tensor, String evidence) {}

    private final ModelProto proto;
    private final WeightGraph weights;
    private final GraphIndex index;
    private final String where;
    private final List<Tap> residual;

    private OnnxTaps(ModelProto proto, WeightGraph weights, String where) {
        this.proto = proto;
        this.weights = weights;
        this.index = new GraphIndex(proto.getGraph());
        this.where = where;
        this.residual = List.copyOf(locateResidual());
    }

    /** The taps of an ONNX model opened with {@link Model#open}. */
    public static OnnxTaps locate(Model model) {
        OnnxModel onnx = model.onnx()
                .orElseThrow(() -> InvalidInputException.of(
                        model.location().toString(),
                        "activation taps need an ONNX graph",
                        "an .onnx model (safetensors checkpoints are exported first)",
                        "a " + model.format() + " checkpoint"));
        return new OnnxTaps(
                onnx.proto(), model.graph(), model.location().getFileName().toString());
    }

    /**
     * The taps of a graph whose weights {@code weights} describes: each weight's tensor is found under its stored
     * name, or else under its Hugging Face name (an exported graph names its initializers after the parameters).
     *
     * @param where the file or model name used in messages
     */
    public static OnnxTaps locate(ModelProto proto, WeightGraph weights, String where) {
        return new OnnxTaps(proto, weights, where);
    }

    /** Number of transformer layers L. */
    public int layers() {
        return weights.dims().layers();
    }

    /** The L + 1 residual-stream taps: entering layer 0..L−1, then after the last layer (before the final norm). */
    public List<Tap> residual() {
        return residual;
    }

    /** The residual stream at position {@code i} (0..L). */
    public Tap residual(int i) {
        if (i < 0 || i > layers()) {
            throw new IllegalArgumentException("residual position " + i + " outside 0.." + layers());
        }
        return residual.get(i);
    }

    /** The input of the linear weight with this Hugging Face name ({@code encoder.layer.0.output.dense.weight}). */
    public Tap linearInput(String weightName) {
        Weight w = weights.find(weightName)
                .orElseThrow(() -> InvalidInputException.of(
                        where, "no weight '" + weightName + "'", "a linear weight of the model", "no such name"));
        if (!w.role().isLinear() || w.isBias()) {
            throw InvalidInputException.of(
                    where,
                    "weight '" + weightName + "' is not a linear projection",
                    "a weight whose role multiplies activations (attention q/k/v/o, MLP, lm_head)",
                    "role " + w.role().id() + (w.isBias() ? " (bias)" : ""));
        }
        NodeProto n = linearNode(w);
        return new Tap(Kind.LINEAR_INPUT, w.layer(), w.name(), dataInput(n, w), "data input of " + GraphIndex.label(n));
    }

    /** The inputs of every linear weight with one of these roles, in storage order. */
    public List<Tap> linearInputs(Collection<Role> roles) {
        List<Tap> out = new ArrayList<>();
        for (Weight w : weights.weights()) {
            if (roles.contains(w.role()) && w.role().isLinear() && !w.isBias()) {
                out.add(linearInput(w.name()));
            }
        }
        return out;
    }

    /** The model's graph (unchanged). */
    public ModelProto proto() {
        return proto;
    }

    /** The weight graph the taps were traced with. */
    public WeightGraph weights() {
        return weights;
    }

    /**
     * A copy of {@code proto} whose graph also outputs the tensors of {@code taps} (each name once; a tensor that is
     * already an output stays as it is). Only the graph's output list changes: initializers are shared with {@code
     * proto} (protobuf messages are immutable, so their {@code raw_data} is not copied). The new outputs carry no
     * type; ONNX Runtime infers it.
     */
    public static ModelProto withOutputs(ModelProto proto, Collection<Tap> taps) {
        GraphProto g = proto.getGraph();
        Set<String> existing = new LinkedHashSet<>();
        for (ValueInfoProto v : g.getOutputList()) {
            existing.add(v.getName());
        }
        GraphProto.Builder b = g.toBuilder();
        for (Tap t : taps) {
            if (existing.add(t.tensor())) {
                b.addOutput(ValueInfoProto.newBuilder().setName(t.tensor()));
            }
        }
        return proto.toBuilder().setGraph(b).build();
    }

    // ---------------------------------------------------------------------------------------------------------------

    private List<Tap> locateResidual() {
        int layers = layers();
        List<Tap> out = new ArrayList<>();
        boolean exported = true;
        for (int i = 0; i <= layers; i++) {
            exported &= index.graphOutputs().contains("hidden_states." + i);
        }
        if (exported) {
            for (int i = 0; i <= layers; i++) {
                out.add(new Tap(Kind.RESIDUAL, i, "", "hidden_states." + i, "graph output hidden_states." + i));
            }
            return out;
        }
        for (int l = 0; l < layers; l++) {
            out.add(entering(l));
        }
        out.add(afterLastLayer(out));
        return out;
    }

    /** The residual stream entering layer {@code l}: the skip connection around its attention block. */
    private Tap entering(int l) {
        Weight q = layerWeight(l, Role.ATTN_Q)
                .or(() -> layerWeight(l, Role.ATTN_QKV))
                .orElseThrow(() -> InvalidInputException.of(
                        where,
                        "layer " + l + " has no attention query projection",
                        "a weight with role attn_q or attn_qkv in every layer",
                        "none in layer " + l));
        NodeProto qNode = linearNode(q);
        String a = dataInput(qNode, q);
        Set<String> branch = index.descendants(qNode.getOutput(0));
        for (String x : index.ancestors(a)) {
            for (GraphIndex.Use u : index.uses(x)) {
                NodeProto n = u.node();
                if (isAdd(n)) {
                    String other = n.getInput(1 - u.index());
                    if (branch.contains(other)) {
                        return new Tap(
                                Kind.RESIDUAL,
                                l,
                                "",
                                x,
                                "skip input of " + GraphIndex.label(n) + " around layer " + l + "'s attention");
                    }
                }
            }
        }
        throw InvalidInputException.of(
                where,
                "cannot find the residual stream entering layer " + l,
                "an Add that sums the input of " + GraphIndex.label(qNode) + " (or a tensor it is computed from)"
                        + " with the attention branch",
                "no such Add");
    }

    /** The residual stream after the last layer, before the final norm. */
    private Tap afterLastLayer(List<Tap> entering) {
        int last = layers() - 1;
        Tap lastEntering = entering.get(last);
        List<Weight> finalNorm = normWeights(Role.FINAL_NORM, -1);
        if (!finalNorm.isEmpty()) {
            NodeProto norm = firstConsumer(finalNorm.get(0));
            Set<String> stream = index.descendants(lastEntering.tensor());
            stream.add(lastEntering.tensor());
            for (String in : norm.getInputList()) {
                if (in.isEmpty() || index.isConstant(in)) {
                    continue;
                }
                for (String y : index.ancestors(in)) {
                    NodeProto p = index.producer(y);
                    if (p != null && isAdd(p) && stream.contains(p.getInput(0)) && stream.contains(p.getInput(1))) {
                        return new Tap(
                                Kind.RESIDUAL,
                                last + 1,
                                "",
                                y,
                                "last residual " + GraphIndex.label(p) + " before the final norm "
                                        + GraphIndex.label(norm));
                    }
                }
            }
            throw InvalidInputException.of(
                    where,
                    "cannot find the residual stream after the last layer",
                    "an Add of two tensors computed from the stream entering layer " + last + " before the final norm "
                            + GraphIndex.label(norm),
                    "no such Add");
        }
        if (!normWeights(Role.MLP_POST_NORM, last).isEmpty()) {
            // Post-LN: a layer's output is its output norm; check the rule on the layers whose output is known.
            for (int l = 0; l < last; l++) {
                String out = postNormOutput(l);
                String next = entering.get(l + 1).tensor();
                if (!out.equals(next)) {
                    throw InvalidInputException.of(
                            where,
                            "layer " + l + "'s output norm is not the stream entering layer " + (l + 1),
                            "'" + next + "' (traced through the skip connection)",
                            "'" + out + "'");
                }
            }
            return new Tap(
                    Kind.RESIDUAL,
                    last + 1,
                    "",
                    postNormOutput(last),
                    "output of layer " + last + "'s post-MLP norm (post-LN, no final norm)");
        }
        throw InvalidInputException.of(
                where,
                "cannot find the residual stream after the last layer",
                "a final norm (role final_norm) or a post-LN output norm (role mlp_post_norm)",
                "neither");
    }

    /** The output of a decomposed or fused norm: LayerNormalization's output, else the Add of its bias. */
    private String postNormOutput(int layer) {
        List<Weight> ws = normWeights(Role.MLP_POST_NORM, layer);
        Weight scale = null;
        Weight bias = null;
        for (Weight w : ws) {
            if (w.isBias()) {
                bias = w;
            } else {
                scale = w;
            }
        }
        NodeProto n = firstConsumer(scale != null ? scale : bias);
        if (n.getOpType().endsWith("Normalization") || bias == null) {
            return n.getOutput(0);
        }
        return firstConsumer(bias).getOutput(0);
    }

    private static boolean isAdd(NodeProto n) {
        return n.getOpType().equals("Add") && n.getDomain().isEmpty() && n.getInputCount() == 2;
    }

    private Optional<Weight> layerWeight(int layer, Role role) {
        for (Weight w : weights.weights()) {
            if (w.layer() == layer && w.role() == role && !w.isBias()) {
                return Optional.of(w);
            }
        }
        return Optional.empty();
    }

    private List<Weight> normWeights(Role role, int layer) {
        List<Weight> out = new ArrayList<>();
        for (Weight w : weights.weights()) {
            if (w.role() == role && w.layer() == layer) {
                out.add(w);
            }
        }
        return out;
    }

    /** The weight's tensor name in this graph: its stored name, else its Hugging Face name. */
    private String tensorName(Weight w) {
        if (w.tensor() instanceof LowRankTensor) {
            // A factorised weight: its input-side factor is the one multiplied with the activations.
            LowRankTensor f = (LowRankTensor) w.tensor();
            boolean storedInOut = w.transposed() != w.spec().inOut();
            String first = (storedInOut ? f.left() : f.right()).name();
            if (index.exists(first)) {
                return first;
            }
        }
        String stored = w.tensor().name();
        if (index.exists(stored)) {
            return stored;
        }
        if (index.exists(w.name())) {
            return w.name();
        }
        throw InvalidInputException.of(
                where,
                "weight '" + w.name() + "' is not in the graph",
                "an initializer named '" + stored + "' or '" + w.name() + "'",
                "neither");
    }

    /**
     * The first node that applies weight {@code w} to activations: its consumer, or, when the weight first goes
     * through computations on constants only (Gemma's norm scale {@code 1 + γ}), the first node downstream of those
     * that also takes a non-constant input.
     */
    private NodeProto firstConsumer(Weight w) {
        Set<String> constantDerived = new LinkedHashSet<>();
        java.util.ArrayDeque<String> queue = new java.util.ArrayDeque<>();
        String start = tensorName(w);
        constantDerived.add(start);
        queue.add(start);
        while (!queue.isEmpty()) {
            for (GraphIndex.Use u : index.uses(queue.poll())) {
                NodeProto n = u.node();
                boolean activation = false;
                for (String in : n.getInputList()) {
                    activation |= !in.isEmpty() && !index.isConstant(in) && !constantDerived.contains(in);
                }
                if (activation) {
                    return n;
                }
                for (String o : n.getOutputList()) {
                    if (!o.isEmpty() && constantDerived.add(o)) {
                        queue.add(o);
                    }
                }
            }
        }
        throw InvalidInputException.of(
                where, "weight '" + w.name() + "' is never applied to activations", "a consumer", "none");
    }

    /** The MatMul or Gemm that multiplies weight {@code w}; with several, the one whose scope names the module. */
    private NodeProto linearNode(Weight w) {
        String t = index.throughPassThrough(tensorName(w));
        List<NodeProto> found = new ArrayList<>();
        for (GraphIndex.Use u : index.uses(t)) {
            String op = u.node().getOpType();
            if ((op.equals("MatMul") || op.equals("Gemm")) && u.index() <= 1) {
                found.add(u.node());
            }
        }
        if (found.size() > 1) {
            String module = w.name().substring(0, w.name().lastIndexOf('.'));
            String scope = "/" + module.replace('.', '/') + "/";
            List<NodeProto> scoped = new ArrayList<>();
            for (NodeProto n : found) {
                if (n.getName().replace('.', '/').startsWith(scope)) {
                    scoped.add(n);
                }
            }
            if (scoped.size() == 1) {
                return scoped.get(0);
            }
        }
        if (found.size() != 1) {
            throw InvalidInputException.of(
                    where,
                    "cannot find the MatMul of weight '" + w.name() + "'",
                    "one MatMul or Gemm multiplying tensor '" + t + "'",
                    found.size() + " such nodes");
        }
        return found.get(0);
    }

    private String dataInput(NodeProto n, Weight w) {
        String t = index.throughPassThrough(tensorName(w));
        int weightSlot = n.getInput(1).equals(t) ? 1 : 0;
        if (weightSlot == 0 || (n.getOpType().equals("Gemm") && GraphIndex.intAttribute(n, "transA", 0) != 0)) {
            throw InvalidInputException.of(
                    where,
                    GraphIndex.label(n) + " multiplies weight '" + w.name() + "' from the left",
                    "activations as the first input (x · W)",
                    "the weight as the first input");
        }
        return n.getInput(0);
    }
}
