package scion.test.prune;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import scion.io.Model;
import scion.io.arch.WeightGraph.Weight;
import scion.io.tensor.Tensor;
import scion.test.Fixtures;
import scion.test.cli.CliRun;

/**
 * {@code scion prune}: the metrics pick what their own reported tables say, the output is a real smaller checkpoint
 * (config.json, renumbered zero-copy tensors, provenance), the heatmap is a PNG, bad input writes nothing, and the
 * result loads in Hugging Face transformers as the same function as the source with those blocks deleted.
 */
class LayerDropCliTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    static Path shared;

    @TempDir
    Path tmp;

    private static Path english;
    private static Path tokenizer;

    @BeforeAll
    static void text() throws IOException {
        english = shared.resolve("bridges.txt");
        try (InputStream in = LayerDropCliTest.class.getResourceAsStream("/scion/demo/bridges.txt")) {
            Files.copy(in, english, StandardCopyOption.REPLACE_EXISTING);
        }
        tokenizer = shared.resolve("minilm-tokenizer.json");
        try (InputStream in = LayerDropCliTest.class.getResourceAsStream("/all-minilm-l6-v2-tokenizer.json")) {
            Files.copy(in, tokenizer, StandardCopyOption.REPLACE_EXISTING);
        }
    }

    private static JsonNode json(CliRun r) throws IOException {
        assertEquals(0, r.code(), r.toString());
        return JSON.readTree(r.out());
    }

    private static int[] ints(String list) {
        String[] p = list.split(",");
        int[] out = new int[p.length];
        for (int i = 0; i < p.length; i++) {
            out[i] = Integer.parseInt(p[i]);
        }
        return out;
    }

    /**
     * On all-MiniLM-L6-v2 and English text, each metric removes what the table it reports says: angular the
     * contiguous pair with the smallest d(l, 2), block-influence the two lowest BI, last blocks 3 and 4. The table is
     * complete (6 rows, row n has 7 − n values in [0, 1]), and d(l, 1) is consistent with BI (both compare the input
     * and output of one block).
     */
    @Test
    void eachMetricRemovesWhatItsTableSays() throws IOException {
        Path model = Fixtures.miniLmOnnx();
        JsonNode ang = json(CliRun.of(
                "prune",
                model.toString(),
                tmp.resolve("a.onnx").toString(),
                "--remove",
                "2",
                "--calib",
                english.toString(),
                "--calib-tokenizer",
                tokenizer.toString(),
                "--json"));
        JsonNode table = ang.get("angular_distance");
        assertEquals(6, table.size());
        int best = -1;
        for (int n = 1; n <= 6; n++) {
            JsonNode row = table.get(n - 1);
            for (int l = 0; l < 6; l++) {
                if (l + n <= 6) {
                    double d = row.get(l).asDouble();
                    assertTrue(d > 0 && d < 1, "d(" + l + ", " + n + ") = " + d);
                } else {
                    assertTrue(row.get(l).isNull());
                }
            }
        }
        for (int l = 0; l + 2 <= 6; l++) {
            if (best < 0
                    || table.get(1).get(l).asDouble() < table.get(1).get(best).asDouble()) {
                best = l;
            }
        }
        assertArrayEquals(new int[] {best, best + 1}, ints(ang.get("dropped").asText()), ang.toString());
        assertEquals("6 → 4", ang.get("layers").asText());

        JsonNode bi = json(CliRun.of(
                "prune",
                model.toString(),
                tmp.resolve("b.onnx").toString(),
                "--remove",
                "2",
                "--metric",
                "block-influence",
                "--calib",
                english.toString(),
                "--calib-tokenizer",
                tokenizer.toString(),
                "--json"));
        List<Integer> order = new ArrayList<>();
        for (int l = 0; l < 6; l++) {
            order.add(l);
        }
        JsonNode v = bi.get("block_influence");
        order.sort((a, b) -> Double.compare(v.get(a).asDouble(), v.get(b).asDouble()));
        int[] lowest = {Math.min(order.get(0), order.get(1)), Math.max(order.get(0), order.get(1))};
        assertArrayEquals(lowest, ints(bi.get("dropped").asText()), bi.toString());
        // BI_l = 1 − mean cos and d(l, 1) = mean arccos(cos)/π order the blocks alike when cosines are close to 1.
        int argminD1 = 0;
        for (int l = 1; l < 6; l++) {
            if (bi.get("angular_distance").get(0).get(l).asDouble()
                    < bi.get("angular_distance").get(0).get(argminD1).asDouble()) {
                argminD1 = l;
            }
        }
        assertEquals(order.get(0).intValue(), argminD1, bi.toString());

        JsonNode last = json(CliRun.of(
                "prune",
                model.toString(),
                tmp.resolve("c.onnx").toString(),
                "--remove",
                "2",
                "--metric",
                "last",
                "--json"));
        assertEquals("3,4", last.get("dropped").asText());
        assertFalse(last.has("angular_distance"), "no calibration, no table");
    }

    /**
     * A causal LM (the trained Rust-book llama, 8 blocks): angular distances at the last token of each calibration
     * sequence by default, over every token with --all-tokens; either way the removed pair is the argmin of the
     * reported row n = 2.
     */
    @Test
    void causalLmAngularUsesTheLastTokenUnlessAsked() throws IOException {
        Path model = Fixtures.trainedLm();
        for (boolean all : new boolean[] {false, true}) {
            List<String> args = new ArrayList<>(List.of(
                    "prune",
                    model.toString(),
                    tmp.resolve("t" + all).toString(),
                    "--remove",
                    "2",
                    "--calib",
                    model.resolve("calib.txt").toString(),
                    "--tokens",
                    "2048",
                    "--json"));
            if (all) {
                args.add("--all-tokens");
            }
            JsonNode j = json(CliRun.of(args.toArray(new String[0])));
            assertTrue(
                    j.get("calibration").asText().contains(all ? "over every token" : "at the last token of each"),
                    j.toString());
            JsonNode row = j.get("angular_distance").get(1);
            int best = 0;
            for (int l = 1; l + 2 <= 8; l++) {
                if (row.get(l).asDouble() < row.get(best).asDouble()) {
                    best = l;
                }
            }
            assertArrayEquals(new int[] {best, best + 1}, ints(j.get("dropped").asText()), j.toString());
            assertEquals("8 → 6", j.get("layers").asText());
        }
    }

    /**
     * Safetensors out: block 1 of the qwen2 fixture becomes block 0 byte for byte (stored tensors are renamed, not
     * recomputed), block 0 is gone, config.json says one layer (and its per-layer list has one entry), the companion
     * files come along, provenance names the operator.
     */
    /**
     * Models with a learned position table shorter than the default --calib-length (128): the tiny gpt2 and opt
     * fixtures have 64 positions (opt's table has 2 more rows before position 0). The calibration windows are capped
     * by the table, so the run succeeds (it once failed inside ONNX Runtime with a Gather index out of range).
     */
    @ParameterizedTest
    @ValueSource(strings = {"gpt2", "opt"})
    void calibrationWindowsStayWithinLearnedPositions(String family) throws IOException {
        Path out = tmp.resolve(family + "-pruned");
        JsonNode j = json(CliRun.of(
                "prune",
                Fixtures.hf(family).toString(),
                out.toString(),
                "--remove",
                "1",
                "--metric",
                "angular",
                "--calib",
                english.toString(),
                "--json"));
        assertEquals("2 → 1", j.get("layers").asText(), j.toString());
        java.util.regex.Matcher m = java.util.regex.Pattern.compile("(\\d+) tokens in (\\d+) sequences")
                .matcher(j.get("calibration").asText());
        assertTrue(m.find(), j.toString());
        long tokens = Long.parseLong(m.group(1));
        long sequences = Long.parseLong(m.group(2));
        assertTrue(
                tokens > 1000 && tokens <= 64 * sequences, j.get("calibration").asText());
        assertTrue(Files.exists(out.resolve("config.json")));
    }

    @Test
    void safetensorsOutputIsARealSmallerCheckpoint() throws IOException {
        Path src = Fixtures.hf("qwen2");
        Path out = tmp.resolve("qwen2-pruned");
        CliRun r = CliRun.of("prune", src.toString(), out.toString(), "--drop", "0");
        assertEquals(0, r.code(), r.toString());
        assertTrue(r.out().contains("layers           2 → 1"), r.out());
        JsonNode cfg = JSON.readTree(out.resolve("config.json").toFile());
        assertEquals(1, cfg.get("num_hidden_layers").asInt());
        JsonNode srcCfg = JSON.readTree(src.resolve("config.json").toFile());
        if (srcCfg.has("layer_types")) {
            assertEquals(1, cfg.get("layer_types").size());
            assertEquals(
                    srcCfg.get("layer_types").get(1), cfg.get("layer_types").get(0));
        }
        assertTrue(Files.exists(out.resolve("generation_config.json")));
        try (Model a = Model.open(src);
                Model b = Model.open(out)) {
            assertEquals(1, b.graph().dims().layers());
            int compared = 0;
            for (Weight w : b.graph().weights()) {
                assertTrue(w.layer() <= 0, w.name());
                String srcName = w.layer() == 0 ? w.name().replace("layers.0.", "layers.1.") : w.name();
                Tensor t = a.graph().find(srcName).orElseThrow().tensor();
                assertArrayEquals(t.toFloats(), w.tensor().toFloats(), w.name());
                compared++;
            }
            assertEquals(a.graph().weights().size() - a.graph().layer(0).size(), compared);
            assertEquals(
                    "prune",
                    b.checkpoint().metadata().get("scion.operator"),
                    b.checkpoint().metadata().toString());
        }
    }

    /** The d(l, n) heatmap is a PNG image of a readable size; it is written only with --calib. */
    @Test
    void plotIsAPng() throws IOException {
        Path png = tmp.resolve("d.png");
        CliRun r = CliRun.of(
                "prune",
                Fixtures.miniLmOnnx().toString(),
                tmp.resolve("p.onnx").toString(),
                "--drop",
                "4",
                "--calib",
                english.toString(),
                "--calib-tokenizer",
                tokenizer.toString(),
                "--plot",
                png.toString());
        assertEquals(0, r.code(), r.toString());
        BufferedImage img = ImageIO.read(png.toFile());
        assertTrue(img.getWidth() >= 400 && img.getHeight() >= 300, img.getWidth() + " × " + img.getHeight());
        assertTrue(r.out().contains("reason           given; d(4, 1) = 0."), r.out());
    }

    /** Bad input: exit code 3, one line naming the problem, nothing written. */
    @ParameterizedTest
    @ValueSource(
            strings = {
                "--drop 0,1|would remove every block",
                "--drop 2|--drop: block index out of range; expected 0..1, found 2",
                "--drop 1,1|--drop: block listed twice",
                "--drop x|not a list of block indices",
                "--remove 1|--metric angular: needs calibration activations",
                "--remove 1 --metric block-influence|--metric block-influence: needs calibration activations",
                "--remove 2 --metric last|--remove: number of blocks to remove out of range; expected 1..1",
                "--drop 0 --remove 1|exactly one of --drop",
                "--metric last|exactly one of --drop",
                "--drop 0 --metric last|--metric: applies to --remove",
                "--remove 1 --metric cosine|--metric: unknown metric",
                "--drop 0 --plot d.png|--plot: draws the calibrated distances",
                "--remove 1 --calib missing.txt|calibration text not found",
                "--drop 0 --shard-size 1KB --calib-length 1 --calib CAL|--calib-length: too short"
            })
    void badInputWritesNothing(String c) throws IOException {
        String[] parts = c.split("\\|");
        Path out = tmp.resolve("out");
        List<String> args =
                new ArrayList<>(List.of("prune", Fixtures.hf("llama").toString(), out.toString()));
        for (String a : parts[0].split(" ")) {
            args.add(
                    a.equals("CAL")
                            ? english.toString()
                            : a.endsWith(".png") || a.endsWith(".txt")
                                    ? tmp.resolve(a).toString()
                                    : a);
        }
        CliRun r = CliRun.of(args.toArray(new String[0]));
        assertEquals(3, r.code(), r.toString());
        assertTrue(r.err().contains(parts[1]), r.toString());
        assertEquals(1, r.err().strip().split("\n").length, r.err());
        try (var files = Files.list(tmp)) {
            assertEquals(List.of(), files.toList(), "nothing written");
        }
    }

    /** Output kinds must match the input, and an existing output is kept unless --force. */
    @Test
    void outputsAreCheckedBeforeAnythingRuns() throws IOException {
        CliRun r = CliRun.of(
                "prune", Fixtures.hf("llama").toString(), tmp.resolve("x.onnx").toString(), "--drop", "0");
        assertEquals(3, r.code(), r.toString());
        assertTrue(r.err().contains("needs its own config.json"), r.err());
        r = CliRun.of(
                "prune", Fixtures.miniLmOnnx().toString(), tmp.resolve("dir").toString(), "--drop", "0");
        assertEquals(3, r.code(), r.toString());
        assertTrue(r.err().contains("ONNX input prunes to ONNX"), r.err());
        Path existing = tmp.resolve("existing");
        Files.createDirectories(existing);
        Files.writeString(existing.resolve("keep.txt"), "mine");
        r = CliRun.of("prune", Fixtures.hf("llama").toString(), existing.toString(), "--drop", "0");
        assertEquals(3, r.code(), r.toString());
        assertTrue(r.err().contains("output already exists"), r.err());
        assertEquals("mine", Files.readString(existing.resolve("keep.txt")));
        assertFalse(Files.exists(tmp.resolve("x.onnx")) || Files.exists(tmp.resolve("dir")));
    }

    /**
     * The pruned checkpoints load in transformers with no missing or unexpected weights, and compute what the source
     * model computes with the same blocks deleted from its module list in PyTorch (1e-5 relative), for every family.
     */
    @Test
    void prunedCheckpointsLoadInTransformers() throws Exception {
        Path python = Path.of(System.getProperty("scion.python", "/work/venv/bin/python"));
        assumeTrue(Files.isExecutable(python), "Python with transformers not available: interop check skipped");
        StringBuilder runs = new StringBuilder();
        List<String> families = Fixtures.families();
        for (String family : families) {
            Path out = tmp.resolve("hf-" + family);
            CliRun r = CliRun.of("prune", Fixtures.hf(family).toString(), out.toString(), "--drop", "0");
            assertEquals(0, r.code(), r.toString());
            runs.append("(")
                    .append(py(out))
                    .append(", ")
                    .append(py(Fixtures.hf(family)))
                    .append("),");
        }
        String program = String.join(
                "\n",
                "import json, sys, torch",
                "from transformers import AutoConfig, AutoModel, AutoModelForCausalLM",
                "def load(d):",
                "    c = AutoConfig.from_pretrained(d)",
                "    causal = any(a.endswith('ForCausalLM') or a.endswith('LMHeadModel') for a in c.architectures or [])",
                "    cls = AutoModelForCausalLM if causal else AutoModel",
                "    m, info = cls.from_pretrained(d, dtype=torch.float32, attn_implementation='eager',"
                        + " output_loading_info=True)",
                "    bad = {k: v for k, v in info.items() if v and k in ('missing_keys', 'unexpected_keys',"
                        + " 'mismatched_keys')}",
                "    return m.eval(), causal, bad",
                "failed = 0",
                "for out, ref in [" + runs + "]:",
                "    pruned, causal, bad = load(out)",
                "    full, _, _ = load(ref)",
                "    n = full.config.num_hidden_layers",
                "    lists = [m for m in full.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n]",
                "    del lists[0][0]",
                // Gemma 2 picks each block's mask by its index in layer_types: the reference drops block 0's entry
                // too, so that every remaining block keeps its attention kind (as the pruned config.json says).
                "    if isinstance(getattr(full.config, 'layer_types', None), list) and len(full.config.layer_types) == n:",
                "        del full.config.layer_types[0]",
                "    ids = torch.tensor(json.load(open(ref + '/expected.json'))['inputs']['input_ids'])",
                "    kw = {'use_cache': False} if causal else {}",
                "    with torch.no_grad():",
                "        a = pruned(input_ids=ids, **kw)[0]",
                "        b = full(input_ids=ids, **kw)[0]",
                "    rel = float((a - b).abs().max() / b.abs().max())",
                "    ok = not bad and pruned.config.num_hidden_layers == n - 1 and rel <= 1e-5",
                "    failed += not ok",
                "    print(('OK' if ok else 'FAILED'), out, 'layers', pruned.config.num_hidden_layers, 'rel', rel, bad)",
                "sys.exit(1 if failed else 0)",
                "");
        Process p = new ProcessBuilder(python.toString(), "-c", program)
                .redirectErrorStream(true)
                .start();
        String log = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(300, TimeUnit.SECONDS), "python timed out");
        assertEquals(0, p.exitValue(), log);
        assertEquals(
                families.size(), log.lines().filter(l -> l.startsWith("OK ")).count(), log);
    }

    private static String py(Path p) {
        return "'" + p.toAbsolutePath().toString().replace("\\", "\\\\").replace("'", "\\'") + "'";
    }
}
