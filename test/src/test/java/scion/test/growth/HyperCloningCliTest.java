package scion.test.growth;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import scion.io.Json;
import scion.io.Model;
import scion.io.arch.Role;
import scion.test.Fixtures;
import scion.test.cli.CliRun;

/**
 * {@code scion grow --width}: what the output folder holds (tied heads stay tied, only the size fields of config.json
 * change, companion files and provenance travel), refusals (exit 3, nothing written), same seed ⇒ same bytes, and the
 * grown checkpoints loading in Hugging Face transformers.
 */
class HyperCloningCliTest {
    @TempDir
    Path tmp;

    static JsonNode readJson(Path p) throws IOException {
        return Json.mapper().readTree(Files.readString(p));
    }

    @ParameterizedTest
    @ValueSource(strings = {"qwen2", "gemma", "gpt2", "opt"})
    void tiedHeadsStayTied(String family) throws Exception {
        Path out = HyperCloningEquivalenceTest.grow(Fixtures.hf(family), tmp.resolve(family), "--width", "2");
        try (Model m = Model.open(out)) {
            assertTrue(m.graph().dims().tied(), "tied in config");
            assertTrue(m.graph().byRole(Role.LM_HEAD).isEmpty(), "no lm_head tensor");
            for (var t : m.checkpoint().tensors()) {
                assertFalse(t.name().startsWith("lm_head"), t.name());
            }
        }
    }

    @Test
    void configChangesOnlyTheSizeFields() throws Exception {
        Map<String, Set<String>> expected = Map.of(
                "llama",
                Set.of(
                        "hidden_size",
                        "intermediate_size",
                        "num_attention_heads",
                        "num_key_value_heads",
                        "_name_or_path"),
                "gpt2",
                Set.of("n_embd", "n_inner", "n_head", "_name_or_path"),
                "opt",
                Set.of("hidden_size", "ffn_dim", "num_attention_heads", "word_embed_proj_dim", "_name_or_path"),
                "qwen2",
                Set.of("hidden_size", "intermediate_size", "num_attention_heads", "_name_or_path"));
        for (Map.Entry<String, Set<String>> e : expected.entrySet()) {
            String family = e.getKey();
            String[] extra = family.equals("qwen2") ? new String[] {"--kv", "keep", "--ffn", "3"} : new String[0];
            String[] args =
                    Stream.concat(Stream.of("--width", "2"), Stream.of(extra)).toArray(String[]::new);
            Path out = HyperCloningEquivalenceTest.grow(Fixtures.hf(family), tmp.resolve("cfg-" + family), args);
            JsonNode before = readJson(Fixtures.hf(family).resolve("config.json"));
            JsonNode after = readJson(out.resolve("config.json"));
            Set<String> changed = new HashSet<>();
            Set<String> keys = new HashSet<>();
            before.fieldNames().forEachRemaining(keys::add);
            after.fieldNames().forEachRemaining(keys::add);
            for (String k : keys) {
                if (!before.path(k).equals(after.path(k))) {
                    changed.add(k);
                }
            }
            assertEquals(e.getValue(), changed, family);
            List<String> order = fieldOrder(after);
            assertEquals(fieldOrder(before), order.subList(0, fieldOrder(before).size()), "order kept");
            assertEquals("cfg-" + family, after.get("_name_or_path").asText());
        }
        JsonNode llama = readJson(tmp.resolve("cfg-llama/config.json"));
        assertEquals(128, llama.get("hidden_size").asInt());
        assertEquals(8, llama.get("num_attention_heads").asInt());
        assertEquals(4, llama.get("num_key_value_heads").asInt());
        assertEquals(16, llama.get("head_dim").asInt(), "explicit head_dim kept");
        JsonNode qwen = readJson(tmp.resolve("cfg-qwen2/config.json"));
        assertEquals(2, qwen.get("num_key_value_heads").asInt(), "--kv keep");
        assertEquals(384, qwen.get("intermediate_size").asInt(), "--ffn 3");
        assertTrue(Files.isRegularFile(tmp.resolve("cfg-llama/generation_config.json")), "companion files copied");
        JsonNode recipe = readJson(tmp.resolve("cfg-llama/scion-recipe.json"));
        assertEquals("grow", recipe.get("scion.operator").asText());
        assertTrue(recipe.get("scion.parameters").asText().contains("width=2"), recipe.toString());
        assertTrue(recipe.get("scion.parameters").asText().contains("noise_snr_db=20.0"), recipe.toString());
    }

    private static List<String> fieldOrder(JsonNode n) {
        List<String> out = new java.util.ArrayList<>();
        for (Iterator<String> it = n.fieldNames(); it.hasNext(); ) {
            out.add(it.next());
        }
        return out;
    }

