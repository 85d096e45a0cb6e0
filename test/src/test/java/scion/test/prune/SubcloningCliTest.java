package scion.test.prune;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.Json;
import scion.io.Model;
import scion.io.arch.Dims;
import scion.io.arch.WeightGraph.Weight;
import scion.io.runtime.Device;
import scion.io.runtime.RuntimeModel;
import scion.test.Fixtures;
import scion.test.cli.CliRun;

/**
 * {@code scion subclone} end to end on real files: the tiny llama fixture (safetensors and its PyTorch ONNX export),
 * all-MiniLM-L6-v2 (ONNX, graph kept) and the refusals. Weights are checked to be sub-matrices of the source's at one
 * shared residual index set, with norm scales × √(D/D'); ONNX Runtime runs every result.
 */
class SubcloningCliTest {
    @TempDir
    Path tmp;

    static Path text() {
        return Fixtures.repoRoot().resolve("cli/src/main/resources/scion/demo/bridges.txt");
    }

    static CliRun subclone(Path in, Path out, String... extra) {
        String[] args = new String[4 + extra.length + 2];
        args[0] = "subclone";
        args[1] = in.toString();
        args[2] = out.toString();
        args[3] = "--calib";
        args[4] = text().toString();
        args[5] = "--json";
        System.arraycopy(extra, 0, args, 6, extra.length);
        return CliRun.of(args);
    }

    /** MiniLM's tokenizer (a resource of the model jar), copied to a file. */
    Path miniLmTokenizer() throws java.io.IOException {
        Path f = tmp.resolve("minilm-tokenizer.json");
        if (!Files.exists(f)) {
            try (java.io.InputStream in = getClass().getResourceAsStream("/all-minilm-l6-v2-tokenizer.json")) {
                Files.copy(in, f);
            }
        }
        return f;
    }

    private static float[] floats(Model m, String name) {
        return m.graph().find(name).orElseThrow().tensor().toFloats();
    }

    /** The source column of each output column of a [rows, cols] matrix, by exact equality (float32 fixture). */
    private static int[] columnMap(float[] src, int srcCols, float[] out, int outCols, int rows) {
        int[] map = new int[outCols];
        for (int c = 0; c < outCols; c++) {
            map[c] = -1;
            for (int s = 0; s < srcCols && map[c] < 0; s++) {
                boolean same = true;
                for (int r = 0; r < rows && same; r++) {
                    same = out[r * outCols + c] == src[r * srcCols + s];
                }
                if (same) {
                    map[c] = s;
                }
            }
        }
        return map;
    }

