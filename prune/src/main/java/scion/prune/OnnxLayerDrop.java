package scion.prune;

import ai.onnx.proto.OnnxMl.AttributeProto;
import ai.onnx.proto.OnnxMl.GraphProto;
import ai.onnx.proto.OnnxMl.ModelProto;
import ai.onnx.proto.OnnxMl.NodeProto;
import ai.onnx.proto.OnnxMl.TensorProto;
import ai.onnx.proto.OnnxMl.ValueInfoProto;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.arch.LayerRemap;
import scion.io.arch.WeightGraph;
import scion.io.arch.WeightGraph.Weight;
import scion.io.arch.WeightSpec;
import scion.io.onnx.OnnxModel;
import scion.io.onnx.OnnxWriter;
import scion.io.runtime.calibration.OnnxTaps;
import scion.io.tensor.Tensor;

/**
 * Layer pruning of an ONNX transformer graph, graph kept: the nodes of the removed blocks are cut and the residual
 * stream is rewired around them.
 *
 * <p>Block boundaries come from dataflow ({@link OnnxTaps}): x^l, the residual stream entering block l (x^L after the
 * last block). Removing a maximal run of blocks {@code a..b-1} makes every consumer of x^b (the next block, the final
 * norm, a pooler) read x^a instead; a graph output that was x^b becomes {@code Identity(x^a)} under its own name. Then
 * every node whose outputs no longer reach a graph output is deleted, with the initializers and {@code value_info}
 * only they used. What the removed blocks shared with the rest (attention masks, rotary tables, shape plumbing)
 * stays, because kept nodes still use it. The kept blocks are renumbered in tensor and node names ({@code
 * /encoder/layer.3/…} → {@code /encoder/layer.1/…}, {@code model.layers.5.…weight} → {@code model.layers.3.…weight}),
 * so the result traces as a model of {@code L − n} blocks. Graph inputs and outputs keep their names.
 *
 * <p>Guarantee: the result computes exactly what the source's graph computes with those blocks skipped — the same
 * function as the safetensors checkpoint with the blocks removed ({@link LayerDrop}), exported and run by ONNX Runtime
 * (verified on PyTorch's exports of llama, gpt2 and BERT within 1e-5 relative). The cut is refused when a removed
 * block's weights would still be needed (a graph whose blocks are not separable at the residual stream).
 */
public final class OnnxLayerDrop {
    private OnnxLayerDrop() {}

    /**
     * The rewritten graph.
     *
     * @param proto the pruned model (initializer stubs renamed; bytes come from {@link #replacements} or the source)
     * @param replacements renamed initializers by their new name, as views of the source's tensors
     * @param removedNodes nodes deleted
     * @param removedInitializers initializers deleted
     * @param removedBytes bytes of the deleted initializers
     */
    public record Result(
            ModelProto proto,
            Map<String, Tensor> replacements,
            int removedNodes,
            int removedInitializers,
            long removedBytes) {}

