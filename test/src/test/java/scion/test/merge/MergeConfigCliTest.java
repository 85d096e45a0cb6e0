package scion.test.merge;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.Model;
import scion.test.Fixtures;
import scion.test.cli.CliRun;

/** mergekit YAML through {@code scion merge}: slices, gradients, filters, precedence, and the refusals. */
class MergeConfigCliTest {
    @TempDir
    Path tmp;

    final Path ft1 = Fixtures.resource("merge/llama-ft1");
    final Path ft2 = Fixtures.resource("merge/llama-ft2");
    final Path ft3 = Fixtures.resource("merge/llama-ft3");

    /**
     * A frankenmerge with a gradient and a filter: slice 1 blends ft1 and ft2 over their two blocks with attention
     * weights following the gradients [0.9, 0.1] / [0.1, 0.9] (filter {@code self_attn}) and every other tensor at
     * 0.5 / 0.5; slice 2 appends ft3's block 1 alone. Expected per block: block 0 attention 0.9·ft1 + 0.1·ft2, block 1
     * attention 0.1·ft1 + 0.9·ft2, MLPs and norms halves, block 2 = ft3's block 1 bit for bit; the embedding (before
     * the blocks) comes from slice 1 at 0.5/0.5 and the final norm and head (after them) from slice 2, i.e. ft3's.
     */
    @Test
    void slicesWithGradientAndFilterGiveTheExpectedPerLayerMix() throws Exception {
        Path cfg = write(
                "franken.yml",
                "merge_method: linear\n"
                        + "slices:\n"
                        + "  - sources:\n"
                        + "      - model: " + ft1 + "\n"
                        + "        layer_range: [0, 2]\n"
                        + "        parameters:\n"
                        + "          weight:\n"
                        + "            - filter: self_attn\n"
                        + "              value: [0.9, 0.1]\n"
                        + "            - value: 0.5\n"
                        + "      - model: " + ft2 + "\n"
                        + "        layer_range: [0, 2]\n"
                        + "        parameters:\n"
                        + "          weight:\n"
                        + "            - filter: self_attn\n"
                        + "              value: [0.1, 0.9]\n"
                        + "            - value: 0.5\n"
                        + "  - sources:\n"
                        + "      - model: " + ft3 + "\n"
                        + "        layer_range: [1, 2]\n"
                        + "parameters:\n"
                        + "  weight: 1.0\n"
                        + "dtype: float32\n");
        Path out = tmp.resolve("franken");
        CliRun r = CliRun.of("merge", cfg.toString(), out.toString(), "--json");
        assertEquals(0, r.code(), r.toString());
        assertTrue(r.out().replace(" ", "").contains("\"layers\":3"), r.out());
        Map<String, float[]> a = MergeReferenceTest.read(ft1);
        Map<String, float[]> b = MergeReferenceTest.read(ft2);
        Map<String, float[]> c = MergeReferenceTest.read(ft3);
        Map<String, float[]> o = MergeReferenceTest.read(out);
        assertEquals(3 * 9 + 3, o.size(), o.keySet().toString());
        double max = 0;
        for (int layer = 0; layer < 2; layer++) {
            String p = "model.layers." + layer + ".";
            for (String n : a.keySet()) {
                if (!n.startsWith(p)) {
                    continue;
                }
                double wa = n.contains("self_attn") ? (layer == 0 ? 0.9 : 0.1) : 0.5;
                double wb = n.contains("self_attn") ? (layer == 0 ? 0.1 : 0.9) : 0.5;
                float[] got = o.get(n);
                for (int i = 0; i < got.length; i++) {
                    double e = (wa * a.get(n)[i] + wb * b.get(n)[i]) / (wa + wb);
                    max = Math.max(max, Math.abs(got[i] - e));
                }
            }
        }
        System.out.println("slices + gradient + filter: blocks 0-1 vs the expected per-layer mix, max |diff| " + max);
        assertTrue(max < 1e-6, "blocks 0-1 vs the expected mix: max |diff| " + max);
        for (String n : c.keySet()) {
            if (n.startsWith("model.layers.1.")) {
                assertArrayEquals(c.get(n), o.get(n.replace("model.layers.1.", "model.layers.2.")), n);
            }
        }
        assertArrayEquals(c.get("model.norm.weight"), o.get("model.norm.weight"));
        assertArrayEquals(c.get("lm_head.weight"), o.get("lm_head.weight"));
        float[] emb = o.get("model.embed_tokens.weight");
        for (int i = 0; i < emb.length; i++) {
            assertEquals(
                    0.5 * a.get("model.embed_tokens.weight")[i] + 0.5 * b.get("model.embed_tokens.weight")[i],
                    emb[i],
                    1e-7);
        }
        try (Model m = Model.open(out)) {
            assertEquals(3, m.graph().dims().layers());
        }
        assertTrue(Files.exists(out.resolve("mergekit_config.yml")));
        assertTrue(Files.readString(out.resolve("scion-recipe.json"))
                .replace(" ", "")
                .contains("\"scion.operator\":\"merge\""));
        // the frankenmerge loads in transformers as a 3-block llama and gives finite logits (skipped without Python)
        Path python = Path.of(System.getProperty("scion.python", "/work/venv/bin/python"));
        if (Files.isExecutable(python)) {
            Process pr = new ProcessBuilder(
                            python.toString(),
                            "-c",
                            "import sys, torch\n"
                                    + "from transformers import AutoModelForCausalLM\n"
                                    + "m = AutoModelForCausalLM.from_pretrained(sys.argv[1])\n"
                                    + "x = m(torch.tensor([[1, 5, 9, 3]])).logits\n"
                                    + "assert m.config.num_hidden_layers == 3 and torch.isfinite(x).all()\n"
                                    + "print('ok', tuple(x.shape))\n",
                            out.toString())
                    .redirectErrorStream(true)
                    .start();
            String log = new String(pr.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
            assertEquals(0, pr.waitFor(), log);
            assertTrue(log.contains("ok (1, 4, 128)"), log);
        }
    }

    /**
     * Gradients on the weights outside the blocks read position 0, as current mergekit does: with ft1's weight
     * [1, 0] and ft2's [0, 1] over two blocks, block 0 is ft1, block 1 is ft2, and the embedding, the final norm and
     * the head are all ft1's (at position 1 they would be ft2's), bit for bit.
     */
    @Test
    void gradientsReadPositionZeroOutsideTheBlocks() {
        Path cfg = write(
                "grad.yml",
                "merge_method: linear\nmodels:\n  - model: " + ft1 + "\n    parameters: {weight: [1, 0]}\n"
                        + "  - model: " + ft2 + "\n    parameters: {weight: [0, 1]}\n");
        Path out = tmp.resolve("grad");
        CliRun r = CliRun.of("merge", cfg.toString(), out.toString());
        assertEquals(0, r.code(), r.toString());
        Map<String, float[]> a = MergeReferenceTest.read(ft1);
        Map<String, float[]> b = MergeReferenceTest.read(ft2);
        Map<String, float[]> o = MergeReferenceTest.read(out);
        for (String n : a.keySet()) {
            Map<String, float[]> want = n.startsWith("model.layers.1.") ? b : a;
            assertArrayEquals(want.get(n), o.get(n), n);
        }
        for (String n : new String[] {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}) {
            assertFalse(java.util.Arrays.equals(a.get(n), b.get(n)), n + " differs between ft1 and ft2");
        }
    }

    /**
     * Passthrough frankenmerge: ft1's blocks 0-1 then ft2's block 1 (renumbered 2), bit for bit, with a scaled
     * block: a {@code scale} on ft2's MLP multiplies exactly those tensors.
     */
    @Test
    void passthroughSlicesStackBlocksBitForBit() {
        Path cfg = write(
                "pass.yml",
                "merge_method: passthrough\nslices:\n"
                        + "  - sources:\n      - model: " + ft1 + "\n        layer_range: [0, 2]\n"
                        + "  - sources:\n      - model: " + ft2 + "\n        layer_range: [1, 2]\n"
                        + "        parameters:\n          scale:\n            - filter: mlp\n              value: 0.5\n"
                        + "            - value: 1.0\n");
        Path out = tmp.resolve("pass");
        CliRun r = CliRun.of("merge", cfg.toString(), out.toString());
        assertEquals(0, r.code(), r.toString());
        Map<String, float[]> a = MergeReferenceTest.read(ft1);
        Map<String, float[]> b = MergeReferenceTest.read(ft2);
        Map<String, float[]> o = MergeReferenceTest.read(out);
        for (String n : a.keySet()) {
            if (n.startsWith("model.layers.")) {
                assertArrayEquals(a.get(n), o.get(n), n);
            }
            if (n.startsWith("model.layers.1.")) {
                float[] want = b.get(n).clone();
                if (n.contains("mlp")) {
                    for (int i = 0; i < want.length; i++) {
                        want[i] *= 0.5f;
                    }
                }
                assertArrayEquals(want, o.get(n.replace("model.layers.1.", "model.layers.2.")), n);
            }
        }
        assertArrayEquals(a.get("model.embed_tokens.weight"), o.get("model.embed_tokens.weight"));
        assertArrayEquals(b.get("lm_head.weight"), o.get("lm_head.weight"));
    }

    /** A tied model (gemma) stays tied: no lm_head is written, the embedding is merged once, config unchanged. */
    @Test
    void tiedEmbeddingsStayTied() {
        Path out = tmp.resolve("tied");
        Path g = Fixtures.hf("gemma");
        CliRun r = CliRun.of("merge", "--method", "linear", g.toString(), g.toString(), out.toString());
        assertEquals(0, r.code(), r.toString());
        try (Model m = Model.open(out)) {
            assertTrue(m.graph().dims().tied());
            assertFalse(m.checkpoint().find("lm_head.weight").isPresent());
        }
        assertArrayEquals(
                MergeReferenceTest.read(g).get("model.embed_tokens.weight"),
                MergeReferenceTest.read(out).get("model.embed_tokens.weight"));
    }

    /** Model-level parameters win over the top level; the base listed without a weight is fine for ties. */
    @Test
    void precedenceModelOverTopLevel() {
        Path base = Fixtures.hf("llama");
        Path cfg = write(
                "prec.yml",
                "merge_method: task_arithmetic\nbase_model: " + base + "\n"
                        + "parameters:\n  weight: 0.25\nmodels:\n  - model: " + base + "\n"
                        + "  - model: " + ft1 + "\n    parameters:\n      weight: 1.0\n  - model: " + ft2 + "\n");
        Path out = tmp.resolve("prec");
        CliRun r = CliRun.of("merge", cfg.toString(), out.toString());
        assertEquals(0, r.code(), r.toString());
        Map<String, float[]> bb = MergeReferenceTest.read(base);
        Map<String, float[]> a = MergeReferenceTest.read(ft1);
        Map<String, float[]> b = MergeReferenceTest.read(ft2);
        Map<String, float[]> o = MergeReferenceTest.read(out);
        String n = "model.layers.0.mlp.up_proj.weight";
        for (int i = 0; i < o.get(n).length; i++) {
            double e = bb.get(n)[i] + 1.0 * (a.get(n)[i] - bb.get(n)[i]) + 0.25 * (b.get(n)[i] - bb.get(n)[i]);
            assertEquals(e, o.get(n)[i], 1e-6);
        }
    }

    @Test
    void unknownKeyMethodOrParameterIsNamedAndNothingIsWritten() {
        refused("merge_method: linear\nmodels:\n  - model: " + ft1 + "\nbogus_key: 1\n", "unknown key 'bogus_key'");
        refused("merge_method: magic\nmodels:\n  - model: " + ft1 + "\n", "unknown merge method 'magic'");
        refused(
                "merge_method: linear\nparameters: {weight: 1, sharpness: 2}\nmodels:\n  - model: " + ft1 + "\n",
                "unknown parameter 'sharpness'");
        refused(
                "merge_method: linear\nmodels:\n  - model: " + ft1 + "\n  - model: " + ft2 + "\n",
                "missing required parameter 'weight'");
        refused(
                "merge_method: ties\nparameters: {weight: 1}\nmodels:\n  - model: " + ft1 + "\n",
                "ties needs a base model");
        refused(
                "merge_method: linear\ntokenizer_source: union\nparameters: {weight: 1}\nmodels:\n  - model: " + ft1
                        + "\n",
                "'union'");
        refused("merge_method: linear\nmodels:\n  - model: " + ft1 + "\nslices: []\n", "exactly one of");
        refused(
                "merge_method: passthrough\nslices:\n  - sources:\n      - model: " + ft1
                        + "\n        layer_range: [0, 5]\n",
                "beyond the model's blocks");
        refused(
                "merge_method: slerp\nparameters: {t: [0, 1, oops]}\nmodels: [" + ft1 + "]\n",
                "slerp needs a base model");
    }

    @Test
    void differentVocabularyIsRefusedWithTheReason() {
        Path cfg = write(
                "vocab.yml",
                "merge_method: linear\nparameters: {weight: 1}\nmodels:\n  - model: " + ft1 + "\n  - model: "
                        + Fixtures.hf("mistral") + "\n");
        CliRun r = CliRun.of("merge", cfg.toString(), tmp.resolve("v").toString());
        assertEquals(3, r.code(), r.toString());
        assertTrue(r.err().contains("family") || r.err().contains("vocabular"), r.err());
        assertFalse(Files.exists(tmp.resolve("v")));
    }

    /** A model with a smaller vocabulary (same family) is refused with mergekit's alternative in the hint. */
    @Test
    void smallerVocabularyIsRefusedWithTheHint() throws Exception {
        Path small = tmp.resolve("small-vocab");
        java.util.List<scion.io.tensor.Tensor> cropped = new java.util.ArrayList<>();
        for (Map.Entry<String, float[]> e : MergeReferenceTest.read(ft1).entrySet()) {
            float[] v = e.getValue();
            long[] shape;
            if (e.getKey().equals("model.embed_tokens.weight") || e.getKey().equals("lm_head.weight")) {
                v = java.util.Arrays.copyOf(v, 100 * 64);
                shape = new long[] {100, 64};
            } else {
                try (Model m = Model.open(ft1)) {
                    shape = m.checkpoint()
                            .find(e.getKey())
                            .orElseThrow()
                            .shape()
                            .clone();
                }
            }
            cropped.add(scion.io.tensor.BufferTensor.ofFloats(e.getKey(), shape, v));
        }
        try (scion.io.safetensors.SafetensorsWriter.Output o =
                scion.io.safetensors.SafetensorsWriter.create().open(small)) {
            o.writeTensors(cropped);
            o.addFile(
                    "config.json",
                    Files.readString(ft1.resolve("config.json"))
                            .replace("\"vocab_size\": 128", "\"vocab_size\": 100")
                            .getBytes(java.nio.charset.StandardCharsets.UTF_8));
            o.commit();
        }
        Path out = tmp.resolve("vocab-out");
        CliRun r = CliRun.of("merge", "--method", "linear", ft1.toString(), small.toString(), out.toString());
        assertEquals(3, r.code(), r.toString());
        assertTrue(r.err().contains("' has shape [100, 64]; expected [128, 64]"), r.err());
        assertTrue(r.err().contains("tokenizer_source"), r.err());
        assertFalse(Files.exists(out));
    }

    private void refused(String yaml, String expected) {
        Path cfg = write("bad.yml", yaml);
        Path out = tmp.resolve("bad-out");
        CliRun r = CliRun.of("merge", cfg.toString(), out.toString());
        assertEquals(3, r.code(), r.toString());
        assertTrue(r.err().contains(expected), "expected '" + expected + "' in: " + r.err());
        assertFalse(Files.exists(out), "nothing written");
    }

    private Path write(String name, String text) {
        try {
            Path p = tmp.resolve(name);
            Files.writeString(p, text);
            return p;
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }
}
