package scion.test.calibration;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onnx.proto.OnnxMl.ModelProto;
import ai.onnx.proto.OnnxMl.ValueInfoProto;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import org.junit.jupiter.params.provider.ValueSource;
import scion.io.Model;
import scion.io.arch.Role;
import scion.io.arch.WeightGraph.Weight;
import scion.io.config.ModelConfig.Field;
import scion.io.runtime.calibration.Calibration;
import scion.io.runtime.calibration.Calibration.Options;
import scion.io.runtime.calibration.Calibration.Positions;
import scion.io.runtime.calibration.Calibration.Request;
import scion.io.runtime.calibration.OnnxTaps;
import scion.io.runtime.calibration.Rows;
import scion.io.runtime.export.OnnxExporter;
import scion.test.Fixtures;

/**
 * The calibration taps against Hugging Face transformers: on the committed fixtures, the residual stream Scion taps
 * equals transformers' {@code hidden_states} for the same token ids ({@code fixtures/hf/<family>/expected.json}).
 *
 * <p>Tolerance 1e-4 relative (max |Δ| / max |reference|), the export equivalence bound: ONNX Runtime's and PyTorch's
 * float32 kernels sum in different orders (observed ≤ 1e-6). {@code hidden_states[L]} is the base model's output,
 * after the final norm for causal LMs, so the tap after the last layer (before the final norm) is compared after
 * applying that norm in float64 with the checkpoint's weights; for BERT (post-LN, no final norm) directly.
 */
class CalibrationFixturesTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final double TOLERANCE = 1e-4;

    private static JsonNode expected(String family) {
        Path p = Fixtures.hf(family).resolve("expected.json");
        try {
            return JSON.readTree(p.toFile());
        } catch (IOException e) {
            throw new IllegalStateException(p + ": " + e.getMessage(), e);
        }
    }

    private static long[][] inputIds(JsonNode expected) {
        JsonNode n = expected.get("inputs").get("input_ids");
        long[][] out = new long[n.size()][];
        for (int i = 0; i < n.size(); i++) {
            out[i] = new long[n.get(i).size()];
            for (int j = 0; j < out[i].length; j++) {
                out[i][j] = n.get(i).get(j).asLong();
            }
        }
        return out;
    }

    /** hidden_states[i] flattened: [batch · seq, hidden] row-major. */
    private static float[] hiddenState(JsonNode expected, int i) {
        List<Float> acc = new ArrayList<>();
        collect(expected.get("hidden_states").get("data").get(i), acc);
        float[] out = new float[acc.size()];
        for (int k = 0; k < out.length; k++) {
            out[k] = acc.get(k);
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

    /** Every residual tap of one batch run on the fixture's inputs (equal lengths: no padding), copied. */
    private static float[][] residualTaps(Model model, long[][] ids) {
        int layers = model.graph().dims().layers();
        float[][] out = new float[layers + 1][];
        try (Calibration c = Calibration.open(
                model,
                Request.of(Positions.ALL_TOKENS).withResidualStream(),
                Options.defaults().withThreads(1))) {
            Calibration.Summary s = c.run(ids, b -> {
                for (int p = 0; p <= layers; p++) {
                    Rows r = b.residual(p);
                    assertEquals(b.tokens(), r.rows());
                    out[p] = r.data().clone();
                }
            });
            assertEquals(1, s.batches());
        }
        return out;
    }

    private static double relativeError(float[] expected, double[] actual) {
        assertEquals(expected.length, actual.length, "element count");
        double diff = 0;
        double scale = 0;
        for (int i = 0; i < expected.length; i++) {
            diff = Math.max(diff, Math.abs(expected[i] - actual[i]));
            scale = Math.max(scale, Math.abs(expected[i]));
        }
        return diff / scale;
    }

    private static double[] widen(float[] x) {
        double[] d = new double[x.length];
        for (int i = 0; i < x.length; i++) {
            d[i] = x[i];
        }
        return d;
    }

    /** The family's final norm applied row by row in float64: what transformers' last hidden state is. */
    private static double[] finalNorm(Model model, String family, float[] x) {
        List<Weight> norm = model.graph().byRole(Role.FINAL_NORM);
        if (norm.isEmpty()) {
            return widen(x); // post-LN BERT: the last layer's output is the model's output
        }
        float[] gamma = null;
        float[] beta = null;
        for (Weight w : norm) {
            if (w.isBias()) {
                beta = w.tensor().toFloats();
            } else {
                gamma = w.tensor().toFloats();
            }
        }
        // OPT's config has no epsilon: its LayerNorms use PyTorch's default, 1e-5.
        double eps = model.config().number(Field.NORM_EPS).orElse(1e-5);
        boolean rms =
                !model.graph().architecture().weights().stream().anyMatch(s -> s.role() == Role.FINAL_NORM && s.bias());
        // Gemma's norms scale by (1 + γ).
        boolean plusOne = "rms_plus_one".equals(model.graph().architecture().norm());
        int h = gamma.length;
        double[] out = new double[x.length];
        for (int r = 0; r < x.length / h; r++) {
            double mean = 0;
            if (!rms) {
                for (int j = 0; j < h; j++) {
                    mean += x[r * h + j];
                }
                mean /= h;
            }
            double var = 0;
            for (int j = 0; j < h; j++) {
                double d = x[r * h + j] - mean;
                var += d * d;
            }
            var /= h;
            double inv = 1 / Math.sqrt(var + eps);
            for (int j = 0; j < h; j++) {
                double g = plusOne ? 1 + gamma[j] : gamma[j];
                out[r * h + j] = (x[r * h + j] - mean) * inv * g + (beta == null ? 0 : beta[j]);
            }
        }
        return out;
    }

    private static void assertTapsEqualHiddenStates(Model model, String family) {
        JsonNode expected = expected(family);
        int layers = model.graph().dims().layers();
        assertEquals(layers + 1, expected.get("hidden_states").get("count").asInt());
        float[][] taps = residualTaps(model, inputIds(expected));
        for (int i = 0; i < layers; i++) {
            double err = relativeError(hiddenState(expected, i), widen(taps[i]));
            assertTrue(err <= TOLERANCE, family + " hidden_states[" + i + "]: relative error " + err);
        }
        double err = relativeError(hiddenState(expected, layers), finalNorm(model, family, taps[layers]));
        assertTrue(err <= TOLERANCE, family + " final norm of the last tap vs hidden_states[L]: " + err);
        double moved = relativeError(hiddenState(expected, 0), widen(taps[layers]));
        assertTrue(moved > 0.1, family + ": the taps are different tensors (" + moved + ")");
    }

    /** PyTorch's own ONNX exports (legacy TorchScript exporter): taps found by dataflow in a foreign graph. */
    @ParameterizedTest
    @ValueSource(strings = {"bert", "llama", "gpt2"})
    void pytorchExportTapsEqualTransformersHiddenStates(String family) {
        try (Model model = Model.open(Fixtures.resource("onnx/" + family + ".onnx"))) {
            assertTapsEqualHiddenStates(model, family);
        }
    }

    /** Safetensors checkpoints, exported in memory with residual outputs, for every family Scion knows. */
    @ParameterizedTest
    @MethodSource("scion.test.Fixtures#families")
    void safetensorsTapsEqualTransformersHiddenStates(String family) {
        try (Model model = Model.open(Fixtures.hf(family))) {
            assertTapsEqualHiddenStates(model, family);
        }
    }

    /**
     * The dataflow rule finds, in Scion's own export without residual outputs, exactly the tensors the exporter
     * names {@code hidden_states.*} when asked for them: the rule holds for pre-LN, post-LN, parallel-residual,
     * Gemma's {@code 1 + γ} norm and OPT graphs alike.
     */
    @ParameterizedTest
    @MethodSource("scion.test.Fixtures#families")
    void dataflowRuleFindsTheExportersResidualTensors(String family) {
        try (Model model = Model.open(Fixtures.hf(family))) {
            OnnxExporter.Exported e =
                    OnnxExporter.export(model, OnnxExporter.Options.defaults().withResidualStreamOutputs(true));
            ModelProto.Builder b = e.model().toBuilder();
            List<ValueInfoProto> outputs = new ArrayList<>(b.getGraph().getOutputList());
            outputs.removeIf(o -> o.getName().startsWith("hidden_states."));
            b.getGraphBuilder().clearOutput().addAllOutput(outputs);
            OnnxTaps taps = OnnxTaps.locate(b.build(), model.graph(), family);
            int layers = model.graph().dims().layers();
            assertEquals(layers + 1, taps.residual().size());
            for (int i = 0; i <= layers; i++) {
                String traced = taps.residual(i).tensor();
                assertFalse(traced.startsWith("hidden_states."), "found by tracing, not by name");
                // The exporter computes on [batch·seq, hidden] rows; hidden_states.i reshapes its stream tensor.
                String named = "hidden_states." + i;
                boolean same = e.model().getGraph().getNodeList().stream()
                        .anyMatch(n -> n.getOutputList().contains(named)
                                && (n.getOpType().equals("Reshape")
                                        || n.getOpType().equals("Identity"))
                                && n.getInput(0).equals(traced));
                assertTrue(
                        same,
                        family + " position " + i + ": traced '" + traced + "', exporter's " + named + " comes from "
                                + producerOf(e.model(), named));
            }
        }
    }

    private static String producerOf(ModelProto m, String tensor) {
        return m.getGraph().getNodeList().stream()
                .filter(n -> n.getOutputList().contains(tensor))
                .map(n -> n.getOpType() + "(" + String.join(", ", n.getInputList()) + ")")
                .findFirst()
                .orElse("nothing");
    }

    /** A linear input tap is the matrix the weight multiplies: llama's q_proj input is RMSNorm(x⁰)·γ. */
    @Test
    void linearInputTapIsTheNormalisedStream() {
        try (Model model = Model.open(Fixtures.resource("onnx/llama.onnx"))) {
            JsonNode expected = expected("llama");
            float[] x0 = hiddenState(expected, 0);
            String q = "model.layers.0.self_attn.q_proj.weight";
            float[] gamma = model.graph()
                    .find("model.layers.0.input_layernorm.weight")
                    .orElseThrow()
                    .tensor()
                    .toFloats();
            double eps = model.config().number(Field.NORM_EPS).orElseThrow();
            float[][] tapped = new float[1][];
            try (Calibration c = Calibration.open(
                    model,
                    Request.of(Positions.ALL_TOKENS).withLinearInputs(List.of(q)),
                    Options.defaults().withThreads(1))) {
                c.run(
                        inputIds(expected),
                        b -> tapped[0] = b.linearInput(q).data().clone());
            }
            int h = gamma.length;
            double[] ref = new double[x0.length];
            for (int r = 0; r < x0.length / h; r++) {
                double ms = 0;
                for (int j = 0; j < h; j++) {
                    ms += (double) x0[r * h + j] * x0[r * h + j];
                }
                double inv = 1 / Math.sqrt(ms / h + eps);
                for (int j = 0; j < h; j++) {
                    ref[r * h + j] = x0[r * h + j] * inv * gamma[j];
                }
            }
            float[] refF = new float[ref.length];
            for (int i = 0; i < ref.length; i++) {
                refF[i] = (float) ref[i];
            }
            double err = relativeError(refF, widen(tapped[0]));
            assertTrue(err <= TOLERANCE, "q_proj input vs RMSNorm(hidden_states[0]): " + err);
        }
    }

    /**
     * A causal LM export without an attention_mask input: right padding is exact (no position attends to a later
     * one), so a ragged batch gives each sequence the activations it has alone, and padded positions give no rows.
     */
    @Test
    void causalModelWithoutMaskInputIsPaddedOnTheRight() {
        try (Model model = Model.open(Fixtures.resource("onnx/llama.onnx"));
                Calibration c = Calibration.open(
                        model,
                        Request.of(Positions.LAST_TOKEN).withResidualStream(2),
                        Options.defaults().withThreads(1))) {
            long[][] seqs = {{5, 9, 13, 17, 21, 25, 29, 33}, {3, 7, 11}, {1, 2, 3, 4, 5}};
            float[][] batched = new float[1][];
            Calibration.Summary s = c.run(seqs, b -> {
                assertEquals(3, b.sequences());
                assertEquals(8, b.paddedLength());
                Rows r = b.residual(2);
                assertEquals(3, r.rows(), "one last-token row per sequence");
                assertEquals(2, r.position(1));
                batched[0] = r.data().clone();
            });
            assertEquals(16, s.tokens());
            assertEquals(24, s.paddedTokens());
            for (int i = 0; i < seqs.length; i++) {
                float[][] alone = new float[1][];
                c.run(
                        new long[][] {seqs[i]},
                        b -> alone[0] = b.residual(2).data().clone());
                int h = alone[0].length;
                float[] row = Arrays.copyOfRange(batched[0], i * h, (i + 1) * h);
                double err = relativeError(alone[0], widen(row));
                assertTrue(err <= 1e-5, "sequence " + i + " batched vs alone: " + err);
            }
        }
    }
}
