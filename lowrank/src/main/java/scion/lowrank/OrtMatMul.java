package scion.lowrank;

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
import java.nio.DoubleBuffer;
import java.nio.FloatBuffer;
import java.util.Map;
import org.ejml.data.DMatrixRMaj;

/**
 * Large matrix products through ONNX Runtime's float32 MatMul (MLAS, vectorised and multi-threaded): one session
 * with symbolic shapes, operands rounded to float32 and the result widened back to float64. Used for the sketch and
 * power-iteration products of the randomized SVD, whose accuracy bound (a few per cent of the tail) is far above
 * float32 rounding; the exact SVD, Cholesky and triangular solves stay in float64.
 */
public final class OrtMatMul implements LowRankOps.Products, AutoCloseable {
    private final OrtEnvironment env = OrtEnvironment.getEnvironment();
    private final OrtSession.SessionOptions options;
    private final OrtSession session;
    private final OrtSession session64;
    // The last two large operands converted to float32, by identity (W and Wᵀ recur in every power iteration).
    private final java.util.Map<DMatrixRMaj, FloatBuffer> converted = new java.util.IdentityHashMap<>();
    private final java.util.ArrayDeque<DMatrixRMaj> order = new java.util.ArrayDeque<>();

    /** A session with {@code threads} intra-op threads. */
    public OrtMatMul(int threads) {
        try {
            options = new OrtSession.SessionOptions();
            options.setIntraOpNumThreads(threads);
            options.setInterOpNumThreads(1);
            options.addConfigEntry("session.intra_op.allow_spinning", "0");
            session = env.createSession(graph(TensorProto.DataType.FLOAT_VALUE).toByteArray(), options);
            session64 =
                    env.createSession(graph(TensorProto.DataType.DOUBLE_VALUE).toByteArray(), options);
        } catch (OrtException e) {
            throw new IllegalStateException("ONNX Runtime: cannot create the MatMul session: " + e.getMessage(), e);
        }
    }

    @Override
    public DMatrixRMaj multiply(DMatrixRMaj a, DMatrixRMaj b) {
        if (a.numCols != b.numRows) {
            throw new IllegalArgumentException("inner dimensions differ: [" + a.numRows + ", " + a.numCols + "] · ["
                    + b.numRows + ", " + b.numCols + "]");
        }
        try (OnnxTensor ta = OnnxTensor.createTensor(env, cached(a), new long[] {a.numRows, a.numCols});
                OnnxTensor tb = OnnxTensor.createTensor(env, cached(b), new long[] {b.numRows, b.numCols});
                OrtSession.Result r = session.run(Map.of("a", ta, "b", tb))) {
            FloatBuffer out = ((OnnxTensor) r.get(0)).getFloatBuffer();
            DMatrixRMaj c = new DMatrixRMaj(a.numRows, b.numCols);
            for (int i = 0; i < c.data.length; i++) {
                c.data[i] = out.get(i);
            }
            return c;
        } catch (OrtException e) {
            throw new IllegalStateException(
                    "ONNX Runtime: MatMul of [" + a.numRows + ", " + a.numCols + "] · [" + b.numRows + ", " + b.numCols
                            + "] failed: " + e.getMessage(),
                    e);
        }
    }

    /** The same product in float64 (ONNX Runtime's double MatMul). */
    @Override
    public LowRankOps.Products exact() {
        return this::multiply64;
    }

    private DMatrixRMaj multiply64(DMatrixRMaj a, DMatrixRMaj b) {
        if (a.numCols != b.numRows) {
            throw new IllegalArgumentException("inner dimensions differ: [" + a.numRows + ", " + a.numCols + "] · ["
                    + b.numRows + ", " + b.numCols + "]");
        }
        try (OnnxTensor ta = OnnxTensor.createTensor(
                        env, DoubleBuffer.wrap(a.data, 0, a.getNumElements()), new long[] {a.numRows, a.numCols});
                OnnxTensor tb = OnnxTensor.createTensor(
                        env, DoubleBuffer.wrap(b.data, 0, b.getNumElements()), new long[] {b.numRows, b.numCols});
                OrtSession.Result r = session64.run(Map.of("a", ta, "b", tb))) {
            DoubleBuffer out = ((OnnxTensor) r.get(0)).getDoubleBuffer();
            DMatrixRMaj c = new DMatrixRMaj(a.numRows, b.numCols);
            out.get(c.data, 0, c.getNumElements());
            return c;
        } catch (OrtException e) {
            throw new IllegalStateException(
                    "ONNX Runtime: MatMul of [" + a.numRows + ", " + a.numCols + "] · [" + b.numRows + ", " + b.numCols
                            + "] failed: " + e.getMessage(),
                    e);
        }
    }

    private FloatBuffer cached(DMatrixRMaj m) {
        if (m.getNumElements() < 1 << 20) {
            return floats(m);
        }
        FloatBuffer f = converted.get(m);
        if (f == null) {
            f = floats(m);
            converted.put(m, f);
            order.addLast(m);
            if (order.size() > 2) {
                converted.remove(order.removeFirst());
            }
        }
        return f;
    }

    private static FloatBuffer floats(DMatrixRMaj m) {
        int n = m.getNumElements();
        FloatBuffer f = FloatBuffer.allocate(n);
        for (int i = 0; i < n; i++) {
            f.put(i, (float) m.data[i]);
        }
        return f;
    }

    private static ModelProto graph(int elemType) {
        GraphProto g = GraphProto.newBuilder()
                .setName("matmul")
                .addInput(ValueInfoProto.newBuilder().setName("a").setType(type(elemType, "m", "k")))
                .addInput(ValueInfoProto.newBuilder().setName("b").setType(type(elemType, "k", "n")))
                .addOutput(ValueInfoProto.newBuilder().setName("c").setType(type(elemType, "m", "n")))
                .addNode(NodeProto.newBuilder()
                        .setOpType("MatMul")
                        .addInput("a")
                        .addInput("b")
                        .addOutput("c"))
                .build();
        return ModelProto.newBuilder()
                .setIrVersion(8)
                .setProducerName("scion")
                .addOpsetImport(OperatorSetIdProto.newBuilder().setVersion(17))
                .setGraph(g)
                .build();
    }

    private static TypeProto type(int elemType, String d0, String d1) {
        TensorShapeProto shape = TensorShapeProto.newBuilder()
                .addDim(TensorShapeProto.Dimension.newBuilder().setDimParam(d0))
                .addDim(TensorShapeProto.Dimension.newBuilder().setDimParam(d1))
                .build();
        return TypeProto.newBuilder()
                .setTensorType(
                        TypeProto.Tensor.newBuilder().setElemType(elemType).setShape(shape))
                .build();
    }

    @Override
    public void close() {
        try {
            session.close();
            session64.close();
        } catch (OrtException e) {
            throw new IllegalStateException("ONNX Runtime: cannot close the MatMul session: " + e.getMessage(), e);
        } finally {
            options.close();
        }
    }
}
