package scion.io.runtime;

import ai.onnxruntime.NodeInfo;
import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxValue;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import ai.onnxruntime.TensorInfo;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.DoubleBuffer;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.nio.LongBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.config.ModelConfig;
import scion.io.runtime.export.OnnxExporter;

/**
 * A model ready to run in ONNX Runtime: its session on a {@link Device}, what kind of model it is, and how to feed it
 * token ids.
 *
 * <p>Graph inputs are fed by name: {@code input_ids} (required), {@code attention_mask} (ones), {@code token_type_ids}
 * (zeros) and {@code position_ids} ({@code 0..seq-1}), as int64 or int32 as the graph declares. A graph with any other
 * input (for example a KV cache) is refused. Every floating-point output (f32, f16, bf16, f64) is returned as float32.
 *
 * <p>An ONNX file runs as it is; a safetensors checkpoint of a known family is exported on the fly ({@link
 * OnnxExporter}), in memory.
 */
public final class RuntimeModel implements AutoCloseable {

    /** What a model computes, which decides the metrics. */
    public enum Kind {
        /** Next-token logits {@code [batch, seq, vocab]}: perplexity, top-1 agreement. */
        CAUSAL_LM,
        /** Hidden states {@code [batch, seq, hidden]}: mean-pooled embeddings. */
        ENCODER;

        public String id() {
            return name().toLowerCase(Locale.ROOT);
        }
    }

    /**
     * What is known about the model before running it.
     *
     * @param location the file or folder the user named
     * @param format {@code onnx} or {@code safetensors}
     * @param family the architecture family ({@code bert}, {@code llama}, …)
     * @param kind causal LM or encoder
     * @param vocab vocabulary size (rows of the token embedding)
     * @param maxPositions longest sequence the model was built for, or 0 when unknown (RoPE models read from ONNX)
     * @param sizeBytes bytes on disk: the .onnx file and its external data, or the safetensors shards
     */
    public record Info(
            Path location, String format, String family, Kind kind, int vocab, int maxPositions, long sizeBytes) {}

    /**
     * One output of a run, as float32.
     *
     * @param name the graph output name
     * @param shape its shape, e.g. {@code [batch, seq, hidden]}
     * @param data row-major values
     */
    public record Output(String name, long[] shape, float[] data) {
        /** The size of the last axis. */
        public int last() {
            return Math.toIntExact(shape[shape.length - 1]);
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof Output x
                    && x.name.equals(name)
                    && java.util.Arrays.equals(x.shape, shape)
                    && java.util.Arrays.equals(x.data, data);
        }

        @Override
        public int hashCode() {
            return name.hashCode() * 31 + java.util.Arrays.hashCode(shape);
        }

        @Override
        public String toString() {
            return name + java.util.Arrays.toString(shape);
        }
    }

    private enum Feed {
        IDS,
        MASK,
        TYPES,
        POSITIONS
    }

    private record Input(String name, Feed feed, boolean int32) {}

    private final Info info;
    private final SessionFactory.Opened opened;
    private final List<Input> inputs;
    private final List<String> outputs;
    private long lastRunNanos;

    private RuntimeModel(Info info, SessionFactory.Opened opened, List<Input> inputs, List<String> outputs) {
        this.info = info;
        this.opened = opened;
        this.inputs = inputs;
        this.outputs = outputs;
    }

    /**
     * Opens a model on {@code device}: an ONNX file as it is, a safetensors checkpoint exported to a runnable graph in
     * memory ({@link OnnxExporter#export}, weights handed to ONNX Runtime from the mapped files, nothing written).
     */
    public static RuntimeModel open(Path location, Device device) {
        return open(location, device, false);
    }