    /** Cuts {@code plan}'s blocks out of {@code model}'s graph (nothing is written). */
    public static Result prune(Model model, LayerDrop.Plan plan) {
        OnnxModel onnx =
                model.onnx().orElseThrow(() -> new IllegalArgumentException("OnnxLayerDrop needs an ONNX model"));
        String where = model.location().getFileName().toString();
        GraphProto g = onnx.graph();
        WeightGraph wg = model.graph();
        int layers = wg.dims().layers();
        if (plan.sourceLayers() != layers) {
            throw new IllegalArgumentException("plan for " + plan.sourceLayers() + " blocks, model has " + layers);
        }
        for (ValueInfoProto o : g.getOutputList()) {
            if (o.getName().startsWith("hidden_states.")) {
                throw InvalidInputException.of(
                        where,
                        "a graph with residual-stream outputs (hidden_states.0..L) cannot lose blocks and keep its"
                                + " outputs",
                        "a graph without hidden_states.* outputs",
                        "output '" + o.getName() + "'; hint: export without --residual-stream, or prune the"
                                + " safetensors checkpoint");
            }
        }
        OnnxTaps taps = OnnxTaps.locate(model);
        boolean[] dropped = new boolean[layers];
        for (int l : plan.dropped()) {
            dropped[l] = true;
        }

        // 1. Rewire: the stream after each removed run is replaced by the stream before it.
        Map<String, String> rewire = new HashMap<>();
        for (int l = 0; l < layers; l++) {
            if (dropped[l] && (l == 0 || !dropped[l - 1])) {
                int b = l;
                while (b < layers && dropped[b]) {
                    b++;
                }
                rewire.put(taps.residual(b).tensor(), taps.residual(l).tensor());
            }
        }
        Set<String> outputs = new LinkedHashSet<>();
        for (ValueInfoProto o : g.getOutputList()) {
            outputs.add(o.getName());
        }
        List<NodeProto> nodes = new ArrayList<>();
        for (NodeProto n : g.getNodeList()) {
            nodes.add(rewireInputs(n, rewire, outputs));
        }
        for (Map.Entry<String, String> e : rewire.entrySet()) {
            if (outputs.contains(e.getKey())) {
                // The graph output keeps its name: Identity(x^a) replaces the removed block's producer.
                nodes.add(NodeProto.newBuilder()
                        .setOpType("Identity")
                        .setName("/scion/prune/Identity_" + e.getKey())
                        .addInput(e.getValue())
                        .addOutput(e.getKey())
                        .build());
            }
        }

        // 2. Dead-node elimination from the graph outputs, in reverse topological order.
        Set<String> live = new HashSet<>(outputs);
        boolean[] keep = new boolean[nodes.size()];
        for (int i = nodes.size() - 1; i >= 0; i--) {
            NodeProto n = nodes.get(i);
            boolean needed = false;
            for (String o : n.getOutputList()) {
                needed |= !o.isEmpty() && live.contains(o);
            }
            if (needed) {
                keep[i] = true;
                live.addAll(n.getInputList());
                collectSubgraphNames(n, live);
            }
        }

        // 3. Check: no removed block's weights are still needed (unless a kept weight shares the tensor).
        Set<String> keptStored = new HashSet<>();
        for (Weight w : wg.weights()) {
            if (w.layer() < 0 || !dropped[w.layer()]) {
                keptStored.add(w.tensor().name());
            }
        }
        List<String> stuck = new ArrayList<>();
        for (Weight w : wg.weights()) {
            String s = w.tensor().name();
            if (w.layer() >= 0 && dropped[w.layer()] && live.contains(s) && !keptStored.contains(s)) {
                stuck.add(w.name());
            }
        }
        if (!stuck.isEmpty()) {
            throw InvalidInputException.of(
                    where,
                    "the removed blocks are not separable at the residual stream: the rest of the graph still uses "
                            + stuck.size() + " of their weights",
                    "no use of a removed block's weights after rewiring the stream",
                    "'" + String.join("', '", stuck.subList(0, Math.min(3, stuck.size()))) + "'"
                            + (stuck.size() > 3 ? " and " + (stuck.size() - 3) + " more" : "")
                            + " still used; hint: prune the safetensors checkpoint and export it");
        }

        // 4. Renumber the kept blocks in names.
        Renumber renumber = new Renumber(wg, plan, outputs, inputNames(g));
        Map<String, String> weightRename = weightRenames(wg, plan, renumber);

        GraphProto.Builder out = g.toBuilder().clearNode().clearInitializer().clearValueInfo();
        int removedNodes = 0;
        for (int i = 0; i < nodes.size(); i++) {
            if (keep[i]) {
                out.addNode(renameNode(nodes.get(i), renumber, weightRename));
            } else {
                removedNodes++;
            }
        }
        Map<String, Tensor> replacements = new LinkedHashMap<>();
        int removedInits = 0;
        long removedBytes = 0;
        for (TensorProto t : g.getInitializerList()) {
            if (!live.contains(t.getName())) {
                removedInits++;
                removedBytes += onnx.find(t.getName()).map(Tensor::byteSize).orElse(0L);
                continue;
            }
            String name = rename(t.getName(), renumber, weightRename);
            if (!name.equals(t.getName())) {
                Tensor src = onnx.find(t.getName())
                        .orElseThrow(() -> new IllegalStateException("initializer without tensor: " + t.getName()));
                replacements.put(name, LayerRemap.rename(src, name));
            }
            out.addInitializer(t.toBuilder().setName(name));
        }
        // Renamed Constant nodes whose data is external: their bytes come from the source by the old name.
        for (NodeProto n : g.getNodeList()) {
            if (n.getOpType().equals("Constant") && n.getOutputCount() == 1 && live.contains(n.getOutput(0))) {
                String old = n.getOutput(0);
                String name = rename(old, renumber, weightRename);
                if (!name.equals(old) && externalConstant(n)) {
                    onnx.find(old).ifPresent(src -> replacements.put(name, LayerRemap.rename(src, name)));
                }
            }
        }
        for (ValueInfoProto v : g.getValueInfoList()) {
            if (live.contains(v.getName())) {
                out.addValueInfo(v.toBuilder().setName(rename(v.getName(), renumber, weightRename)));
            }
        }
        // Graph inputs that are initializers (IR < 4) follow their initializer.
        out.clearInput();
        for (ValueInfoProto v : g.getInputList()) {
            boolean init = onnx.isInitializer(v.getName());
            if (!init) {
                out.addInput(v);
            } else if (live.contains(v.getName())) {
                out.addInput(v.toBuilder().setName(rename(v.getName(), renumber, weightRename)));
            }
        }
        ModelProto proto = onnx.proto().toBuilder().setGraph(out).build();
        return new Result(proto, replacements, removedNodes, removedInits, removedBytes);
    }

