package scion.io.runtime.export.bench;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtSession;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.FloatBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import scion.io.Model;
import scion.io.runtime.export.OnnxExporter;

/**
 * Checks the export of model variants the committed fixtures do not cover (RoPE scaling, sliding windows, OPT post-LN,
 * gpt2 per-layer attention scale, sequential GPT-NeoX, biases, left padding) against outputs recorded by Hugging Face
 * transformers; driven by {@code test/bench/export-variants.sh}, which generates the variants with Python. Not a unit
 * test: it needs the Python venv.
 *
 * <p>Each sub-folder of {@code DIR} holds a checkpoint and {@code variant.json} ({@code input_ids}, {@code
 * attention_mask}, {@code output}, flattened {@code data}). Prints {@code max|Δ| / max|ref|} over all positions and
 * over the real (unmasked) tokens; exit 1 when a real-token error is above 1e-4.
 */
public final class ExportVariantsCheck {
    private ExportVariantsCheck() {}

    public static void main(String[] args) throws Exception {
        ObjectMapper json = new ObjectMapper();
        OrtEnvironment env = OrtEnvironment.getEnvironment();
        int failed = 0;
        List<Path> dirs;
        try (Stream<Path> s = Files.list(Path.of(args[0]))) {
            dirs = s.filter(p -> Files.exists(p.resolve("variant.json")))
                    .sorted()
                    .collect(Collectors.toList());
        }
        System.out.println("| variant | all positions | real tokens |");
        for (Path dir : dirs) {
            JsonNode v = json.readTree(dir.resolve("variant.json").toFile());
            long[][] ids = longs(v.get("input_ids"));
            long[][] mask = longs(v.get("attention_mask"));
            try (Model model = Model.open(dir);
                    OrtSession.SessionOptions o = new OrtSession.SessionOptions()) {
                OnnxExporter.Exported e = OnnxExporter.export(model, OnnxExporter.Options.defaults());
                try (OrtSession s = OnnxExporter.openSession(env, e, o)) {
                    Map<String, OnnxTensor> in = new LinkedHashMap<>();
                    in.put("input_ids", OnnxTensor.createTensor(env, ids));
                    in.put("attention_mask", OnnxTensor.createTensor(env, mask));
                    if (e.inputNames().contains("token_type_ids")) {
                        in.put("token_type_ids", OnnxTensor.createTensor(env, new long[ids.length][ids[0].length]));
                    }
                    try (OrtSession.Result r = s.run(in)) {
                        FloatBuffer out =
                                ((OnnxTensor) r.get(v.get("output").asText()).orElseThrow()).getFloatBuffer();
                        JsonNode ref = v.get("data");
                        int positions = ids.length * ids[0].length;
                        int width = ref.size() / positions;
                        double maxDiff = 0;
                        double maxReal = 0;
                        double maxRef = 0;
                        for (int i = 0; i < ref.size(); i++) {
                            double d = Math.abs(out.get(i) - ref.get(i).asDouble());
                            int p = i / width;
                            maxDiff = Math.max(maxDiff, d);
                            if (mask[p / ids[0].length][p % ids[0].length] == 1) {
                                maxReal = Math.max(maxReal, d);
                            }
                            maxRef = Math.max(maxRef, Math.abs(ref.get(i).asDouble()));
                        }
                        boolean ok = maxReal / maxRef <= 1e-4;
                        failed += ok ? 0 : 1;
                        System.out.printf(
                                Locale.ROOT,
                                "| %s | %.2e | %.2e%s |%n",
                                dir.getFileName(),
                                maxDiff / maxRef,
                                maxReal / maxRef,
                                ok ? "" : " FAIL");
                    } finally {
                        for (OnnxTensor t : in.values()) {
                            t.close();
                        }
                    }
                }
            } catch (RuntimeException ex) {
                failed++;
                System.out.println("| " + dir.getFileName() + " | refused: " + ex.getMessage() + " | |");
            }
        }
        System.exit(failed == 0 ? 0 : 1);
    }

    private static long[][] longs(JsonNode n) {
        long[][] out = new long[n.size()][];
        for (int i = 0; i < n.size(); i++) {
            out[i] = new long[n.get(i).size()];
            for (int j = 0; j < out[i].length; j++) {
                out[i][j] = n.get(i).get(j).asLong();
            }
        }
        return out;
    }
}
