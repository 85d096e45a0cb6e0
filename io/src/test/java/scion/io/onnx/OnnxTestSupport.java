package scion.io.onnx;

import ai.onnx.proto.OnnxMl.GraphProto;
import ai.onnx.proto.OnnxMl.ModelProto;
import ai.onnx.proto.OnnxMl.NodeProto;
import ai.onnx.proto.OnnxMl.OperatorSetIdProto;
import ai.onnx.proto.OnnxMl.StringStringEntryProto;
import ai.onnx.proto.OnnxMl.TensorProto;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import com.google.protobuf.ByteString;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.LongBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.HashMap;
import java.util.Map;

/** Fixtures for the ONNX tests: the real MiniLM model, hand-built models, and ONNX Runtime runs. */
final class OnnxTestSupport {
    /** The all-MiniLM-L6-v2 export shipped in langchain4j's jar (BERT, 6 layers, 384 wide, opset 11). */
    static final String MINILM_RESOURCE = "/all-minilm-l6-v2.onnx";

    private OnnxTestSupport() {}

    /** Copies MiniLM into {@code dir} as {@code name}. */
    static Path miniLm(Path dir, String name) {
        Path p = dir.resolve(name);
        try (InputStream in = OnnxTestSupport.class.getResourceAsStream(MINILM_RESOURCE)) {
            if (in == null) {
                throw new IllegalStateException(MINILM_RESOURCE + " is not on the test classpath");
            }
            Files.copy(in, p, StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return p;
    }

    /** A float32 tensor proto with {@code raw_data}. */
    static TensorProto floatRaw(String name, long[] dims, float... values) {
        ByteBuffer b = ByteBuffer.allocate(values.length * 4).order(ByteOrder.LITTLE_ENDIAN);
        for (float v : values) {
            b.putFloat(v);
        }
        b.flip();
        TensorProto.Builder t =
                TensorProto.newBuilder().setName(name).setDataType(1).setRawData(ByteString.copyFrom(b));
        for (long d : dims) {
            t.addDims(d);
        }
        return t.build();
    }

    /** A float32 tensor proto stored externally at {@code location}. */
    static TensorProto floatExternal(String name, long[] dims, String location, long offset, Long length) {
        TensorProto.Builder t = TensorProto.newBuilder()
                .setName(name)
                .setDataType(1)
                .setDataLocation(TensorProto.DataLocation.EXTERNAL)
                .addExternalData(entry("location", location))
                .addExternalData(entry("offset", Long.toString(offset)));
        if (length != null) {
            t.addExternalData(entry("length", Long.toString(length)));
        }
        for (long d : dims) {
            t.addDims(d);
        }
        return t.build();
    }

    static StringStringEntryProto entry(String k, String v) {
        return StringStringEntryProto.newBuilder().setKey(k).setValue(v).build();
    }

    /** A minimal model (IR 8, opset 17) holding {@code initializers} and {@code nodes}. */
    static ModelProto model(Iterable<TensorProto> initializers, Iterable<NodeProto> nodes) {
        GraphProto.Builder g = GraphProto.newBuilder().setName("g");
        initializers.forEach(g::addInitializer);
        nodes.forEach(g::addNode);
        return ModelProto.newBuilder()
                .setIrVersion(8)
                .setProducerName("scion-test")
                .addOpsetImport(OperatorSetIdProto.newBuilder().setDomain("").setVersion(17))
                .setGraph(g)
                .build();
    }

    static Path save(ModelProto m, Path file) {
        try (OutputStream out = Files.newOutputStream(file)) {
            m.writeTo(out);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return file;
    }

    static Path writeFloats(Path file, int count) {
        ByteBuffer b = ByteBuffer.allocate(count * 4).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < count; i++) {
            b.putFloat(i);
        }
        try {
            Files.write(file, b.array());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return file;
    }

    /** The 8 token ids fed to MiniLM ("[CLS] hello world is a test . [SEP]"). */
    static final long[] TOKENS = {101, 7592, 2088, 2003, 1037, 3231, 1012, 102};

    /** Runs a MiniLM-shaped model on {@link #TOKENS} and returns {@code last_hidden_state} [1, 8, 384], flattened. */
    static float[] runMiniLm(Path model) {
        OrtEnvironment env = OrtEnvironment.getEnvironment();
        try (OrtSession.SessionOptions so = new OrtSession.SessionOptions()) {
            so.setIntraOpNumThreads(1);
            try (OrtSession s = env.createSession(model.toString(), so)) {
                long[] shape = {1, TOKENS.length};
                long[] ones = new long[TOKENS.length];
                java.util.Arrays.fill(ones, 1);
                Map<String, OnnxTensor> in = new HashMap<>();
                try {
                    in.put("input_ids", OnnxTensor.createTensor(env, LongBuffer.wrap(TOKENS), shape));
                    in.put("attention_mask", OnnxTensor.createTensor(env, LongBuffer.wrap(ones), shape));
                    in.put(
                            "token_type_ids",
                            OnnxTensor.createTensor(env, LongBuffer.wrap(new long[TOKENS.length]), shape));
                    try (OrtSession.Result r = s.run(in)) {
                        OnnxTensor out = (OnnxTensor) r.get("last_hidden_state").orElseThrow();
                        FloatBuffer fb = out.getFloatBuffer();
                        float[] f = new float[fb.remaining()];
                        fb.get(f);
                        return f;
                    }
                } finally {
                    in.values().forEach(OnnxTensor::close);
                }
            }
        } catch (OrtException e) {
            throw new IllegalStateException("ONNX Runtime failed on " + model + ": " + e.getMessage(), e);
        }
    }

    static double cosine(float[] a, float[] b) {
        double dot = 0;
        double na = 0;
        double nb = 0;
        for (int i = 0; i < a.length; i++) {
            dot += (double) a[i] * b[i];
            na += (double) a[i] * a[i];
            nb += (double) b[i] * b[i];
        }
        return dot / Math.sqrt(na * nb);
    }

    /** Stored bytes of a tensor (small tensors only). */
    static byte[] bytes(scion.io.tensor.Tensor t) {
        ByteBuffer b = ByteBuffer.allocate(Math.toIntExact(t.byteSize()));
        t.readBytes(0, b);
        return b.array();
    }
}