    /** Prunes and writes {@code model} to {@code destination} (staged, verified, renamed into place). */
    public static OnnxWriter.Written write(
            Model model, LayerDrop.Plan plan, Path destination, OnnxWriter.Options options) {
        Result r = prune(model, plan);
        return OnnxWriter.write(model.onnx().orElseThrow(), r.proto(), r.replacements(), destination, options);
    }

    private static boolean externalConstant(NodeProto n) {
        for (AttributeProto a : n.getAttributeList()) {
            if (a.getName().equals("value") && a.hasT()) {
                return a.getT().getDataLocation() == TensorProto.DataLocation.EXTERNAL;
            }
        }
        return false;
    }

    private static Set<String> inputNames(GraphProto g) {
        Set<String> s = new HashSet<>();
        for (ValueInfoProto v : g.getInputList()) {
            s.add(v.getName());
        }
        return s;
    }

    private static NodeProto rewireInputs(NodeProto n, Map<String, String> rewire, Set<String> outputs) {
        NodeProto.Builder b = null;
        for (int i = 0; i < n.getInputCount(); i++) {
            String to = rewire.get(n.getInput(i));
            if (to != null) {
                b = b == null ? n.toBuilder() : b;
                b.setInput(i, to);
            }
        }
        for (int i = 0; i < n.getOutputCount(); i++) {
            if (rewire.containsKey(n.getOutput(i)) && outputs.contains(n.getOutput(i))) {
                // The removed block's producer of a graph output: renamed out of the way (then dead).
                b = b == null ? n.toBuilder() : b;
                b.setOutput(i, n.getOutput(i) + "/scion_pruned");
            }
        }
        boolean sub = false;
        for (AttributeProto a : n.getAttributeList()) {
            sub |= a.hasG() || a.getGraphsCount() > 0;
        }
        if (sub) {
            // Subgraphs may read the stream from the enclosing scope.
            b = b == null ? n.toBuilder() : b;
            for (int i = 0; i < b.getAttributeCount(); i++) {
                AttributeProto a = b.getAttribute(i);
                AttributeProto.Builder ab = a.toBuilder();
                if (a.hasG()) {
                    ab.setG(mapSubgraph(a.getG(), s -> rewire.getOrDefault(s, s)));
                }
                for (int k = 0; k < a.getGraphsCount(); k++) {
                    ab.setGraphs(k, mapSubgraph(a.getGraphs(k), s -> rewire.getOrDefault(s, s)));
                }
                b.setAttribute(i, ab);
            }
        }
        return b == null ? n : b.build();
    }

    private static GraphProto mapSubgraph(GraphProto g, java.util.function.UnaryOperator<String> f) {
        GraphProto.Builder b = g.toBuilder();
        for (int i = 0; i < b.getNodeCount(); i++) {
            NodeProto.Builder n = b.getNode(i).toBuilder();
            for (int k = 0; k < n.getInputCount(); k++) {
                n.setInput(k, f.apply(n.getInput(k)));
            }
            for (int k = 0; k < n.getOutputCount(); k++) {
                n.setOutput(k, f.apply(n.getOutput(k)));
            }
            for (int k = 0; k < n.getAttributeCount(); k++) {
                AttributeProto a = n.getAttribute(k);
                AttributeProto.Builder ab = a.toBuilder();
                if (a.hasG()) {
                    ab.setG(mapSubgraph(a.getG(), f));
                }
                for (int j = 0; j < a.getGraphsCount(); j++) {
                    ab.setGraphs(j, mapSubgraph(a.getGraphs(j), f));
                }
                n.setAttribute(k, ab);
            }
            b.setNode(i, n);
        }
        return b.build();
    }

    /** Names a node's subgraphs read (they may come from the enclosing scope). */
    private static void collectSubgraphNames(NodeProto n, Set<String> live) {
        for (AttributeProto a : n.getAttributeList()) {
            if (a.hasG()) {
                collectGraphInputs(a.getG(), live);
            }
            for (GraphProto sg : a.getGraphsList()) {
                collectGraphInputs(sg, live);
            }
        }
    }

    private static void collectGraphInputs(GraphProto g, Set<String> live) {
        for (NodeProto n : g.getNodeList()) {
            live.addAll(n.getInputList());
            collectSubgraphNames(n, live);
        }
    }