    @Test
    void llamaHalfWidthIsSubMatricesAtOneResidualIndexSet() throws Exception {
        Path out = tmp.resolve("half");
        CliRun r = subclone(Fixtures.hf("llama"), out, "--hidden", "32");
        assertEquals(0, r.code(), r.toString());
        JsonNode report = Json.mapper().readTree(r.out());
        assertEquals("64 → 32", report.get("hidden").asText());
        assertEquals("4 → 2 (head_dim 16)", report.get("heads").asText());
        try (Model src = Model.open(Fixtures.hf("llama"));
                Model dst = Model.open(out)) {
            Dims d = dst.graph().dims();
            assertEquals(
                    List.of(32, 2, 2, 1, 16, 64),
                    List.of(d.hidden(), d.layers(), d.heads(), d.kvHeads(), d.headDim(), d.ffn()));
            JsonNode cfg = Json.mapper().readTree(out.resolve("config.json").toFile());
            assertEquals(16, cfg.get("head_dim").asInt());
            assertEquals(1, cfg.get("num_key_value_heads").asInt());
            // The residual index set, read off the embedding: 32 distinct source columns in increasing order.
            float[] e = floats(src, "model.embed_tokens.weight");
            float[] eo = floats(dst, "model.embed_tokens.weight");
            int[] keep = columnMap(e, 64, eo, 32, 128);
            for (int i = 0; i < keep.length; i++) {
                assertTrue(keep[i] >= 0 && (i == 0 || keep[i] > keep[i - 1]), Arrays.toString(keep));
            }
            // The same set on every residual axis: lm_head columns, o_proj and down_proj rows, norm entries × √2.
            assertArrayEquals(
                    keep, columnMap(floats(src, "lm_head.weight"), 64, floats(dst, "lm_head.weight"), 32, 128));
            double s = Math.sqrt(2);
            for (String norm : List.of(
                    "model.norm.weight",
                    "model.layers.1.input_layernorm.weight",
                    "model.layers.0.post_attention_layernorm.weight")) {
                float[] a = floats(src, norm);
                float[] b = floats(dst, norm);
                for (int i = 0; i < 32; i++) {
                    assertEquals(a[keep[i]] * s, b[i], 1e-6 * Math.abs(a[keep[i]] * s), norm + "[" + i + "]");
                }
            }
            for (int l = 0; l < 2; l++) {
                // q_proj [heads × 16, 64] → [2 × 16, 32]: whole query heads of one kv group, kept columns.
                float[] q = floats(src, "model.layers." + l + ".self_attn.q_proj.weight");
                float[] qo = floats(dst, "model.layers." + l + ".self_attn.q_proj.weight");
                float[] k = floats(src, "model.layers." + l + ".self_attn.k_proj.weight");
                float[] ko = floats(dst, "model.layers." + l + ".self_attn.k_proj.weight");
                int group = -1;
                for (int g = 0; g < 2; g++) {
                    boolean match = true;
                    for (int row = 0; row < 32 && match; row++) {
                        for (int c = 0; c < 32 && match; c++) {
                            match = qo[row * 32 + c] == q[(g * 32 + row) * 64 + keep[c]];
                        }
                    }
                    if (match) {
                        group = g;
                    }
                }
                assertTrue(group >= 0, "layer " + l + ": q_proj rows are not the two heads of one kv group");
                for (int row = 0; row < 16; row++) {
                    for (int c = 0; c < 32; c++) {
                        assertEquals(k[(group * 16 + row) * 64 + keep[c]], ko[row * 32 + c], "k_proj of its group");
                    }
                }
                // down_proj [64, 128] → [32, 64]: kept residual rows; its columns are a subset of the neurons and
                // the same neurons as up_proj's rows.
                float[] down = floats(src, "model.layers." + l + ".mlp.down_proj.weight");
                float[] downo = floats(dst, "model.layers." + l + ".mlp.down_proj.weight");
                float[] rowsKept = new float[32 * 128];
                for (int i = 0; i < 32; i++) {
                    System.arraycopy(down, keep[i] * 128, rowsKept, i * 128, 128);
                }
                int[] neurons = columnMap(rowsKept, 128, downo, 64, 32);
                float[] up = floats(src, "model.layers." + l + ".mlp.up_proj.weight");
                float[] upo = floats(dst, "model.layers." + l + ".mlp.up_proj.weight");
                for (int n = 0; n < 64; n++) {
                    assertTrue(neurons[n] >= 0 && (n == 0 || neurons[n] > neurons[n - 1]), Arrays.toString(neurons));
                    assertEquals(up[neurons[n] * 64 + keep[5]], upo[n * 32 + 5], "up_proj row of neuron " + n);
                }
            }
        }
        // ONNX Runtime runs the result; transformers loads it (SubcloningInteropTest).
        try (RuntimeModel rm = RuntimeModel.open(out, Device.CPU)) {
            float[] logits =
                    rm.run(new long[][] {{1, 5, 9, 33, 70, 2}}).get("logits").data();
            assertEquals(6 * 128, logits.length);
            for (float v : logits) {
                assertTrue(Float.isFinite(v));
            }
        }
    }

    @Test
    void withoutRescaleNormsAreCopiedAndLayersAreRemoved() throws Exception {
        Path out = tmp.resolve("thin");
        CliRun r = subclone(
                Fixtures.hf("llama"),
                out,
                "--hidden",
                "48",
                "--heads",
                "4",
                "--ffn",
                "100",
                "--layers",
                "1",
                "--no-rescale",
                "--metric",
                "last");
        assertEquals(0, r.code(), r.toString());
        try (Model src = Model.open(Fixtures.hf("llama"));
                Model dst = Model.open(out)) {
            Dims d = dst.graph().dims();
            assertEquals(
                    List.of(48, 1, 4, 2, 16, 100),
                    List.of(d.hidden(), d.layers(), d.heads(), d.kvHeads(), d.headDim(), d.ffn()));
            // 'last' removes the blocks right before the final one: of 2 blocks, block 0 goes and block 1 stays.
            int[] keep = columnMap(
                    floats(src, "model.embed_tokens.weight"), 64, floats(dst, "model.embed_tokens.weight"), 48, 128);
            float[] a = floats(src, "model.layers.1.input_layernorm.weight");
            float[] b = floats(dst, "model.layers.0.input_layernorm.weight");
            for (int i = 0; i < 48; i++) {
                assertEquals(a[keep[i]], b[i], 0f, "norm copied without rescaling from source block 1");
            }
            assertFalse(
                    dst.graph().find("model.layers.1.input_layernorm.weight").isPresent());
            // head_dim 16 × 4 heads = 64 ≠ 48: q_proj keeps all heads, o_proj reads them.
            Weight o =
                    dst.graph().find("model.layers.0.self_attn.o_proj.weight").orElseThrow();
            assertArrayEquals(new long[] {48, 64}, o.tensor().shape());
        }
    }

