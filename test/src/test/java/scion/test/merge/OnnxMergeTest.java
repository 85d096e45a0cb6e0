package scion.test.merge;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.Model;
import scion.io.arch.WeightGraph.Weight;
import scion.test.Fixtures;
import scion.test.cli.CliRun;

/**
 * ONNX merging: weights are matched by role and layer (traced from the graph), not by name. The fixture {@code
 * onnx/llama.onnx} is PyTorch's export of {@code hf/llama}: its MatMul weights are anonymous ({@code
 * onnx::MatMul_…}) and stored {@code [in, out]}. Merging it with a safetensors variant must give, weight for weight, the
 * same values as merging the two safetensors folders, and ONNX Runtime must run the result like the safetensors merge.
 */
class OnnxMergeTest {
    @TempDir
    Path tmp;

    @Test
    void onnxAndSafetensorsAreMatchedByRoleAndGiveTheSameMerge() {
        Path onnx = Fixtures.resource("onnx/llama.onnx");
        Path ft1 = Fixtures.resource("merge/llama-ft1");
        Path outOnnx = tmp.resolve("merged.onnx");
        Path outHf = tmp.resolve("merged-hf");
        CliRun a = CliRun.of(
                "merge",
                "--method",
                "slerp",
                "--base",
                onnx.toString(),
                "--param",
                "t=0.4",
                onnx.toString(),
                ft1.toString(),
                outOnnx.toString());
        assertEquals(0, a.code(), a.toString());
        CliRun b = CliRun.of(
                "merge",
                "--method",
                "slerp",
                "--base",
                Fixtures.hf("llama").toString(),
                "--param",
                "t=0.4",
                Fixtures.hf("llama").toString(),
                ft1.toString(),
                outHf.toString());
        assertEquals(0, b.code(), b.toString());
        Map<String, float[]> hf = MergeReferenceTest.read(outHf);
        double max = 0;
        int matched = 0;
        try (Model m = Model.open(outOnnx)) {
            for (Weight w : m.graph().weights()) {
                float[] got = w.tensor().toFloats();
                float[] want = hf.get(w.name());
                if (want == null) {
                    continue; // lm_head shares the embedding in neither; every traced weight has a twin
                }
                long[] sh = w.tensor().shape();
                for (int i = 0; i < got.length; i++) {
                    int j = i;
                    if (w.transposed() && sh.length == 2) {
                        int r = i / (int) sh[1];
                        int c = i % (int) sh[1];
                        j = c * (int) sh[0] + r; // stored [in, out], HF [out, in]
                    }
                    max = Math.max(max, Math.abs(got[i] - want[j]));
                }
                matched++;
                assertFalse(w.tensor().name().equals(w.name()) && w.transposed(), "anonymous names stay as stored");
            }
        }
        assertTrue(matched >= 20, "traced weights compared: " + matched);
        assertTrue(max < 1e-6, "ONNX merge vs safetensors merge, max |diff| " + max);
        CliRun v = CliRun.of(
                "validate", outHf.toString(), outOnnx.toString(), "--random-tokens", "32", "--expect", "close:1e-4");
        assertEquals(0, v.code(), v.toString());
        assertTrue(Files.exists(outOnnx));
    }
}
