package scion.test.growth;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtSession;
import com.fasterxml.jackson.databind.JsonNode;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import scion.growth.HyperCloning;
import scion.growth.OnnxGrowth;
import scion.io.Json;
import scion.io.Model;
import scion.io.onnx.OnnxWriter;
import scion.test.Fixtures;
import scion.test.cli.CliRun;

/**
 * ONNX in, ONNX out: HyperCloning ×2 of the real all-MiniLM-L6-v2 (384 → 768, 12 → 24 heads) and of the exported
 * fixtures, judged by ONNX Runtime.
 */
class OnnxGrowthTest {
    @TempDir
    Path tmp;

    static OnnxGrowth.Plan grow(Path src, Path out, HyperCloning.Params p) {
        try (Model m = Model.open(src)) {
            OnnxGrowth.Plan plan = OnnxGrowth.plan(m, p);
            OnnxGrowth.write(m, plan, out, OnnxWriter.Options.defaults());
            return plan;
        }
    }

    /**
     * The grown MiniLM's {@code last_hidden_state} is two copies of the original's. Tolerance 2e-5 absolute (values
     * up to ~6): the grown matrix products add 768 instead of 384 terms in float32, in another order; measured 3.8e-6
     * without noise, 5.0e-6 with the default 20 dB noise.
     */
    @Test
    void miniLmTimesTwoIsTwoCopiesOfTheOriginal() throws Exception {
        Path src = Fixtures.miniLmOnnx();
        Path out = tmp.resolve("minilm-x2.onnx");
        OnnxGrowth.Plan plan = grow(src, out, HyperCloning.Params.withNoise(2, 2, 7));
        // 6 layers × (3 head splits 12 → 24 + 1 head merge 384 → 768) + the output's static 384
        assertEquals(25, plan.rewrites().size(), plan.rewrites().toString());
        assertTrue(plan.rewrites().stream()
                .anyMatch(r ->
                        r.tensor().equals("/encoder/layer.0/attention/self/Constant_10_output_0") && r.to()[0] == 24));
        assertTrue(plan.suspicious().isEmpty(), plan.suspicious().toString());
        assertEquals(101, plan.grownWeights());
        try (Model m = Model.open(out)) {
            assertEquals(768, m.graph().dims().hidden());
            assertEquals(24, m.graph().dims().heads());
            assertEquals(
                    List.of("input_ids", "attention_mask", "token_type_ids"),
                    m.onnx().get().inputNames());
            assertEquals(List.of("last_hidden_state"), m.onnx().get().outputNames());
        }

        long[][] ids = {
            {101, 7592, 2088, 1010, 2023, 2003, 1037, 3231, 1012, 102}, {101, 2312, 4248, 102, 0, 0, 0, 0, 0, 0}
        };
        float[][][] ref = run(src, ids);
        float[][][] cand = run(out, ids);
        double max = 0;
        for (int b = 0; b < ids.length; b++) {
            for (int t = 0; t < ids[0].length; t++) {
                assertEquals(768, cand[b][t].length);
                for (int i = 0; i < 384; i++) {
                    max = Math.max(max, Math.abs(cand[b][t][i] - ref[b][t][i]));
                    max = Math.max(max, Math.abs(cand[b][t][384 + i] - ref[b][t][i]));
                }
            }
        }
        assertTrue(max < 2e-5, "max |Δ| " + max);
        assertTrue(max > 0, "noise and a longer sum change the last bits: a test that cannot fail is a defect");

        JsonNode j = validate(src, out);
        JsonNode c = j.get("outputs").get(0).get("per_copy");
        assertEquals(2, c.size());
    }

    static float[][][] run(Path model, long[][] ids) throws Exception {
        OrtEnvironment env = OrtEnvironment.getEnvironment();
        long[][] mask = new long[ids.length][ids[0].length];
        long[][] types = new long[ids.length][ids[0].length];
        for (int b = 0; b < ids.length; b++) {
            for (int t = 0; t < ids[0].length; t++) {
                mask[b][t] = ids[b][t] == 0 ? 0 : 1;
            }
        }
        try (OrtSession s = env.createSession(model.toString(), new OrtSession.SessionOptions());
                OnnxTensor a = OnnxTensor.createTensor(env, ids);
                OnnxTensor m = OnnxTensor.createTensor(env, mask);
                OnnxTensor ty = OnnxTensor.createTensor(env, types)) {
            Map<String, OnnxTensor> in = new HashMap<>();
            in.put("input_ids", a);
            in.put("attention_mask", m);
            in.put("token_type_ids", ty);
            try (OrtSession.Result r = s.run(in)) {
                return (float[][][]) r.get(0).getValue();
            }
        }
    }

    static JsonNode validate(Path ref, Path cand) throws Exception {
        CliRun r = CliRun.of(
                "validate",
                ref.toString(),
                cand.toString(),
                "--random-tokens",
                "64",
                "--latency-runs",
                "1",
                "--expect",
                "close:1e-5",
                "--json");
        assertEquals(0, r.code(), r.toString());
        JsonNode j = Json.mapper().readTree(r.out());
        assertTrue(j.get("verdict").get("passed").asBoolean(), j.toString());
        return j;
    }

    /**
     * The PyTorch exports of the fixtures (llama with GQA, gpt2 with its fused c_attn Split and Gemm reshapes, bert):
     * outputs equal the source's within 1e-5 relative (float32 sums in another order; measured ≤ 4e-7).
     */
    @ParameterizedTest
    @ValueSource(strings = {"llama", "gpt2", "bert"})
    void exportedFixturesGrowTimesTwo(String family) throws Exception {
        Path src = Fixtures.resource("onnx/" + family + ".onnx");
        Path out = tmp.resolve(family + "-x2.onnx");
        OnnxGrowth.Plan plan = grow(src, out, HyperCloning.Params.exact(2, 2));
        assertTrue(plan.suspicious().isEmpty(), plan.suspicious().toString());
        if (family.equals("gpt2")) {
            // per layer: c_attn [.., 192] → 384, Split [64, 64, 64] → [128, 128, 128], c_proj 64, c_fc 128, mlp c_proj
            // 64
            assertTrue(
                    plan.rewrites().stream().anyMatch(r -> r.to().length == 3 && r.to()[0] == 128),
                    plan.rewrites().toString());
        }
        validate(src, out);
    }
}