    @Test
    void onnxExportGivesTheSameModelAsItsSafetensorsTwin() throws Exception {
        // fixtures/onnx/llama.onnx is fixtures/hf/llama exported by torch.onnx (anonymous [in, out] MatMul weights).
        Path st = tmp.resolve("st");
        Path ox = tmp.resolve("ox.onnx");
        assertEquals(0, subclone(Fixtures.hf("llama"), st, "--hidden", "32").code());
        CliRun r = subclone(Fixtures.resource("onnx/llama.onnx"), ox, "--hidden", "32");
        assertEquals(0, r.code(), r.toString());
        long[][] ids = {{1, 17, 42, 99, 3, 64, 120, 7, 8, 9}, {5, 4, 3, 2, 1, 0, 10, 20, 30, 40}};
        try (RuntimeModel a = RuntimeModel.open(st, Device.CPU);
                RuntimeModel b = RuntimeModel.open(ox, Device.CPU)) {
            float[] x = a.run(ids).get("logits").data();
            float[] y = b.run(ids).get("logits").data();
            assertEquals(x.length, y.length);
            double max = 0;
            double ref = 0;
            for (int i = 0; i < x.length; i++) {
                max = Math.max(max, Math.abs(x[i] - y[i]));
                ref = Math.max(ref, Math.abs(x[i]));
            }
            // Same plan, same float32 sub-matrices: only the two graphs' float32 op order differs.
            assertTrue(max <= 1e-5 * ref, "max |Δ| " + max + " of max |logit| " + ref);
        }
    }

    @Test
    void miniLmOnnxKeepsItsGraphAndRunsInOnnxRuntime() throws Exception {
        Path src = Fixtures.miniLmOnnx();
        Path out = tmp.resolve("minilm-256.onnx");
        CliRun r = subclone(
                src,
                out,
                "--hidden",
                "256",
                "--heads",
                "8",
                "--ffn",
                "1024",
                "--calib-tokenizer",
                miniLmTokenizer().toString());
        assertEquals(0, r.code(), r.toString());
        JsonNode report = Json.mapper().readTree(r.out());
        assertEquals("101 initializers sliced", report.get("weights").asText());
        // 6 layers × (3 head splits 12 → 8 + 1 head merge 384 → 256) + the output's static 384
        assertTrue(report.get("constants").asText().startsWith("25 "), report.toString());
        try (Model m = Model.open(out);
                Model s = Model.open(src)) {
            Dims d = m.graph().dims();
            assertEquals(
                    List.of(256, 6, 8, 32, 1024), List.of(d.hidden(), d.layers(), d.heads(), d.headDim(), d.ffn()));
            assertEquals(
                    s.onnx().orElseThrow().inputNames(), m.onnx().orElseThrow().inputNames());
            assertEquals(
                    s.onnx().orElseThrow().outputNames(), m.onnx().orElseThrow().outputNames());
            assertEquals(
                    s.onnx().orElseThrow().proto().getGraph().getNodeCount(),
                    m.onnx().orElseThrow().proto().getGraph().getNodeCount());
        }
        try (RuntimeModel rm = RuntimeModel.open(out, Device.CPU)) {
            Map<String, RuntimeModel.Output> o = rm.run(new long[][] {{101, 7592, 2088, 2003, 1037, 3231, 102}});
            RuntimeModel.Output h = o.get("last_hidden_state");
            assertArrayEquals(new long[] {1, 7, 256}, h.shape());
            for (float v : h.data()) {
                assertTrue(Float.isFinite(v));
            }
        }
    }

    @Test
    void impossibleShapesAreRefusedAndNothingIsWritten() throws Exception {
        Path out = tmp.resolve("never");
        CliRun wide = subclone(Fixtures.hf("llama"), out, "--hidden", "65");
        assertEquals(3, wide.code(), wide.toString());
        assertTrue(wide.err().contains("1 ≤ D' ≤ 64"), wide.err());
        CliRun gqa = subclone(Fixtures.hf("llama"), out, "--hidden", "32", "--heads", "3");
        assertEquals(3, gqa.code(), gqa.toString());
        assertTrue(gqa.err().contains("expected a multiple of 2"), gqa.err());
        CliRun bert = subclone(
                Fixtures.miniLmOnnx(),
                tmp.resolve("x.onnx"),
                "--hidden",
                "256",
                "--heads",
                "6",
                "--calib-tokenizer",
                miniLmTokenizer().toString());
        assertEquals(3, bert.code(), bert.toString());
        assertTrue(bert.err().contains("hint: --heads 8"), bert.err());
        CliRun depth = subclone(
                Fixtures.miniLmOnnx(),
                tmp.resolve("y.onnx"),
                "--hidden",
                "256",
                "--layers",
                "4",
                "--calib-tokenizer",
                miniLmTokenizer().toString());
        assertEquals(3, depth.code(), depth.toString());
        CliRun noCalib = CliRun.of("subclone", Fixtures.hf("llama").toString(), out.toString(), "--hidden", "32");
        assertEquals(3, noCalib.code(), noCalib.toString());
        assertFalse(Files.exists(out));
        assertFalse(Files.exists(tmp.resolve("x.onnx")));
        assertFalse(Files.exists(tmp.resolve("y.onnx")));
    }
}
