package scion.test.merge;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Arrays;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import scion.io.Model;
import scion.io.runtime.Device;
import scion.io.runtime.RuntimeModel;
import scion.io.runtime.TextTokenizer;
import scion.merge.fisher.GradientNet;
import scion.merge.fisher.GradientNet.Param;
import scion.test.Fixtures;

/**
 * The Java forward and backward pass behind the Fisher estimate: its outputs equal ONNX Runtime's on the same model
 * (the real all-MiniLM-L6-v2 ONNX on English text, and the exported tiny Hugging Face fixtures), and its gradients
 * equal central finite differences of the same pass.
 */
class FisherGradientTest {

    /** Real English, tokenised with MiniLM's own tokenizer: {@code [CLS]} + the first 126 word pieces + {@code [SEP]}. */
    static long[] miniLmTokens(Path dir, int content) throws Exception {
        Path tokJson = dir.resolve("minilm-tokenizer.json");
        try (InputStream in = FisherGradientTest.class.getResourceAsStream("/all-minilm-l6-v2-tokenizer.json")) {
            Files.copy(in, tokJson, StandardCopyOption.REPLACE_EXISTING);
        }
        String text;
        try (InputStream in = FisherGradientTest.class.getResourceAsStream("/scion/demo/bridges.txt")) {
            text = new String(in.readAllBytes(), StandardCharsets.UTF_8);
        }
        try (TextTokenizer tok = TextTokenizer.huggingFace(tokJson, 30522)) {
            long[] ids = tok.encode(text);
            return tok.wrap(Arrays.copyOf(ids, content));
        }
    }

    /** Max |Δ| relative to max |reference|. */
    static double relErr(float[] ref, float[] got) {
        assertEquals(ref.length, got.length);
        double max = 0;
        double diff = 0;
        for (int i = 0; i < ref.length; i++) {
            max = Math.max(max, Math.abs(ref[i]));
            diff = Math.max(diff, Math.abs(ref[i] - got[i]));
        }
        return diff / max;
    }

    @Test
    void miniLmForwardMatchesOnnxRuntimeOnEnglish(@TempDir Path dir) throws Exception {
        long[] ids = miniLmTokens(dir, 126);
        Path onnx = Fixtures.miniLmOnnx();
        float[] ref;
        try (RuntimeModel rt = RuntimeModel.open(onnx, Device.CPU)) {
            ref = rt.run(new long[][] {ids}).get("last_hidden_state").data();
        }
        try (Model m = Model.open(onnx)) {
            GradientNet net = GradientNet.load(m);
            float[] got = net.forward(ids).output();
            // float32 with different summation orders over 6 post-LN blocks: ~1e-6 relative; 1e-4 leaves room.
            double e = relErr(ref, got);
            assertTrue(e < 1e-4, "MiniLM last_hidden_state relative error " + e);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"llama", "mistral", "qwen2", "bert"})
    void fixtureForwardMatchesExportedOnnx(String family) {
        Path dir = Fixtures.hf(family);
        long[] ids = new long[40];
        Random r = new Random(7);
        for (int i = 0; i < ids.length; i++) {
            ids[i] = r.nextInt(128);
        }
        Map<String, RuntimeModel.Output> out;
        try (RuntimeModel rt = RuntimeModel.open(dir, Device.CPU)) {
            out = rt.run(new long[][] {ids});
        }
        try (Model m = Model.open(dir)) {
            GradientNet net = GradientNet.load(m);
            float[] got = net.forward(ids).output();
            float[] ref = out.get(net.causal() ? "logits" : "last_hidden_state").data();
            double e = relErr(ref, got);
            assertTrue(e < 1e-5, family + " output relative error " + e);
        }
    }

