package scion.io.runtime.calibration;

import ai.onnx.proto.OnnxMl.GraphProto;
import ai.onnx.proto.OnnxMl.ModelProto;
import ai.onnx.proto.OnnxMl.NodeProto;
import ai.onnx.proto.OnnxMl.OperatorSetIdProto;
import ai.onnx.proto.OnnxMl.TensorProto;
import ai.onnx.proto.OnnxMl.TensorShapeProto;
import ai.onnx.proto.OnnxMl.TypeProto;
import ai.onnx.proto.OnnxMl.ValueInfoProto;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.DoubleBuffer;
import java.nio.FloatBuffer;
import java.util.HashMap;
import java.util.Map;

/**
 * XᵀX in float64 through ONNX Runtime: a three-node graph {@code Cast(x, double) → Transpose → MatMul}, one session
 * per width, its output written into a reused direct buffer. ONNX Runtime's double GEMM runs about 4× faster than
 * the tiled Java kernel ({@link CalibrationOps#addGramUpper}) on the same cores (measured: 26 vs 6 GFLOP/s
 * equivalent on 2 cores for 1024 × 1536). Every product and sum is float64, as in the Java kernel.
 */
final class OrtGram implements AutoCloseable {
    private final OrtEnvironment env = OrtEnvironment.getEnvironment();
    private final OrtSession.SessionOptions options;
    private final Map<Integer, OrtSession> sessions = new HashMap<>();
    private final Map<Integer, OnnxTensor> outputs = new HashMap<>();
    private final Map<Integer, DoubleBuffer> outputBuffers = new HashMap<>();

    OrtGram(int threads) {
        try {
            options = new OrtSession.SessionOptions();
            options.setIntraOpNumThreads(threads);
            options.setInterOpNumThreads(1);
            // ONNX Runtime 1.23's extended optimisations fuse Transpose+MatMul into a FusedMatMul that has no
            // double kernel on the CPU; the graph needs no optimisation anyway.
            options.setOptimizationLevel(OrtSession.SessionOptions.OptLevel.NO_OPT);
            // One large MatMul per call: idle threads need not spin (they would steal the cores of the model's run).
            options.addConfigEntry("session.intra_op.allow_spinning", "0");
        } catch (OrtException e) {
            throw new IllegalStateException("ONNX Runtime: cannot create session options: " + e.getMessage(), e);
        }
    }

    /** {@code g += XᵀX} (full matrix, row-major {@code width × width}) for the {@code rows × width} matrix {@code x}. */
    void add(float[] x, int rows, int width, double[] g) {
        if (rows == 0) {
            return;
        }
        try {
            OrtSession s = sessions.get(width);
            if (s == null) {
                s = env.createSession(graph(width).toByteArray(), options);
                sessions.put(width, s);
                ByteBuffer b = ByteBuffer.allocateDirect(Math.multiplyExact(Math.multiplyExact(width, width), 8))
                        .order(ByteOrder.nativeOrder());
                DoubleBuffer db = b.asDoubleBuffer();
                outputBuffers.put(width, db);
                outputs.put(width, OnnxTensor.createTensor(env, db, new long[] {width, width}));
            }
            try (OnnxTensor in =
                    OnnxTensor.createTensor(env, FloatBuffer.wrap(x, 0, rows * width), new long[] {rows, width})) {
                s.run(Map.of("x", in), Map.of("g", outputs.get(width))).close();
            }
            DoubleBuffer out = outputBuffers.get(width);
            for (int k = 0, n = width * width; k < n; k++) {
                g[k] += out.get(k);
            }
        } catch (OrtException e) {
            throw new IllegalStateException(
                    "ONNX Runtime: XᵀX of a " + rows + " × " + width + " input failed: " + e.getMessage(), e);
        }
    }

    private static ModelProto graph(int width) {
        TypeProto in = tensorType(TensorProto.DataType.FLOAT_VALUE, null, width);
        TypeProto out = tensorType(TensorProto.DataType.DOUBLE_VALUE, (long) width, width);
        GraphProto g = GraphProto.newBuilder()
                .setName("gram")
                .addInput(ValueInfoProto.newBuilder().setName("x").setType(in))
                .addOutput(ValueInfoProto.newBuilder().setName("g").setType(out))
                .addNode(NodeProto.newBuilder()
                        .setOpType("Cast")
                        .addInput("x")
                        .addOutput("xd")
                        .addAttribute(ai.onnx.proto.OnnxMl.AttributeProto.newBuilder()
                                .setName("to")
                                .setType(ai.onnx.proto.OnnxMl.AttributeProto.AttributeType.INT)
                                .setI(TensorProto.DataType.DOUBLE_VALUE)))
                .addNode(NodeProto.newBuilder()
                        .setOpType("Transpose")
                        .addInput("xd")
                        .addOutput("xt"))
                .addNode(NodeProto.newBuilder()
                        .setOpType("MatMul")
                        .addInput("xt")
                        .addInput("xd")
                        .addOutput("g"))
                .build();
        return ModelProto.newBuilder()
                .setIrVersion(8)
                .setProducerName("scion")
                .addOpsetImport(OperatorSetIdProto.newBuilder().setVersion(17))
                .setGraph(g)
                .build();
    }

    /** A tensor type of rank 2: {@code [first or symbolic 'n', second]}. */
    private static TypeProto tensorType(int elemType, Long first, long second) {
        TensorShapeProto.Dimension d0 = first == null
                ? TensorShapeProto.Dimension.newBuilder().setDimParam("n").build()
                : TensorShapeProto.Dimension.newBuilder().setDimValue(first).build();
        TensorShapeProto shape = TensorShapeProto.newBuilder()
                .addDim(d0)
                .addDim(TensorShapeProto.Dimension.newBuilder().setDimValue(second))
                .build();
        return TypeProto.newBuilder()
                .setTensorType(
                        TypeProto.Tensor.newBuilder().setElemType(elemType).setShape(shape))
                .build();
    }

    @Override
    public void close() {
        for (OnnxTensor t : outputs.values()) {
            t.close();
        }
        try {
            for (OrtSession s : sessions.values()) {
                s.close();
            }
        } catch (OrtException e) {
            throw new IllegalStateException("ONNX Runtime: cannot close a session: " + e.getMessage(), e);
        } finally {
            options.close();
        }
    }
}
