package scion.test.prune;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.Json;
import scion.io.runtime.Device;
import scion.io.runtime.RuntimeModel;
import scion.test.Fixtures;
import scion.test.cli.CliRun;

/**
 * Subcloned checkpoints load in Hugging Face transformers (no missing, unexpected or shape-mismatched weights) and
 * transformers' logits equal ONNX Runtime's on our export of the same folder: the tiny llama at two shapes, mistral,
 * qwen2, gemma, gpt2, gpt_neox and opt with a block removed, and the trained Rust-book llama at half width (bf16). Skipped without /work/venv (CI
 * has no Python).
 */
class SubcloningInteropTest {
    @TempDir
    Path tmp;

    @Test
    void subclonedCheckpointsLoadInTransformers() throws Exception {
        Path python = Path.of(System.getProperty("scion.python", "/work/venv/bin/python"));
        assumeTrue(Files.isExecutable(python), "Python with transformers not available: interop check skipped");
        List<Path> outs = new ArrayList<>();
        Path llama = tmp.resolve("llama-32");
        assertEquals(
                0,
                SubcloningCliTest.subclone(Fixtures.hf("llama"), llama, "--hidden", "32")
                        .code());
        outs.add(llama);
        Path thin = tmp.resolve("llama-48-1");
        CliRun r = SubcloningCliTest.subclone(
                Fixtures.hf("llama"), thin, "--hidden", "48", "--heads", "4", "--ffn", "100", "--layers", "1");
        assertEquals(0, r.code(), r.toString());
        outs.add(thin);
        // gpt2 (fused [in, out] c_attn), gpt_neox (per-head fused QKV), opt (word_embed_proj_dim): 64 positions, so
        // calibration sequences of 32 tokens.
        for (String family : List.of("mistral", "qwen2", "gemma", "gpt2", "gpt_neox", "opt")) {
            Path o = tmp.resolve(family);
            CliRun c = SubcloningCliTest.subclone(
                    Fixtures.hf(family), o, "--hidden", "32", "--layers", "1", "--calib-length", "32");
            assertEquals(0, c.code(), c.toString());
            outs.add(o);
        }
        Path trained = tmp.resolve("rustbook-64");
        CliRun t = CliRun.of(
                "subclone",
                Fixtures.trainedLm().toString(),
                trained.toString(),
                "--hidden",
                "64",
                "--calib",
                Fixtures.trainedLm().resolve("calib.txt").toString(),
                "--tokens",
                "2048");
        assertEquals(0, t.code(), t.toString());
        outs.add(trained);
        long[][] ids = {{1, 17, 42, 99, 3, 64, 120, 7}};
        StringBuilder dirs = new StringBuilder();
        for (Path p : outs) {
            dirs.append("'").append(p.toAbsolutePath()).append("',");
        }
        String program = "import json, torch\n"
                + "from transformers import AutoModelForCausalLM\n"
                + "out = {}\n"
                + "for d in [" + dirs + "]:\n"
                + "    m, info = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32,"
                + " attn_implementation='eager', output_loading_info=True)\n"
                + "    bad = {k: v for k, v in info.items() if v and k in ('missing_keys', 'unexpected_keys',"
                + " 'mismatched_keys')}\n"
                + "    assert not bad, (d, bad)\n"
                + "    with torch.no_grad():\n"
                + "        out[d] = m(torch.tensor(" + java.util.Arrays.deepToString(ids)
                + ")).logits.flatten().tolist()\n"
                + "print(json.dumps(out))\n";
        Process p = new ProcessBuilder(python.toString(), "-c", program).start();
        String stdout = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        String stderr = new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(300, TimeUnit.SECONDS), "python timed out");
        assertEquals(0, p.exitValue(), stderr);
        JsonNode got = Json.mapper().readTree(stdout.substring(stdout.lastIndexOf("\n{") + 1));
        for (Path o : outs) {
            JsonNode hf = got.get(o.toAbsolutePath().toString());
            try (RuntimeModel rm = RuntimeModel.open(o, Device.CPU)) {
                float[] ours = rm.run(ids).get("logits").data();
                assertEquals(ours.length, hf.size(), o.toString());
                double max = 0;
                double ref = 0;
                for (int i = 0; i < ours.length; i++) {
                    max = Math.max(max, Math.abs(ours[i] - hf.get(i).asDouble()));
                    ref = Math.max(ref, Math.abs(hf.get(i).asDouble()));
                }
                // The export matches transformers within 1e-6 relative on the fixtures (README); 1e-5 leaves margin.
                assertTrue(max <= 1e-5 * ref, o + ": max |Δ| " + max + " of max |logit| " + ref);
            }
        }
    }
}
