package scion.test.merge;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.test.Fixtures;
import scion.test.cli.CliRun;

/**
 * Multi-document mergekit YAML (mergekit-multi's named stages) through {@code scion merge CONFIG OUT}: every stage
 * runs in dependency order, later stages read earlier ones by name, the final stage is OUT, the staging area is gone
 * afterwards; bad recipes are refused in one line before any stage runs.
 */
class MergeStagesCliTest {
    @TempDir
    Path tmp;

    final Path ft1 = Fixtures.resource("merge/llama-ft1");
    final Path ft2 = Fixtures.resource("merge/llama-ft2");
    final Path ft3 = Fixtures.resource("merge/llama-ft3");

    /**
     * Three stages, the final (unnamed) one written first in the file so that the order must come from the
     * references: {@code first} = 0.75·ft1 + 0.25·ft2 (linear), {@code second} = first + 0.5·(ft3 − first)
     * (task_arithmetic on base {@code first}), final = (second + ft1)/2 (linear). All float32 fixtures and float32
     * stages; expected values computed here in double: max |diff| ≤ 1e-5 (three rounded float32 stages).
     */
    @Test
    void threeStagesRunInDependencyOrderAndGiveTheComposedValues() throws Exception {
        Path cfg = write(
                "multi.yml",
                "merge_method: linear\n"
                        + "models:\n"
                        + "  - model: second\n"
                        + "    parameters: {weight: 1.0}\n"
                        + "  - model: " + ft1 + "\n"
                        + "    parameters: {weight: 1.0}\n"
                        + "dtype: float32\n"
                        + "---\n"
                        + "name: first\n"
                        + "merge_method: linear\n"
                        + "models:\n"
                        + "  - model: " + ft1 + "\n"
                        + "    parameters: {weight: 0.75}\n"
                        + "  - model: " + ft2 + "\n"
                        + "    parameters: {weight: 0.25}\n"
                        + "dtype: float32\n"
                        + "---\n"
                        + "name: second\n"
                        + "merge_method: task_arithmetic\n"
                        + "base_model: first\n"
                        + "models:\n"
                        + "  - model: " + ft3 + "\n"
                        + "    parameters: {weight: 0.5}\n"
                        + "dtype: float32\n");
        Path out = tmp.resolve("multi-out");
        CliRun r = CliRun.of("merge", cfg.toString(), out.toString());
        assertEquals(0, r.code(), r.toString());
        int s1 = r.err().indexOf("stage 1/3 'first' (linear)");
        int s2 = r.err().indexOf("stage 2/3 'second' (task_arithmetic)");
        int s3 = r.err().indexOf("stage 3/3 final merge (linear) -> " + out);
        assertTrue(s1 >= 0 && s2 > s1 && s3 > s2, r.err());
        assertTrue(r.out().contains("stage 3/3 final merge: linear"), r.out());
        Map<String, float[]> a = MergeReferenceTest.read(ft1);
        Map<String, float[]> b = MergeReferenceTest.read(ft2);
        Map<String, float[]> c = MergeReferenceTest.read(ft3);
        Map<String, float[]> o = MergeReferenceTest.read(out);
        assertEquals(a.keySet(), o.keySet());
        double max = 0;
        double spread = 0;
        for (String n : a.keySet()) {
            for (int i = 0; i < a.get(n).length; i++) {
                double first = 0.75 * a.get(n)[i] + 0.25 * b.get(n)[i];
                double second = first + 0.5 * (c.get(n)[i] - first);
                double want = (second + a.get(n)[i]) / 2;
                max = Math.max(max, Math.abs(o.get(n)[i] - want));
                spread = Math.max(spread, Math.abs(want - a.get(n)[i]));
            }
        }
        System.out.println(
                "3-stage recipe vs the composed formula: max |diff| " + max + " (max |want - ft1| " + spread + ")");
        assertTrue(max <= 1e-5, "max |diff| " + max);
        assertTrue(spread > 1e-3, "the stages must move the weights: " + spread);
        assertEquals(List.of(), leftovers(), "staging area removed");
        String recipe = Files.readString(out.resolve("scion-recipe.json"));
        assertTrue(recipe.contains("stage 'second'"), recipe);
        assertFalse(recipe.contains(".stages-"), recipe);
        assertEquals(Files.readString(cfg), Files.readString(out.resolve("mergekit_config.yml")));
    }