    /**
     * {@link #open(Path, Device)}; with {@code residualStream}, a safetensors model is exported with the residual
     * stream entering every layer (and after the last) as extra outputs {@code hidden_states.0 … hidden_states.L}
     * (ONNX files run with the outputs they have).
     */
    public static RuntimeModel open(Path location, Device device, boolean residualStream) {
        Info info;
        SessionFactory.Opened opened;
        String where;
        try (Model m = Model.open(location)) {
            info = info(m);
            where = m.location().getFileName().toString();
            if (m.format() == Model.Format.ONNX) {
                opened = SessionFactory.open(m.location(), device);
            } else {
                OnnxExporter.Exported ex = OnnxExporter.export(
                        m, OnnxExporter.Options.defaults().withResidualStreamOutputs(residualStream));
                OrtEnvironment env = OrtEnvironment.getEnvironment();
                opened = SessionFactory.open(device, where, opts -> OnnxExporter.openSession(env, ex, opts));
            }
        }
        try {
            return new RuntimeModel(info, opened, inputs(opened.session(), where), outputNames(opened.session()));
        } catch (RuntimeException e) {
            opened.close();
            throw e;
        }
    }

    private static Info info(Model m) {
        var g = m.graph();
        var arch = g.architecture();
        int positions = g.dims().positions() > 0
                ? g.dims().positions() - arch.positionOffset()
                : m.config().integer(ModelConfig.Field.MAX_POSITIONS).orElse(0);
        long size = 0;
        for (Path p : m.checkpoint().dataFiles()) {
            try {
                size += Files.size(p);
            } catch (IOException e) {
                throw new UncheckedIOException(p + ": cannot read the file size", e);
            }
        }
        return new Info(
                m.location(),
                m.format().name().toLowerCase(Locale.ROOT),
                arch.family(),
                arch.isCausalLm() ? Kind.CAUSAL_LM : Kind.ENCODER,
                g.dims().vocab(),
                positions,
                size);
    }

    private static List<Input> inputs(OrtSession s, String where) {
        List<Input> out = new ArrayList<>();
        boolean ids = false;
        try {
            for (Map.Entry<String, NodeInfo> e : s.getInputInfo().entrySet()) {
                String name = e.getKey();
                Feed feed;
                switch (name) {
                    case "input_ids":
                        feed = Feed.IDS;
                        ids = true;
                        break;
                    case "attention_mask":
                        feed = Feed.MASK;
                        break;
                    case "token_type_ids":
                        feed = Feed.TYPES;
                        break;
                    case "position_ids":
                        feed = Feed.POSITIONS;
                        break;
                    default:
                        throw InvalidInputException.of(
                                where,
                                "graph input '" + name + "' is not one scion can feed",
                                "input_ids, attention_mask, token_type_ids, position_ids",
                                "'" + name + "'" + (name.startsWith("past") ? " (export without a KV cache)" : ""));
                }
                boolean int32;
                if (!(e.getValue().getInfo() instanceof TensorInfo)) {
                    throw InvalidInputException.of(
                            where,
                            "graph input '" + name + "' is not a tensor",
                            "an int64 or int32 tensor",
                            e.getValue().getInfo());
                }
                TensorInfo t = (TensorInfo) e.getValue().getInfo();
                if (t.type == OnnxJavaType.INT64) {
                    int32 = false;
                } else if (t.type == OnnxJavaType.INT32) {
                    int32 = true;
                } else {
                    throw InvalidInputException.of(
                            where,
                            "graph input '" + name + "' has an unsupported element type",
                            "int64 or int32",
                            t.type);
                }
                out.add(new Input(name, feed, int32));
            }
            if (!ids) {
                throw InvalidInputException.of(
                        where,
                        "the graph has no 'input_ids' input",
                        "a transformer taking token ids",
                        s.getInputNames());
            }
            return out;
        } catch (OrtException e) {
            throw new IllegalStateException(where + ": cannot read the session's inputs", e);
        }
    }

    private static List<String> outputNames(OrtSession s) {
        return List.copyOf(s.getOutputNames());
    }

    public Info info() {
        return info;
    }

    /** The device the session runs on ({@link Device#CPU} or {@link Device#CUDA}). */
    public Device device() {
        return opened.device();
    }

    /** How the device was chosen (empty when exactly as requested). */
    public String deviceNote() {
        return opened.note();
    }

    /** The graph output names, in graph order. */
    public List<String> outputNames() {
        return outputs;
    }

