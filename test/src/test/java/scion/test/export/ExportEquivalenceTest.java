package scion.test.export;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import scion.io.Model;
import scion.io.arch.Role;
import scion.io.arch.WeightGraph.Weight;
import scion.io.config.ModelConfig.Field;
import scion.io.runtime.export.OnnxExporter;
import scion.io.runtime.export.OnnxExporter.Exported;
import scion.test.Fixtures;

/**
 * The exported graph of every family fixture, run in ONNX Runtime from memory, against the outputs Hugging Face
 * transformers 5.17 (eager attention, float32) recorded for the same token ids.
 *
 * <p>Error measure: {@code max|ort − transformers| / max|transformers|} over the whole output tensor. Tolerance 1e-4
 * (the bound): both sides compute in float32 but sum in different orders (Gemm vs PyTorch's matmul, fused
 * ORT kernels), which moves the last bits; a wrong op (mask, RoPE half, norm epsilon, activation variant) gives 1e-2
 * or more. The residual stream {@code hidden_states.0 … L-1} is compared with transformers' {@code hidden_states} the
 * same way; {@code hidden_states.L} is before the final norm, transformers' last entry after it, so the final norm is
 * applied here in double precision from the checkpoint's weights before comparing (bert has none: compared as is).
 */
class ExportEquivalenceTest {
    static final double TOLERANCE = 1e-4;
    private static final Map<String, String> TABLE = new TreeMap<>();

    /** Every registered family's fixture, and the llama fixture stored in bf16 and in shards. */
    static List<String> fixtures() {
        List<String> out = new java.util.ArrayList<>(Fixtures.families());
        out.add("llama-bf16");
        out.add("llama-sharded");
        return out;
    }

    @ParameterizedTest
    @MethodSource("fixtures")
    void exportMatchesTransformers(String fixture) throws Exception {
        Path dir = Fixtures.hf(fixture);
        JsonNode expected =
                ExportRun.json((fixture.equals("llama-sharded") ? Fixtures.hf("llama") : dir).resolve("expected.json"));
        try (Model model = Model.open(dir)) {
            Exported e =
                    OnnxExporter.export(model, OnnxExporter.Options.defaults().withResidualStreamOutputs(true));
            int layers = model.graph().dims().layers();
            Map<String, float[]> out = ExportRun.runInMemory(e, ExportRun.fixtureInputs(e, expected));

            String name = expected.get("output_name").asText();
            float[] ref = ExportRun.flat(expected.get("outputs").get(name).get("data"));
            double outErr = ExportRun.relativeError(out.get(name), ref);
            // Every other output transformers recorded (bert's pooler_output) is an output of the export too.
            for (var it = expected.get("outputs").fieldNames(); it.hasNext(); ) {
                String other = it.next();
                assertTrue(out.containsKey(other), fixture + ": the export has no output " + other);
                float[] want = ExportRun.flat(expected.get("outputs").get(other).get("data"));
                outErr = Math.max(outErr, ExportRun.relativeError(out.get(other), want));
            }

            JsonNode hs = expected.get("hidden_states").get("data");
            assertEquals(layers + 1, hs.size(), "hidden_states entries");
            double[] hsErr = new double[layers + 1];
            for (int i = 0; i <= layers; i++) {
                float[] mine = out.get("hidden_states." + i);
                if (i == layers && model.graph().architecture().isCausalLm()) {
                    mine = finalNorm(model, mine);
                }
                hsErr[i] = ExportRun.relativeError(mine, ExportRun.flat(hs.get(i)));
            }
            double hsMax = Arrays.stream(hsErr).max().orElse(0);
            TABLE.put(
                    fixture,
                    String.format(
                            "| %-13s | %-17s | %9.2e | %9.2e | %s |",
                            fixture,
                            name,
                            outErr,
                            hsMax,
                            Arrays.toString(Arrays.stream(hsErr)
                                    .mapToObj(x -> String.format("%.1e", x))
                                    .toArray())));
            assertTrue(outErr <= TOLERANCE, fixture + ": " + name + " relative error " + outErr);
            for (int i = 0; i <= layers; i++) {
                assertTrue(hsErr[i] <= TOLERANCE, fixture + ": hidden_states." + i + " relative error " + hsErr[i]);
            }
        }
    }

    @AfterAll
    static void printTable() {
        System.out.println("| fixture       | output            | output err | hidden max | hidden_states 0..L |");
        TABLE.values().forEach(System.out::println);
    }

    /** The family's final norm over the last axis, in double precision. */
    static float[] finalNorm(Model model, float[] x) {
        List<Weight> ws = model.graph().byRole(Role.FINAL_NORM);
        float[] gamma = null;
        float[] beta = null;
        for (Weight w : ws) {
            if (w.isBias()) {
                beta = w.tensor().toFloats();
            } else {
                gamma = w.tensor().toFloats();
            }
        }
        String norm = model.graph().architecture().norm();
        String family = model.graph().architecture().family();
        double dflt = norm.startsWith("rms") ? 1e-6 : 1e-5;
        double eps = family.equals("opt")
                ? 1e-5
                : model.config().number(Field.NORM_EPS).orElse(dflt);
        int h = gamma.length;
        float[] out = new float[x.length];
        for (int r = 0; r < x.length / h; r++) {
            int o = r * h;
            double mean = 0;
            if (!norm.startsWith("rms")) {
                for (int i = 0; i < h; i++) {
                    mean += x[o + i];
                }
                mean /= h;
            }
            double var = 0;
            for (int i = 0; i < h; i++) {
                double c = x[o + i] - mean;
                var += c * c;
            }
            var /= h;
            double inv = 1 / Math.sqrt(var + eps);
            for (int i = 0; i < h; i++) {
                double y = (x[o + i] - mean) * inv;
                double gmul = norm.equals("rms_plus_one") ? 1 + gamma[i] : gamma[i];
                out[o + i] = (float) (y * gmul + (beta != null ? beta[i] : 0));
            }
        }
        return out;
    }
}
