package scion.test.export;

import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.Arrays;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import scion.io.Model;
import scion.io.runtime.export.OnnxExporter;
import scion.io.runtime.export.OnnxExporter.Exported;
import scion.test.Fixtures;

/**
 * The {@code attention_mask} input: padding tokens must not change the outputs at the real tokens.
 *
 * <p>Left padding for the RoPE families (attention depends on relative positions only) and OPT (its positions are
 * {@code cumsum(mask) − 1}); right padding for gpt2 (learned absolute positions from 0) and bert (an encoder: padding
 * is masked for every query). The padded batch's outputs at the real tokens are compared with the unpadded batch's;
 * tolerance 1e-4 relative as for transformers (RoPE at shifted absolute positions rounds differently). A graph that
 * ignored the mask fails by orders of magnitude more.
 */
class ExportPaddingTest {
    private static final long PAD = 3;

    @ParameterizedTest
    @CsvSource({
        "llama, left",
        "mistral, left",
        "qwen2, left",
        "gemma, left",
        "gpt_neox, left",
        "opt, left",
        "gpt2, right",
        "bert, right"
    })
    void paddingDoesNotChangeRealTokens(String fixture, String side) throws Exception {
        JsonNode expected = ExportRun.json(Fixtures.hf(fixture).resolve("expected.json"));
        long[][] ids = ExportRun.longs2(expected.get("inputs").get("input_ids"));
        int b = ids.length;
        int s = ids[0].length;
        int width = s + 3;
        int off = side.equals("left") ? width - s : 0; // where the real tokens start
        long[][] padded = new long[b][width];
        long[][] mask = new long[b][width];
        for (int r = 0; r < b; r++) {
            Arrays.fill(padded[r], PAD);
            for (int t = 0; t < s; t++) {
                padded[r][off + t] = ids[r][t];
                mask[r][off + t] = 1;
            }
        }
        try (Model model = Model.open(Fixtures.hf(fixture))) {
            Exported e = OnnxExporter.export(model, OnnxExporter.Options.defaults());
            String name = expected.get("output_name").asText();
            float[] plain = ExportRun.runInMemory(e, ExportRun.inputs(e, ids, null, null))
                    .get(name);
            float[] withPad = ExportRun.runInMemory(e, ExportRun.inputs(e, padded, mask, null))
                    .get(name);
            int dim = plain.length / (b * s);
            float[] real = new float[plain.length];
            for (int r = 0; r < b; r++) {
                System.arraycopy(withPad, (r * width + off) * dim, real, r * s * dim, s * dim);
            }
            double err = ExportRun.relativeError(real, plain);
            assertTrue(err <= 1e-4, fixture + " (" + side + " padding): relative error " + err);

            // The mask matters: the same padded ids with every position attended give other outputs.
            float[] unmasked = ExportRun.runInMemory(e, ExportRun.inputs(e, padded, null, null))
                    .get(name);
            float[] unmaskedReal = new float[plain.length];
            for (int r = 0; r < b; r++) {
                System.arraycopy(unmasked, (r * width + off) * dim, unmaskedReal, r * s * dim, s * dim);
            }
            // (A causal model never sees tokens after the real ones: right padding needs no mask for gpt2.)
            if (!side.equals("right") || fixture.equals("bert")) {
                assertTrue(
                        ExportRun.relativeError(unmaskedReal, plain) > 1e-3,
                        fixture + ": padding without a mask should change the outputs");
            }
        }
    }
}
