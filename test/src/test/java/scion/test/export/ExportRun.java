package scion.test.export;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxValue;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.FloatBuffer;
import java.nio.LongBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import scion.io.runtime.export.OnnxExporter;
import scion.io.runtime.export.OnnxExporter.Exported;

/** Shared helpers of the export tests: fixture inputs and expected outputs, ONNX Runtime runs, error measures. */
public final class ExportRun {
    private static final ObjectMapper JSON = new ObjectMapper();

    private ExportRun() {}

    static JsonNode json(Path p) {
        try {
            return JSON.readTree(p.toFile());
        } catch (IOException e) {
            throw new IllegalStateException(p + ": " + e.getMessage(), e);
        }
    }

    /** A [rows][cols] int64 JSON array. */
    static long[][] longs2(JsonNode n) {
        long[][] out = new long[n.size()][];
        for (int i = 0; i < n.size(); i++) {
            out[i] = new long[n.get(i).size()];
            for (int j = 0; j < out[i].length; j++) {
                out[i][j] = n.get(i).get(j).asLong();
            }
        }
        return out;
    }

    /** Every number of a nested JSON array, flattened in row-major order. */
    static float[] flat(JsonNode n) {
        List<Float> acc = new ArrayList<>();
        collect(n, acc);
        float[] out = new float[acc.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = acc.get(i);
        }
        return out;
    }

    private static void collect(JsonNode n, List<Float> acc) {
        if (n.isArray()) {
            for (JsonNode c : n) {
                collect(c, acc);
            }
        } else {
            acc.add((float) n.asDouble());
        }
    }

    static long[][] filled(long[][] like, long value) {
        long[][] out = new long[like.length][];
        for (int i = 0; i < like.length; i++) {
            out[i] = new long[like[i].length];
            java.util.Arrays.fill(out[i], value);
        }
        return out;
    }

    /** The graph inputs for ids (and mask / token types; ones and zeros when null). */
    static Map<String, long[][]> inputs(Exported e, long[][] ids, long[][] mask, long[][] types) {
        Map<String, long[][]> in = new LinkedHashMap<>();
        in.put("input_ids", ids);
        in.put("attention_mask", mask != null ? mask : filled(ids, 1));
        if (e.inputNames().contains("token_type_ids")) {
            in.put("token_type_ids", types != null ? types : filled(ids, 0));
        }
        return in;
    }

    /** The fixture's inputs from expected.json. */
    static Map<String, long[][]> fixtureInputs(Exported e, JsonNode expected) {
        JsonNode in = expected.get("inputs");
        return inputs(
                e,
                longs2(in.get("input_ids")),
                in.has("attention_mask") ? longs2(in.get("attention_mask")) : null,
                in.has("token_type_ids") ? longs2(in.get("token_type_ids")) : null);
    }

    static OrtSession.SessionOptions options() throws OrtException {
        OrtSession.SessionOptions o = new OrtSession.SessionOptions();
        o.setIntraOpNumThreads(1);
        return o;
    }

    /** Opens the exported model without a written file and runs it; returns every output flattened. */
    static Map<String, float[]> runInMemory(Exported e, Map<String, long[][]> inputs) throws OrtException {
        return runInMemory(e, inputs, OnnxExporter.Handover.FILE_REFERENCES);
    }

    static Map<String, float[]> runInMemory(Exported e, Map<String, long[][]> inputs, OnnxExporter.Handover how)
            throws OrtException {
        OrtEnvironment env = OrtEnvironment.getEnvironment();
        try (OrtSession.SessionOptions o = options();
                OrtSession s = OnnxExporter.openSession(env, e, o, how)) {
            return run(env, s, inputs);
        }
    }

    static Map<String, float[]> run(OrtEnvironment env, OrtSession s, Map<String, long[][]> inputs)
            throws OrtException {
        Map<String, OnnxTensor> in = new LinkedHashMap<>();
        try {
            for (Map.Entry<String, long[][]> x : inputs.entrySet()) {
                long[][] v = x.getValue();
                LongBuffer b = LongBuffer.allocate(v.length * v[0].length);
                for (long[] row : v) {
                    b.put(row);
                }
                b.flip();
                in.put(x.getKey(), OnnxTensor.createTensor(env, b, new long[] {v.length, v[0].length}));
            }
            Map<String, float[]> out = new LinkedHashMap<>();
            try (OrtSession.Result r = s.run(in)) {
                for (Map.Entry<String, OnnxValue> o : r) {
                    FloatBuffer fb = ((OnnxTensor) o.getValue()).getFloatBuffer();
                    float[] f = new float[fb.remaining()];
                    fb.get(f);
                    out.put(o.getKey(), f);
                }
            }
            return out;
        } finally {
            for (OnnxTensor t : in.values()) {
                t.close();
            }
        }
    }

    /** {@code max|a − ref| / max|ref|}. */
    /**
     * Runs {@code e} on the inputs of a fixture's {@code expected.json} and returns the largest relative error of its
     * outputs against the ones transformers recorded there.
     */
    public static double errorAgainstTransformers(Exported e, Path expectedJson) throws OrtException {
        JsonNode expected = json(expectedJson);
        Map<String, float[]> out = runInMemory(e, fixtureInputs(e, expected));
        double err = 0;
        for (var it = expected.get("outputs").fieldNames(); it.hasNext(); ) {
            String name = it.next();
            err = Math.max(
                    err,
                    relativeError(
                            out.get(name),
                            flat(expected.get("outputs").get(name).get("data"))));
        }
        return err;
    }

    static double relativeError(float[] a, float[] ref) {
        if (a.length != ref.length) {
            throw new AssertionError("lengths differ: " + a.length + " vs reference " + ref.length);
        }
        double maxDiff = 0;
        double maxRef = 0;
        for (int i = 0; i < a.length; i++) {
            if (!Float.isFinite(a[i])) {
                return Double.POSITIVE_INFINITY;
            }
            maxDiff = Math.max(maxDiff, Math.abs((double) a[i] - ref[i]));
            maxRef = Math.max(maxRef, Math.abs(ref[i]));
        }
        return maxDiff / maxRef;
    }
}