    @Test
    void badFactorsAreRefusedAndNothingIsWritten() {
        String[][] cases = {
            {"llama", "--width", "1.5"},
            {"llama", "--width", "0"},
            {"llama", "--width", "2", "--ffn", "-1"},
            {"llama", "--width", "two"},
            {"gpt2", "--width", "2", "--kv", "keep"},
            {"llama", "--width", "2", "--kv", "some"},
            {"llama", "--width", "2", "--no-noise", "--noise-snr-db", "10"},
            {"llama"},
        };
        String[] reasons = {
            "4 heads × 1.5", "--width", "--ffn", "not a number", "--kv keep", "--kv", "--no-noise", "nothing to grow"
        };
        for (int i = 0; i < cases.length; i++) {
            Path out = tmp.resolve("bad" + i);
            String[] c = cases[i];
            String[] args = new String[c.length + 2];
            args[0] = "grow";
            args[1] = Fixtures.hf(c[0]).toString();
            args[2] = out.toString();
            System.arraycopy(c, 1, args, 3, c.length - 1);
            CliRun r = CliRun.of(args);
            assertEquals(3, r.code(), String.join(" ", c) + "\n" + r);
            assertTrue(r.err().contains(reasons[i]), r.err());
            assertFalse(r.err().contains("Exception"), "no stack trace: " + r.err());
            assertFalse(Files.exists(out), "nothing written for " + String.join(" ", c));
        }
        try (Stream<Path> s = Files.list(tmp)) {
            assertEquals(0, s.count(), "no staging left behind");
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    @Test
    void sameSeedSameBytes() throws Exception {
        Path src = Fixtures.hf("gpt_neox");
        Path a = HyperCloningEquivalenceTest.grow(src, tmp.resolve("a/out"), "--width", "2", "--seed", "3");
        Path b = HyperCloningEquivalenceTest.grow(src, tmp.resolve("b/out"), "--width", "2", "--seed", "3");
        Path c = HyperCloningEquivalenceTest.grow(src, tmp.resolve("c/out"), "--width", "2", "--seed", "4");
        byte[] ab = Files.readAllBytes(a.resolve("model.safetensors"));
        assertArrayEquals(ab, Files.readAllBytes(b.resolve("model.safetensors")));
        assertFalse(java.util.Arrays.equals(ab, Files.readAllBytes(c.resolve("model.safetensors"))));
        assertEquals(Files.readString(a.resolve("config.json")), Files.readString(b.resolve("config.json")));
    }

    /**
     * {@code --threads} changes nothing but the speed: the trained bf16 llama ([out, in] weights) and gpt2 ([in, out]
     * Conv1D weights, f32), grown with the default noise, give the same files for 1, 2 and 4 threads, provenance
     * included.
     */
    @Test
    void sameBytesForAnyThreadCount() throws Exception {
        for (Path src : List.of(Fixtures.trainedLm(), Fixtures.hf("gpt2"))) {
            String name = src.getFileName().toString();
            Path one = HyperCloningEquivalenceTest.grow(
                    src, tmp.resolve(name + "-t1/out"), "--width", "2", "--ffn", "3", "--threads", "1");
            byte[] expected = Files.readAllBytes(one.resolve("model.safetensors"));
            for (String threads : List.of("2", "4")) {
                Path out = HyperCloningEquivalenceTest.grow(
                        src,
                        tmp.resolve(name + "-t" + threads + "/out"),
                        "--width",
                        "2",
                        "--ffn",
                        "3",
                        "--threads",
                        threads);
                assertArrayEquals(
                        expected, Files.readAllBytes(out.resolve("model.safetensors")), name + ", " + threads);
            }
        }
        CliRun bad = CliRun.of(
                "grow",
                Fixtures.hf("llama").toString(),
                tmp.resolve("bad").toString(),
                "--width",
                "2",
                "--threads",
                "0");
        assertEquals(3, bad.code(), bad.toString());
        assertTrue(bad.err().contains("--threads"), bad.err());
        assertFalse(Files.exists(tmp.resolve("bad")));
    }

    @Test
    void existingOutputIsRefusedWithoutForce() throws IOException {
        Path out = tmp.resolve("exists");
        Files.createDirectories(out);
        Files.writeString(out.resolve("keep.txt"), "mine");
        CliRun r = CliRun.of("grow", Fixtures.hf("llama").toString(), out.toString(), "--width", "2");
        assertEquals(3, r.code(), r.toString());
        assertEquals("mine", Files.readString(out.resolve("keep.txt")));
    }

    /**
     * Grown causal LMs load in transformers and reproduce the source fixture's logits (1e-5 relative). One Python
     * process runs {@code check_hf_load.py} on every folder (importing torch once).
     */
    @Test
    void grownCheckpointsLoadInTransformers() throws Exception {
        Path python = Path.of(System.getProperty("scion.python", "/work/venv/bin/python"));
        assumeTrue(Files.isExecutable(python), "Python with transformers not available: interop check skipped");
        Path script = Fixtures.repoRoot().resolve("test/fixtures/check_hf_load.py");
        StringBuilder runs = new StringBuilder();
        for (String family : Fixtures.causalFamilies()) {
            Path out = HyperCloningEquivalenceTest.grow(
                    Fixtures.hf(family), tmp.resolve("hf-" + family), "--width", "2", "--ffn", "2");
            runs.append("(")
                    .append(pyString(out))
                    .append(", ")
                    .append(pyString(Fixtures.hf(family)))
                    .append("),");
        }
        String program = "import runpy, sys\n"
                + "failed = []\n"
                + "for out, ref in [" + runs + "]:\n"
                + "    sys.argv = [" + pyString(script) + ", out, '--reference', ref]\n"
                + "    print('==', out, flush=True)\n"
                + "    try:\n"
                + "        runpy.run_path(sys.argv[0], run_name='__main__')\n"
                + "        code = 0\n"
                + "    except SystemExit as e:\n"
                + "        code = e.code\n"
                + "    if code:\n"
                + "        failed.append(out)\n"
                + "sys.exit(1 if failed else 0)\n";
        Process p = new ProcessBuilder(python.toString(), "-c", program)
                .redirectErrorStream(true)
                .start();
        String log = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(300, TimeUnit.SECONDS), "python timed out");
        assertEquals(0, p.exitValue(), log);
        assertEquals(Fixtures.causalFamilies().size(), log.split("OK: rel diff", -1).length - 1, log);
    }

    private static String pyString(Path p) {
        return "'" + p.toAbsolutePath().toString().replace("\\", "\\\\").replace("'", "\\'") + "'";
    }
}