    /** Mistral with a sliding window shorter than the sequence (the fixture's 4096 never binds): still ORT's output. */
    @Test
    void slidingWindowMatchesExportedOnnx(@TempDir Path dir) throws Exception {
        Path src = Fixtures.hf("mistral");
        Path m = dir.resolve("mistral-window8");
        Files.createDirectories(m);
        Files.copy(src.resolve("model.safetensors"), m.resolve("model.safetensors"));
        String cfg = Files.readString(src.resolve("config.json"));
        Files.writeString(m.resolve("config.json"), cfg.replace("\"sliding_window\": 4096", "\"sliding_window\": 8"));
        long[] ids = new long[30];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = (i * 37 + 5) % 128;
        }
        float[] ref;
        try (RuntimeModel rt = RuntimeModel.open(m, Device.CPU)) {
            ref = rt.run(new long[][] {ids}).get("logits").data();
        }
        float[] full;
        try (RuntimeModel rt = RuntimeModel.open(src, Device.CPU)) {
            full = rt.run(new long[][] {ids}).get("logits").data();
        }
        assertTrue(relErr(full, ref) > 1e-3, "the window changes the logits");
        try (Model model = Model.open(m)) {
            double e = relErr(ref, GradientNet.load(model).forward(ids).output());
            assertTrue(e < 1e-5, "windowed mistral relative error " + e);
        }
    }

    /**
     * For every weight tensor, the directional derivative along a random direction {@code u} (the tensor only):
     * {@code ∇L·u} from the backward pass against {@code (L(θ + εu) − L(θ − εu)) / 2ε} in float32, where {@code L =
     * Σ dOut ⊙ output} for a fixed random {@code dOut}. Tolerance 2e-2 relative: central differences in float32 with ε
     * = 1e-2/√n on outputs of order 1 carry rounding of about 1e-6·|L| / 2ε, added as an absolute floor (a key bias has
     * an exactly zero gradient: softmax ignores a shift shared by all keys).
     */
    @ParameterizedTest
    @ValueSource(strings = {"llama", "qwen2", "bert"})
    void gradientsMatchCentralDifferences(String family) {
        try (Model m = Model.open(Fixtures.hf(family))) {
            GradientNet net = GradientNet.load(m);
            Random r = new Random(11);
            long[] ids = new long[24];
            for (int i = 0; i < ids.length; i++) {
                ids[i] = r.nextInt(128);
            }
            GradientNet.Pass pass = net.forward(ids);
            float[] dOut = new float[pass.output().length];
            for (int i = 0; i < dOut.length; i++) {
                dOut[i] = (float) r.nextGaussian();
            }
            net.backward(pass, dOut);
            int checked = 0;
            for (Param p : net.params()) {
                float[] v = p.value();
                float[] u = new float[v.length];
                double analytic = 0;
                double norm = 0;
                for (int i = 0; i < u.length; i++) {
                    u[i] = (float) r.nextGaussian();
                    analytic += (double) p.grad()[i] * u[i];
                }
                float[] saved = v.clone();
                double eps = 1e-2 / Math.sqrt(u.length);
                for (int i = 0; i < u.length; i++) {
                    v[i] = (float) (saved[i] + eps * u[i]);
                }
                double plus = dot(net.forward(ids).output(), dOut);
                for (int i = 0; i < u.length; i++) {
                    v[i] = (float) (saved[i] - eps * u[i]);
                }
                double minus = dot(net.forward(ids).output(), dOut);
                System.arraycopy(saved, 0, v, 0, v.length);
                double numeric = (plus - minus) / (2 * eps);
                for (float g : p.grad()) {
                    norm += (double) g * g;
                }
                // Relative to the gradient's norm, plus the float32 rounding of L (≈1e-6·|L|) divided by 2ε.
                double tol = 2e-2 * Math.sqrt(norm) + 1e-6 * (Math.abs(plus) + Math.abs(minus)) / (2 * eps);
                assertEquals(
                        numeric,
                        analytic,
                        tol,
                        family + " " + p.weight().name() + ": analytic " + analytic + " numeric " + numeric);
                checked++;
            }
            assertEquals(net.params().size(), checked);
            assertTrue(checked > 10);
        }
    }

    private static double dot(float[] a, float[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) {
            s += (double) a[i] * b[i];
        }
        return s;
    }
}