    /** Wall time of the last {@link #run}, in nanoseconds (the session call only, not the conversions). */
    public long lastRunNanos() {
        return lastRunNanos;
    }

    /**
     * Runs a batch of sequences of equal length and returns every floating-point output, in graph order.
     *
     * @param ids {@code [batch][seq]} token ids
     */
    public Map<String, Output> run(long[][] ids) {
        int batch = ids.length;
        int seq = ids[0].length;
        for (long[] row : ids) {
            if (row.length != seq) {
                throw new IllegalArgumentException("rows of a batch must have the same length");
            }
            for (long id : row) {
                if (id < 0 || id >= info.vocab()) {
                    throw InvalidInputException.of(
                            info.location().toString(),
                            "token id outside the vocabulary",
                            "ids in [0, " + info.vocab() + ")",
                            Long.toString(id));
                }
            }
        }
        OrtEnvironment env = OrtEnvironment.getEnvironment();
        long[] shape = {batch, seq};
        Map<String, OnnxTensor> feeds = new LinkedHashMap<>();
        try {
            for (Input in : inputs) {
                long[] flat = new long[batch * seq];
                for (int b = 0; b < batch; b++) {
                    for (int s = 0; s < seq; s++) {
                        flat[b * seq + s] = value(in.feed(), ids[b][s], s);
                    }
                }
                feeds.put(in.name(), tensor(env, flat, shape, in.int32()));
            }
            long t0 = System.nanoTime();
            try (OrtSession.Result r = opened.session().run(feeds)) {
                lastRunNanos = System.nanoTime() - t0;
                Map<String, Output> out = new LinkedHashMap<>();
                for (Map.Entry<String, OnnxValue> e : r) {
                    if (!(e.getValue() instanceof OnnxTensor)) {
                        continue;
                    }
                    OnnxTensor t = (OnnxTensor) e.getValue();
                    float[] data = floats(t);
                    if (data != null) {
                        out.put(e.getKey(), new Output(e.getKey(), t.getInfo().getShape(), data));
                    }
                }
                return Collections.unmodifiableMap(out);
            }
        } catch (OrtException e) {
            throw new IllegalStateException(
                    info.location().getFileName() + ": ONNX Runtime failed on a [" + batch + ", " + seq + "] batch: "
                            + e.getMessage(),
                    e);
        } finally {
            for (OnnxTensor t : feeds.values()) {
                t.close();
            }
        }
    }

    private static long value(Feed f, long id, int pos) {
        switch (f) {
            case IDS:
                return id;
            case MASK:
                return 1;
            case TYPES:
                return 0;
            case POSITIONS:
                return pos;
            default:
                throw new IllegalStateException(f.toString());
        }
    }

    private static OnnxTensor tensor(OrtEnvironment env, long[] flat, long[] shape, boolean int32) throws OrtException {
        if (!int32) {
            return OnnxTensor.createTensor(env, LongBuffer.wrap(flat), shape);
        }
        int[] v = new int[flat.length];
        for (int i = 0; i < v.length; i++) {
            v[i] = Math.toIntExact(flat[i]);
        }
        return OnnxTensor.createTensor(env, IntBuffer.wrap(v), shape);
    }

    /** The values as float32, or {@code null} for a non-floating-point output. */
    private static float[] floats(OnnxTensor t) {
        OnnxJavaType type = t.getInfo().type;
        if (type == OnnxJavaType.FLOAT || type == OnnxJavaType.FLOAT16 || type == OnnxJavaType.BFLOAT16) {
            FloatBuffer b = t.getFloatBuffer();
            float[] a = new float[b.remaining()];
            b.get(a);
            return a;
        }
        if (type == OnnxJavaType.DOUBLE) {
            DoubleBuffer b = t.getDoubleBuffer();
            float[] a = new float[b.remaining()];
            for (int i = 0; i < a.length; i++) {
                a[i] = (float) b.get(i);
            }
            return a;
        }
        return null;
    }

    @Override
    public void close() {
        opened.close();
    }
}