    /** Every document named: the final stage is the one no other stage uses (here the first in the file). */
    @Test
    void allNamedStagesEndWithTheOneNobodyUses() {
        Path cfg = write(
                "named.yml",
                "name: last\nmerge_method: linear\nparameters: {weight: 1.0}\nmodels: [soup, " + ft3 + "]\n---\n"
                        + "name: soup\nmerge_method: linear\nparameters: {weight: 1.0}\nmodels: [" + ft1 + ", "
                        + ft2 + "]\n");
        Path out = tmp.resolve("named-out");
        CliRun r = CliRun.of("merge", cfg.toString(), out.toString());
        assertEquals(0, r.code(), r.toString());
        assertTrue(r.err().contains("stage 2/2 'last' (linear) -> "), r.err());
        Map<String, float[]> a = MergeReferenceTest.read(ft1);
        Map<String, float[]> b = MergeReferenceTest.read(ft2);
        Map<String, float[]> c = MergeReferenceTest.read(ft3);
        float[] got = MergeReferenceTest.read(out).get("model.layers.1.mlp.down_proj.weight");
        String n = "model.layers.1.mlp.down_proj.weight";
        for (int i = 0; i < got.length; i++) {
            double want = ((a.get(n)[i] + b.get(n)[i]) / 2 + c.get(n)[i]) / 2;
            assertEquals(want, got[i], 1e-6);
        }
        assertEquals(List.of(), leftovers());
    }

    /**
     * ONNX stages: the intermediate stage is an ONNX file in the staging area, the final one an ONNX file at OUT; the
     * result equals, tensor for tensor and bit for bit, the same two merges run one after the other by hand.
     */
    @Test
    void onnxStagesGiveTheSameBytesAsTwoManualMerges() throws Exception {
        Path onnx = Fixtures.resource("onnx/llama.onnx");
        String mid = "merge_method: slerp\nbase_model: " + onnx + "\nparameters: {t: 0.4}\nmodels: [" + onnx + ", "
                + ft1 + "]\n";
        String fin = "merge_method: linear\nparameters: {weight: 1.0}\nmodels: [%s, " + onnx + "]\n";
        Path cfg = write("onnx.yml", "name: mid\n" + mid + "---\n" + String.format(fin, "mid"));
        Path out = tmp.resolve("staged.onnx");
        CliRun r = CliRun.of("merge", cfg.toString(), out.toString());
        assertEquals(0, r.code(), r.toString());
        assertEquals(List.of(), leftovers());
        Path s1 = tmp.resolve("s1.onnx");
        assertEquals(
                0,
                CliRun.of("merge", write("s1.yml", mid).toString(), s1.toString())
                        .code());
        Path s2 = tmp.resolve("s2.onnx");
        CliRun r2 = CliRun.of("merge", write("s2.yml", String.format(fin, s1)).toString(), s2.toString());
        assertEquals(0, r2.code(), r2.toString());
        Map<String, float[]> got = floats(out);
        Map<String, float[]> want = floats(s2);
        assertEquals(want.keySet(), got.keySet());
        for (String n : want.keySet()) {
            org.junit.jupiter.api.Assertions.assertArrayEquals(want.get(n), got.get(n), n);
        }
        assertTrue(got.size() >= 20, "initializers compared: " + got.size());
    }

    private static Map<String, float[]> floats(Path onnx) {
        Map<String, float[]> m = new java.util.TreeMap<>();
        try (scion.io.Model model = scion.io.Model.open(onnx)) {
            for (scion.io.arch.WeightGraph.Weight w : model.graph().weights()) {
                if (w.tensor().dtype().isFloatingPoint()) {
                    m.put(w.name(), w.tensor().toFloats());
                }
            }
        }
        return m;
    }

