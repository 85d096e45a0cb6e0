package scion.test.growth;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import scion.io.Json;
import scion.io.Model;
import scion.io.arch.Role;
import scion.io.arch.WeightGraph.Weight;
import scion.test.Fixtures;
import scion.test.cli.CliRun;

/**
 * HyperCloning judged by ONNX Runtime on the 8 family fixtures: the grown model's logits equal the source's and every
 * residual-stream state is n copies of the source's, with exact copies and with symmetry-breaking noise (whose copies
 * measurably differ in their weights).
 *
 * <p>Tolerance 1e-5 relative: growth itself is exact (copies, divisions by powers of two) or rounds once per weight
 * (÷3, noise), but every dot product of the grown model sums n× as many float32 terms in another order; measured
 * ≤ 9e-7 on all families.
 */
class HyperCloningEquivalenceTest {
    static final String TOL = "close:1e-5";

    @TempDir
    Path tmp;

    static Path grow(Path src, Path out, String... args) {
        List<String> all = new ArrayList<>(List.of("grow", src.toString(), out.toString()));
        all.addAll(List.of(args));
        CliRun r = CliRun.of(all.toArray(new String[0]));
        assertEquals(0, r.code(), r.toString());
        return out;
    }

    /** {@code scion validate REF CAND --residual-stream}: the gate must pass; returns the JSON report. */
    static JsonNode validate(Path ref, Path cand, String expect) throws Exception {
        CliRun r = CliRun.of(
                "validate",
                ref.toString(),
                cand.toString(),
                "--random-tokens",
                "32",
                "--latency-runs",
                "1",
                "--residual-stream",
                "--expect",
                expect,
                "--json");
        assertEquals(0, r.code(), r.toString());
        JsonNode j = Json.mapper().readTree(r.out());
        assertTrue(j.get("verdict").get("passed").asBoolean(), j.toString());
        return j;
    }

    /** The number of copies compared for each output: 1 for logits, n for n× wide states. */
    static void assertCopies(JsonNode report, int n) {
        int wide = 0;
        for (JsonNode o : report.get("outputs")) {
            String name = o.get("name").asText();
            int copies = o.get("per_copy").size();
            if (name.startsWith("hidden_states") || name.equals("last_hidden_state")) {
                assertEquals(n, copies, name);
                wide++;
            }
        }
        assertTrue(wide >= 2, "residual-stream states compared: " + report);
    }

    /**
     * The relative difference between the first two input copies of a grown MLP up-projection: ‖B₀ − B₁‖ / ‖B₀‖
     * over the blocks of the input (residual) axis. 0 for exact copies, ≈ 2·10^(−SNR/20) with noise.
     */
    static double copyDifference(Path grown, int sourceHidden) {
        try (Model m = Model.open(grown)) {
            Weight w = m.graph().byRole(Role.MLP_UP).stream()
                    .filter(x -> !x.isBias())
                    .findFirst()
                    .orElseThrow();
            long[] s = w.tensor().shape();
            float[] v = w.tensor().toFloats();
            boolean inFirst = w.spec().inOut(); // gpt2 Conv1D: [in, out]
            int rows = (int) s[0];
            int cols = (int) s[1];
            double diff = 0;
            double ref = 0;
            for (int i = 0; i < rows; i++) {
                for (int j = 0; j < cols; j++) {
                    int in = inFirst ? i : j;
                    if (in >= sourceHidden) {
                        continue;
                    }
                    float b0 = v[i * cols + j];
                    float b1 = inFirst ? v[(i + sourceHidden) * cols + j] : v[i * cols + j + sourceHidden];
                    diff += (double) (b0 - b1) * (b0 - b1);
                    ref += (double) b0 * b0;
                }
            }
            return Math.sqrt(diff / ref);
        }
    }

    @ParameterizedTest
    @MethodSource("scion.test.Fixtures#families")
    void widthTwoFfnTwoIsFunctionPreservingWithAndWithoutNoise(String family) throws Exception {
        Path src = Fixtures.hf(family);
        int hidden;
        try (Model m = Model.open(src)) {
            hidden = m.graph().dims().hidden();
        }
        Path exact = grow(src, tmp.resolve(family + "-exact"), "--width", "2", "--ffn", "2", "--no-noise");
        assertCopies(validate(src, exact, TOL), 2);
        assertEquals(0.0, copyDifference(exact, hidden), "exact copies");

        Path noisy = grow(src, tmp.resolve(family + "-noise"), "--width", "2", "--ffn", "2", "--seed", "5");
        assertCopies(validate(src, noisy, TOL), 2);
        // 20 dB: each block carries noise of 1/10 its RMS, so B₀ − B₁ = 2N is ≈ 0.2 of a block.
        double d = copyDifference(noisy, hidden);
        assertTrue(d > 0.15 && d < 0.25, family + ": copies differ by " + d);
    }

