package scion.test.growth;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import scion.growth.DepthGrowth;
import scion.io.InvalidInputException;
import scion.io.Json;
import scion.io.Model;
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

    /** {@code scion grow SRC OUT ARGS...}, which must succeed. */
    static Path grow(Path src, Path out, String... args) {
        String[] all = new String[args.length + 3];
        all[0] = "grow";
        all[1] = src.toString();
        all[2] = out.toString();
        System.arraycopy(args, 0, all, 3, args.length);
        CliRun r = CliRun.of(all);
        assertEquals(0, r.code(), r.toString());
        return out;
    }

    static JsonNode validate(Path ref, Path cand, String expect, int exitCode) throws Exception {
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
        assertEquals(exitCode, r.code(), r.toString());
        return Json.mapper().readTree(r.out());
    }

    /**
     * Zero output projections make each new block add exactly 0.0 to the residual stream, so the logits are the same
     * floats: "identical", not a tolerance.
     */
    @ParameterizedTest
    @MethodSource("scion.test.Fixtures#causalFamilies")
    void identityBlocksAreExact(String family) throws Exception {
        Path src = Fixtures.hf(family);
        Path out = grow(src, tmp.resolve(family + "-d5"), "--depth", "5");
        try (Model m = Model.open(out)) {
            assertEquals(5, m.graph().dims().layers());
        }
        JsonNode j = validate(src, out, "identical", 0);
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
        Path out = grow(src, tmp.resolve("llama-stack"), "--depth", "4", "--depth-method", "stack");
        JsonNode j = validate(src, out, "close:1e-6", 4); // the gate fails: not function-preserving
        JsonNode c = j.get("outputs").get(0).get("per_copy").get(0);
        assertTrue(c.get("max_abs_diff").asDouble() > 1e-3, c.toString());
        assertTrue(c.get("cosine").asDouble() > 0.5, "still a related model: " + c);
    }

    /**
     * Width and depth in one call: ×2 wide (HyperCloning, exact copies) and 2 → 4 blocks placed after block 1 only.
     * The logits stay within 1e-5 relative (float32 sums over twice the terms; the identity blocks add exact zeros).
     */
    @Test
    void widthAndDepthInOneCall() throws Exception {
        Path src = Fixtures.hf("llama");
        Path out = grow(
                src, tmp.resolve("llama-w2-d4"), "--width", "2", "--no-noise", "--depth", "4", "--positions", "1,1");
        try (Model m = Model.open(out)) {
            assertEquals(4, m.graph().dims().layers());
            assertEquals(128, m.graph().dims().hidden());
            // the new blocks 2 and 3 copy block 1 with zero output projections
            Tensor o = m.graph()
                    .find("model.layers.3.self_attn.o_proj.weight")
                    .orElseThrow()
                    .tensor();
            for (float v : o.toFloats()) {
                assertEquals(0f, v);
            }
        }
        JsonNode j = validate(src, out, "close:1e-5", 0);
        assertTrue(j.get("verdict").get("passed").asBoolean(), j.toString());
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
        CliRun r = CliRun.of(
                "grow", Fixtures.hf("bert").toString(), tmp.resolve("bert-d4").toString(), "--depth", "4");
        assertEquals(3, r.code(), r.toString());
        assertTrue(r.err().contains("post-LN"), r.err());
        assertTrue(!java.nio.file.Files.exists(tmp.resolve("bert-d4")), "nothing written");
    }
}
