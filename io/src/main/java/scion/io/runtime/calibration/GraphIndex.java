package scion.io.runtime.calibration;

import ai.onnx.proto.OnnxMl.AttributeProto;
import ai.onnx.proto.OnnxMl.GraphProto;
import ai.onnx.proto.OnnxMl.NodeProto;
import ai.onnx.proto.OnnxMl.TensorProto;
import ai.onnx.proto.OnnxMl.ValueInfoProto;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Producer and consumer links of an ONNX graph's tensors, for the tracing rules of {@link OnnxTaps}.
 *
 * <p>Only the main graph is indexed: tensors used inside subgraphs (If, Loop) are not followed. A constant is a graph
 * initializer or a {@code Constant} node's output; dataflow walks never cross constants.
 */
final class GraphIndex {
    /** One use of a tensor: the consuming node and the input slot. */
    record Use(NodeProto node, int index) {}

    private final GraphProto graph;
    private final Map<String, NodeProto> producer = new HashMap<>();
    private final Map<String, List<Use>> consumers = new HashMap<>();
    private final Set<String> constants = new HashSet<>();
    private final Set<String> graphInputs = new LinkedHashSet<>();
    private final Set<String> graphOutputs = new LinkedHashSet<>();

    GraphIndex(GraphProto graph) {
        this.graph = graph;
        for (TensorProto t : graph.getInitializerList()) {
            constants.add(t.getName());
        }
        for (NodeProto n : graph.getNodeList()) {
            for (String o : n.getOutputList()) {
                if (!o.isEmpty()) {
                    producer.put(o, n);
                }
            }
            if (n.getOpType().equals("Constant") && n.getDomain().isEmpty()) {
                constants.addAll(n.getOutputList());
            }
            for (int i = 0; i < n.getInputCount(); i++) {
                String in = n.getInput(i);
                if (!in.isEmpty()) {
                    consumers.computeIfAbsent(in, k -> new ArrayList<>()).add(new Use(n, i));
                }
            }
        }
        for (ValueInfoProto v : graph.getInputList()) {
            if (!constants.contains(v.getName())) {
                graphInputs.add(v.getName());
            }
        }
        for (ValueInfoProto v : graph.getOutputList()) {
            graphOutputs.add(v.getName());
        }
    }

    GraphProto graph() {
        return graph;
    }

    NodeProto producer(String tensor) {
        return producer.get(tensor);
    }

    List<Use> uses(String tensor) {
        return consumers.getOrDefault(tensor, List.of());
    }

    boolean isConstant(String tensor) {
        return constants.contains(tensor);
    }

    /** Whether a tensor exists in the graph: a graph input, an initializer or a node output. */
    boolean exists(String tensor) {
        return constants.contains(tensor) || graphInputs.contains(tensor) || producer.containsKey(tensor);
    }

    Set<String> graphInputs() {
        return graphInputs;
    }

    Set<String> graphOutputs() {
        return graphOutputs;
    }

    /**
     * Where a weight tensor is used, after the pass-through nodes an exporter puts between it and its consumer: a
     * single-consumer chain of {@code Cast}, {@code Identity} and {@code Transpose} (a Scion f16 model stores {@code
     * <name>_f16} behind a Cast). Returns the tensor name at the end of the chain.
     */
    String throughPassThrough(String tensor) {
        String cur = tensor;
        for (int hop = 0; hop < 4; hop++) {
            List<Use> us = uses(cur);
            if (us.size() != 1 || us.get(0).node().getOutputCount() != 1) {
                break;
            }
            String op = us.get(0).node().getOpType();
            if (!op.equals("Cast") && !op.equals("Identity") && !op.equals("Transpose")) {
                break;
            }
            cur = us.get(0).node().getOutput(0);
        }
        return cur;
    }

    /** Every tensor computed from {@code start} (excluding {@code start} itself), in breadth-first order. */
    Set<String> descendants(String start) {
        Set<String> seen = new LinkedHashSet<>();
        ArrayDeque<String> queue = new ArrayDeque<>();
        queue.add(start);
        while (!queue.isEmpty()) {
            String t = queue.poll();
            for (Use u : uses(t)) {
                for (String o : u.node().getOutputList()) {
                    if (!o.isEmpty() && seen.add(o)) {
                        queue.add(o);
                    }
                }
            }
        }
        return seen;
    }

    /**
     * The non-constant ancestors of {@code start} ({@code start} first), in breadth-first order: the tensors it is
     * computed from, nearest first.
     */
    List<String> ancestors(String start) {
        List<String> out = new ArrayList<>();
        Set<String> seen = new HashSet<>();
        ArrayDeque<String> queue = new ArrayDeque<>();
        queue.add(start);
        seen.add(start);
        while (!queue.isEmpty()) {
            String t = queue.poll();
            out.add(t);
            NodeProto p = producer.get(t);
            if (p == null) {
                continue;
            }
            for (String in : p.getInputList()) {
                if (!in.isEmpty() && !constants.contains(in) && seen.add(in)) {
                    queue.add(in);
                }
            }
        }
        return out;
    }

    static long intAttribute(NodeProto n, String name, long dflt) {
        for (AttributeProto a : n.getAttributeList()) {
            if (a.getName().equals(name)) {
                return a.getI();
            }
        }
        return dflt;
    }

    static String label(NodeProto n) {
        return n.getName().isEmpty() ? n.getOpType() + " (unnamed)" : n.getOpType() + " '" + n.getName() + "'";
    }
}