    @Test
    void badRecipesAreRefusedBeforeAnyStageRuns() {
        String first =
                "name: first\nmerge_method: linear\nparameters: {weight: 1.0}\nmodels: [" + ft1 + ", " + ft2 + "]\n";
        refused(
                first + "---\nmerge_method: linear\nparameters: {weight: 1.0}\nmodels: [frist, " + ft3 + "]\n",
                "multi.yml: stage final merge models[0]: 'frist' names no stage and no model; expected one of the"
                        + " stages [first]");
        refused(
                first + "---\n" + first,
                "duplicate stage name; expected unique names, found 'first' also in document 1");
        refused(
                first + "---\nmerge_method: linear\nparameters: {weight: 1.0}\nmodels: [first]\n---\n"
                        + "merge_method: linear\nparameters: {weight: 1.0}\nmodels: [first]\n",
                "a second document without 'name'");
        refused(
                first + "---\nname: spare\nmerge_method: linear\nparameters: {weight: 1.0}\nmodels: [" + ft3 + "]\n"
                        + "---\nmerge_method: linear\nparameters: {weight: 1.0}\nmodels: [first]\n",
                "stage 'spare': not used by the final stage final merge");
        refused(
                "name: a\nmerge_method: linear\nparameters: {weight: 1.0}\nmodels: [b]\n---\n"
                        + "name: b\nmerge_method: linear\nparameters: {weight: 1.0}\nmodels: [a]\n---\n"
                        + "merge_method: linear\nparameters: {weight: 1.0}\nmodels: [a]\n",
                "the stages use each other in a cycle");
        refused(
                first + "---\nmerge_method: linear\nparameters: {weight: 1.0}\nmodels: [first]\nbogus: 1\n",
                "multi.yml (document 2): unknown key 'bogus'");
        refused(
                first + "---\nmerge_method: linear\nparameters: {weight: 1.0}\nmodels: [first, nobody/model@v2]\n",
                "huggingface-cli download nobody/model --revision v2");
    }

    @Test
    void anExistingOutputIsRefusedBeforeTheFirstStage() throws IOException {
        Path out = Files.createDirectories(tmp.resolve("exists"));
        Path cfg = write(
                "multi.yml",
                "name: first\nmerge_method: linear\nparameters: {weight: 1.0}\nmodels: [" + ft1 + ", " + ft2
                        + "]\n---\nmerge_method: linear\nparameters: {weight: 1.0}\nmodels: [first]\n");
        CliRun r = CliRun.of("merge", cfg.toString(), out.toString());
        assertEquals(3, r.code(), r.toString());
        assertTrue(r.err().contains("output already exists"), r.err());
        assertFalse(r.err().contains("stage 1/"), r.err());
        assertEquals(List.of(), leftovers());
    }

    private void refused(String yaml, String expected) {
        Path cfg = write("multi.yml", yaml);
        Path out = tmp.resolve("bad-out");
        CliRun r = CliRun.of("merge", cfg.toString(), out.toString());
        assertEquals(3, r.code(), r.toString());
        System.out.println("refused: " + r.err().strip());
        assertTrue(r.err().contains(expected), "expected '" + expected + "' in: " + r.err());
        assertFalse(r.err().contains("stage 1/"), "no stage ran: " + r.err());
        assertEquals(1, r.err().strip().lines().count(), "one line: " + r.err());
        assertFalse(Files.exists(out), "nothing written");
        assertEquals(List.of(), leftovers());
    }

    private List<Path> leftovers() {
        try (Stream<Path> s = Files.list(tmp)) {
            return s.filter(p -> p.getFileName().toString().contains(".stages-"))
                    .collect(Collectors.toList());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private Path write(String name, String text) {
        try {
            Path p = tmp.resolve(name);
            Files.writeString(p, text);
            return p;
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