    private static NodeProto renameNode(NodeProto n, Renumber r, Map<String, String> weights) {
        NodeProto.Builder b = n.toBuilder();
        b.setName(r.apply(n.getName()));
        for (int i = 0; i < b.getInputCount(); i++) {
            b.setInput(i, rename(b.getInput(i), r, weights));
        }
        for (int i = 0; i < b.getOutputCount(); i++) {
            b.setOutput(i, rename(b.getOutput(i), r, weights));
        }
        for (int i = 0; i < b.getAttributeCount(); i++) {
            AttributeProto a = b.getAttribute(i);
            if (a.hasG() || a.getGraphsCount() > 0) {
                AttributeProto.Builder ab = a.toBuilder();
                if (a.hasG()) {
                    ab.setG(mapSubgraph(a.getG(), s -> rename(s, r, weights)));
                }
                for (int k = 0; k < a.getGraphsCount(); k++) {
                    ab.setGraphs(k, mapSubgraph(a.getGraphs(k), s -> rename(s, r, weights)));
                }
                b.setAttribute(i, ab);
            }
        }
        return b.build();
    }

    private static String rename(String name, Renumber r, Map<String, String> weights) {
        String w = weights.get(name);
        return w != null ? w : r.apply(name);
    }

    /**
     * Stored weight names that would be renamed to a removed block's name because a kept weight shares the tensor (an
     * exporter's deduplication): they take the first kept sharer's renumbered name instead.
     */
    private static Map<String, String> weightRenames(WeightGraph wg, LayerDrop.Plan plan, Renumber r) {
        Set<Integer> dropped = new TreeSet<>();
        for (int l : plan.dropped()) {
            dropped.add(l);
        }
        Map<String, List<Weight>> byStored = new LinkedHashMap<>();
        for (Weight w : wg.weights()) {
            byStored.computeIfAbsent(w.tensor().name(), k -> new ArrayList<>()).add(w);
        }
        Map<String, String> out = new HashMap<>();
        for (Map.Entry<String, List<Weight>> e : byStored.entrySet()) {
            Optional<Weight> named = e.getValue().stream()
                    .filter(w -> w.name().equals(e.getKey()))
                    .findFirst();
            if (named.isEmpty()
                    || named.get().layer() < 0
                    || !dropped.contains(named.get().layer())) {
                continue;
            }
            e.getValue().stream()
                    .filter(w -> w.layer() < 0 || !dropped.contains(w.layer()))
                    .findFirst()
                    .ifPresent(k -> out.put(e.getKey(), r.apply(k.name())));
        }
        return out;
    }

    /**
     * Block indices in names: the segment before {@code {layer}} in the family's templates ({@code layers}, {@code
     * layer}, {@code h}) followed by {@code .N} or {@code /N} is renumbered; a removed block's index N becomes {@code
     * pruned_N} (only shared plumbing of a removed block survives, and it must not collide with a renumbered name).
     */
    private static final class Renumber {
        private final Pattern pattern;
        private final Map<Integer, String> map = new HashMap<>();
        private final Set<String> fixed;

        Renumber(WeightGraph wg, LayerDrop.Plan plan, Set<String> outputs, Set<String> inputs) {
            Set<String> containers = new TreeSet<>();
            for (WeightSpec s : wg.architecture().weights()) {
                String full = s.template();
                int i = full.indexOf("{layer}");
                if (i > 0) {
                    String head = full.substring(0, i - 1); // without the separator before {layer}
                    int dot = head.lastIndexOf('.');
                    containers.add(head.substring(dot + 1));
                }
            }
            StringBuilder alt = new StringBuilder();
            for (String c : containers) {
                alt.append(alt.length() > 0 ? "|" : "").append(Pattern.quote(c));
            }
            this.pattern = Pattern.compile("(?<=(?:^|[/.:])(?:" + alt + ")[./])(0|[1-9][0-9]*)(?=[./_]|$)");
            int[] kept = plan.kept();
            for (int i = 0; i < kept.length; i++) {
                map.put(kept[i], Integer.toString(i));
            }
            for (int l : plan.dropped()) {
                map.put(l, "pruned_" + l);
            }
            this.fixed = new HashSet<>(outputs);
            fixed.addAll(inputs);
        }

        String apply(String name) {
            if (name.isEmpty() || fixed.contains(name)) {
                return name;
            }
            Matcher m = pattern.matcher(name);
            StringBuilder b = new StringBuilder();
            boolean any = false;
            while (m.find()) {
                String to = map.get(Integer.parseInt(m.group(1)));
                if (to != null) {
                    m.appendReplacement(b, Matcher.quoteReplacement(to));
                    any = true;
                }
            }
            if (!any) {
                return name;
            }
            m.appendTail(b);
            return b.toString();
        }
    }
}