    /** ×3 width (kv heads kept on a GQA family, so 3 query heads share each kept group). */
    @Test
    void widthThree() throws Exception {
        Path src = Fixtures.hf("qwen2");
        Path out = grow(src, tmp.resolve("qwen2-w3"), "--width", "3", "--kv", "keep");
        try (Model m = Model.open(out)) {
            assertEquals(192, m.graph().dims().hidden());
            assertEquals(12, m.graph().dims().heads());
            assertEquals(2, m.graph().dims().kvHeads());
            assertEquals(384, m.graph().dims().ffn());
        }
        assertCopies(validate(src, out, TOL), 3);
        Path gemma = grow(Fixtures.hf("gemma"), tmp.resolve("gemma-w3"), "--width", "3", "--ffn", "1");
        assertCopies(validate(Fixtures.hf("gemma"), gemma, TOL), 3);
        // Qwen3: head_dim 32 from config (≠ hidden / heads), per-head q/k norms left as they are.
        Path qwen3 = grow(Fixtures.hf("qwen3"), tmp.resolve("qwen3-w3"), "--width", "3", "--no-noise");
        assertCopies(validate(Fixtures.hf("qwen3"), qwen3, TOL), 3);
    }

    /**
     * bf16 with power-of-two factors and no noise: every grown weight is the source weight times a power of two, bit for bit
     * (checked element by element), the embedding output is bit-identical, and the logits agree as closely as the
     * f32 growth (the runtime sums twice as many float32 terms; rounding order, not weight rounding).
     */
    @Test
    void bf16PowerOfTwoIsExact() throws Exception {
        Path src = Fixtures.hf("llama-bf16");
        Path out = grow(src, tmp.resolve("bf16"), "--width", "2", "--ffn", "2", "--no-noise");
        try (Model s = Model.open(src);
                Model g = Model.open(out)) {
            for (Weight w : s.graph().weights()) {
                Weight gw = g.graph().find(w.name()).orElseThrow();
                assertEquals(w.tensor().dtype(), gw.tensor().dtype(), w.name());
                float[] sv = w.tensor().toFloats();
                float[] gv = gw.tensor().toFloats();
                long[] ss = w.tensor().shape();
                long[] gs = gw.tensor().shape();
                int sc = ss.length == 2 ? (int) ss[1] : (int) ss[0];
                int gc = gs.length == 2 ? (int) gs[1] : (int) gs[0];
                float scale = w.role().isLinear() && !w.isBias() ? 2f : 1f;
                for (int i = 0; i < gv.length; i++) {
                    int r = i / gc;
                    int c = i % gc;
                    int sr = ss.length == 2 ? r % (int) ss[0] : 0;
                    assertEquals(sv[sr * sc + c % sc], gv[i] * scale, 0f, w.name() + " element " + i);
                }
            }
        }
        JsonNode j = validate(src, out, TOL);
        assertCopies(j, 2);
        // With noise (and with ×3) the blocks of each weight are split so that they sum to the bf16 weight exactly:
        // rounding W/2 ± N separately would cost ~1e-3 relative (measured 1.3e-3 before the split).
        Path noisy = grow(src, tmp.resolve("bf16-noise"), "--width", "2", "--ffn", "2");
        assertCopies(validate(src, noisy, TOL), 2);
        assertTrue(copyDifference(noisy, 64) > 0.15, "copies differ");
        Path three = grow(src, tmp.resolve("bf16-x3"), "--width", "3");
        assertCopies(validate(src, three, TOL), 3);
        for (JsonNode o : j.get("outputs")) {
            if (o.get("name").asText().equals("hidden_states.0")) {
                for (JsonNode c : o.get("per_copy")) {
                    assertTrue(c.get("identical").asBoolean(), "embedding output bit-identical: " + c);
                }
            }
        }
    }
}
