package scion.io.runtime.export;

import ai.onnx.proto.OnnxMl.AttributeProto;
import ai.onnx.proto.OnnxMl.GraphProto;
import ai.onnx.proto.OnnxMl.NodeProto;
import ai.onnx.proto.OnnxMl.TensorProto;
import ai.onnx.proto.OnnxMl.TensorShapeProto;
import ai.onnx.proto.OnnxMl.TypeProto;
import ai.onnx.proto.OnnxMl.ValueInfoProto;
import com.google.protobuf.ByteString;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * A small builder of an ONNX {@link GraphProto}: nodes with unique names, constants as {@code Constant} nodes (so that
 * every graph initializer is a model weight), inputs and outputs with symbolic dimensions.
 *
 * <p>Node names carry a scope ({@code /layers.0/attn/q_proj/Gemm}), as PyTorch exports do; a node's output is named
 * after the node ({@code /layers.0/attn/q_proj/Gemm_output_0}).
 */
final class GraphBuilder {
    /** ONNX {@code TensorProto.DataType} codes used here. */
    static final int FLOAT = 1;

    static final int INT64 = 7;
    static final int BOOL = 9;

    private final GraphProto.Builder graph = GraphProto.newBuilder();
    private final Map<String, Integer> used = new HashMap<>();
    private final Map<String, String> constants = new HashMap<>();

    GraphBuilder(String name) {
        graph.setName(name);
    }

    private String unique(String base) {
        int n = used.merge(base, 1, Integer::sum);
        return n == 1 ? base : base + "_" + (n - 1);
    }

    /** Adds a node with one output; returns the output's name. */
    String op(String scope, String opType, List<String> inputs, AttributeProto... attributes) {
        return ops(scope, opType, 1, inputs, attributes)[0];
    }

    /** Adds a node whose single output is named {@code output} (a graph output); returns {@code output}. */
    String opTo(String output, String scope, String opType, List<String> inputs, AttributeProto... attributes) {
        NodeProto.Builder n = NodeProto.newBuilder()
                .setName(unique(scope + "/" + opType))
                .setOpType(opType)
                .addAllInput(inputs)
                .addOutput(output);
        for (AttributeProto a : attributes) {
            n.addAttribute(a);
        }
        graph.addNode(n);
        return output;
    }

    /** Adds a node with {@code outputs} outputs; returns their names. */
    String[] ops(String scope, String opType, int outputs, List<String> inputs, AttributeProto... attributes) {
        String name = unique(scope + "/" + opType);
        NodeProto.Builder n =
                NodeProto.newBuilder().setName(name).setOpType(opType).addAllInput(inputs);
        String[] out = new String[outputs];
        for (int i = 0; i < outputs; i++) {
            out[i] = name + "_output_" + i;
            n.addOutput(out[i]);
        }
        for (AttributeProto a : attributes) {
            n.addAttribute(a);
        }
        graph.addNode(n);
        return out;
    }

    /** An int64 constant of shape {@code [values.length]} (or a scalar when {@code scalar}); shared by value. */
    String ints(boolean scalar, long... values) {
        StringBuilder key = new StringBuilder(scalar ? "i0:" : "i1:");
        for (long v : values) {
            key.append(v).append(',');
        }
        return constants.computeIfAbsent(key.toString(), k -> {
            ByteBuffer b = ByteBuffer.allocate(values.length * 8).order(ByteOrder.LITTLE_ENDIAN);
            for (long v : values) {
                b.putLong(v);
            }
            b.flip();
            TensorProto.Builder t = TensorProto.newBuilder().setDataType(INT64).setRawData(ByteString.copyFrom(b));
            if (!scalar) {
                t.addDims(values.length);
            }
            return constant("/constants", t);
        });
    }

    /** A float32 scalar constant; shared by bit pattern. */
    String scalar(float value) {
        return constants.computeIfAbsent("f0:" + Float.floatToRawIntBits(value), k -> {
            ByteBuffer b = ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN);
            b.putFloat(value).flip();
            return constant(
                    "/constants", TensorProto.newBuilder().setDataType(FLOAT).setRawData(ByteString.copyFrom(b)));
        });
    }

    /** A float32 constant vector (e.g. RoPE inverse frequencies). */
    String floats(String scope, float[] values) {
        ByteBuffer b = ByteBuffer.allocate(values.length * 4).order(ByteOrder.LITTLE_ENDIAN);
        for (float v : values) {
            b.putFloat(v);
        }
        b.flip();
        return constant(
                scope,
                TensorProto.newBuilder()
                        .setDataType(FLOAT)
                        .addDims(values.length)
                        .setRawData(ByteString.copyFrom(b)));
    }

    private String constant(String scope, TensorProto.Builder value) {
        String name = unique(scope + "/Constant");
        String out = name + "_output_0";
        graph.addNode(NodeProto.newBuilder()
                .setName(name)
                .setOpType("Constant")
                .addOutput(out)
                .addAttribute(AttributeProto.newBuilder()
                        .setName("value")
                        .setType(AttributeProto.AttributeType.TENSOR)
                        .setT(value)));
        return out;
    }

    void initializer(TensorProto stub) {
        graph.addInitializer(stub);
    }

    /** A graph input; a dimension is a {@code Long} (fixed) or a {@code String} (symbolic). */
    void input(String name, int elemType, Object... dims) {
        graph.addInput(valueInfo(name, elemType, dims));
    }

    void output(String name, int elemType, Object... dims) {
        graph.addOutput(valueInfo(name, elemType, dims));
    }

    private static ValueInfoProto valueInfo(String name, int elemType, Object... dims) {
        TensorShapeProto.Builder shape = TensorShapeProto.newBuilder();
        for (Object d : dims) {
            TensorShapeProto.Dimension.Builder dim = TensorShapeProto.Dimension.newBuilder();
            if (d instanceof String) {
                dim.setDimParam((String) d);
            } else {
                dim.setDimValue(((Number) d).longValue());
            }
            shape.addDim(dim);
        }
        return ValueInfoProto.newBuilder()
                .setName(name)
                .setType(TypeProto.newBuilder()
                        .setTensorType(TypeProto.Tensor.newBuilder()
                                .setElemType(elemType)
                                .setShape(shape)))
                .build();
    }

    GraphProto build() {
        return graph.build();
    }

    static AttributeProto attr(String name, long value) {
        return AttributeProto.newBuilder()
                .setName(name)
                .setType(AttributeProto.AttributeType.INT)
                .setI(value)
                .build();
    }

    static AttributeProto attr(String name, float value) {
        return AttributeProto.newBuilder()
                .setName(name)
                .setType(AttributeProto.AttributeType.FLOAT)
                .setF(value)
                .build();
    }

    static AttributeProto attrs(String name, long... values) {
        AttributeProto.Builder a = AttributeProto.newBuilder().setName(name).setType(AttributeProto.AttributeType.INTS);
        for (long v : values) {
            a.addInts(v);
        }
        return a.build();
    }
}
