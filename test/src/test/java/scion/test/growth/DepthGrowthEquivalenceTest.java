package scion.test.growth;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import scion.growth.DepthGrowth;
import scion.io.InvalidInputException;
import scion.io.Json;
import scion.io.Model;
import scion.io.safetensors.SafetensorsWriter;
import scion.io.tensor.Tensor;
import scion.test.Fixtures;
import scion.test.cli.CliRun;

/**
 * Depth growth judged by ONNX Runtime: {@code identity} blocks leave every pre-LN family's logits bit-identical;
 * {@code stack} runs and changes them; post-LN bert is refused.
 */
class DepthGrowthEquivalenceTest {
    @TempDir
    Path tmp;

    /** Grows with the operator's API and writes the result the way a command does (safetensors + config.json). */
    static Path grow(Path src, Path out, DepthGrowth.Params p) {
        try (Model m = Model.open(src)) {
            DepthGrowth.Plan plan = DepthGrowth.plan(m.graph(), p);
            List<Tensor> ts = DepthGrowth.tensors(plan, m.graph(), w -> w.tensor());
            try (SafetensorsWriter.Output o = SafetensorsWriter.create().open(out)) {
                o.writeTensors(ts);
                o.addFile(
                        "config.json",
                        DepthGrowth.config(plan, m.config()).toJson().getBytes(StandardCharsets.UTF_8));
                o.commit();
            }
        }
        return out;
    }

    static JsonNode validate(Path ref, Path cand, String expect) throws Exception {
        CliRun r = CliRun.of(
                "validate",
                ref.toString(),
                cand.toString(),
                "--random-tokens",
                "48",
                "--latency-runs",
                "1",
                "--expect",
                expect,
                "--json");
        assertEquals(expect.equals("identical") ? 0 : r.code(), r.code(), r.toString());
        return Json.mapper().readTree(r.out());
    }

    /**
     * Zero output projections make each new block add exactly 0.0 to the residual stream, so the logits are the same
     * floats: "identical", not a tolerance.
     */
    @ParameterizedTest
    @ValueSource(strings = {"llama", "mistral", "qwen2", "gemma", "gpt2", "gpt_neox", "opt"})
    void identityBlocksAreExact(String family) throws Exception {
        Path src = Fixtures.hf(family);
        Path out = grow(src, tmp.resolve(family + "-d5"), new DepthGrowth.Params(5, DepthGrowth.Method.IDENTITY, null));
        try (Model m = Model.open(out)) {
            assertEquals(5, m.graph().dims().layers());
        }
        JsonNode j = validate(src, out, "identical");
        assertTrue(j.get("verdict").get("passed").asBoolean(), j.toString());
        assertEquals(
                0.0,
                j.get("outputs")
                        .get(0)
                        .get("per_copy")
                        .get(0)
                        .get("max_abs_diff")
                        .asDouble());
    }

    @Test
    void stackRunsAndIsNotFunctionPreserving() throws Exception {
        Path src = Fixtures.hf("llama");
        DepthGrowth.Params p = new DepthGrowth.Params(4, DepthGrowth.Method.STACK, null);
        try (Model m = Model.open(src)) {
            DepthGrowth.Plan plan = DepthGrowth.plan(m.graph(), p);
            assertEquals("0 1 +0 +1", plan.layout());
            assertTrue(!plan.functionPreserving());
        }
        Path out = grow(src, tmp.resolve("llama-stack"), p);
        JsonNode j = validate(src, out, "close:1e-6");
        JsonNode c = j.get("outputs").get(0).get("per_copy").get(0);
        assertTrue(c.get("max_abs_diff").asDouble() > 1e-3, c.toString());
        assertTrue(c.get("cosine").asDouble() > 0.5, "still a related model: " + c);
    }

    @Test
    void identityOnPostLnBertIsRefused() {
        try (Model m = Model.open(Fixtures.hf("bert"))) {
            InvalidInputException e = assertThrows(
                    InvalidInputException.class,
                    () -> DepthGrowth.plan(m.graph(), new DepthGrowth.Params(4, DepthGrowth.Method.IDENTITY, null)));
            assertTrue(e.getMessage().contains("post-LN"), e.getMessage());
            assertTrue(e.getMessage().contains("--depth-method stack"), e.getMessage());
            assertEquals(
                    4,
                    DepthGrowth.plan(m.graph(), new DepthGrowth.Params(4, DepthGrowth.Method.STACK, null))
                            .layers());
        }
    }
}
