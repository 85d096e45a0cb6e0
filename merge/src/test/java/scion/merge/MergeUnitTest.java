package scion.merge;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import scion.io.InvalidInputException;

/** Parameter evaluation (mergekit's evaluate_setting), selection kernels and method contracts on small arrays. */
class MergeUnitTest {
    static JsonNode yaml(String s) throws Exception {
        return new ObjectMapper(new YAMLFactory()).readTree(s);
    }

    @Test
    void gradientsInterpolateOverThePosition() throws Exception {
        JsonNode g = yaml("[0.0, 0.5, 1.0, 0.0]");
        assertEquals(0.0, (double) MergePlan.evaluate(g, "x", 0.0), 1e-12);
        assertEquals(1.0, (double) MergePlan.evaluate(g, "x", 2 / 3.0), 1e-12);
        assertEquals(0.25, (double) MergePlan.evaluate(g, "x", 1 / 6.0), 1e-12); // halfway between 0 and 0.5
        assertEquals(0.0, (double) MergePlan.evaluate(g, "x", 1.0), 1e-12);
        assertEquals("b", MergePlan.evaluate(yaml("[a, b, c]"), "x", 0.6)); // non-numeric: index ⌊t(n−1)⌋
    }

    @Test
    void filtersPickTheFirstMatchAndFallThrough() throws Exception {
        JsonNode f = yaml("[{filter: self_attn, value: [1.0, 0.0]}, {filter: mlp, value: 0.3}]");
        assertEquals(1.0, (double) MergePlan.evaluate(f, "model.layers.0.self_attn.q_proj.weight", 0), 1e-12);
        assertEquals(0.3, (double) MergePlan.evaluate(f, "model.layers.0.mlp.up_proj.weight", 0), 1e-12);
        assertNull(MergePlan.evaluate(f, "model.norm.weight", 0)); // no entry matches: the next level decides
        JsonNode star = yaml("[{filter: '*', value: 2}]");
        assertEquals(2.0, (double) MergePlan.evaluate(star, "anything", 0), 1e-12);
        assertEquals(true, MergePlan.evaluate(yaml("true"), "x", 0));
    }

    @Test
    void magnitudeRanksKeepExactlyTheRequestedRanksWithTies() {
        float[] x = {0.5f, -3f, 0.5f, 2f, -0.5f, 1f};
        float[] top3 = x.clone();
        MergeOps.keepMagnitudeRanks(top3, 3, 6); // |x| ascending: 0.5(0) 0.5(2) 0.5(4) 1 2 3
        assertArrayEquals(new float[] {0, -3f, 0, 2f, 0, 1f}, top3);
        float[] mid = x.clone();
        MergeOps.keepMagnitudeRanks(mid, 1, 4); // ranks 1..3: 0.5(2), 0.5(4), 1
        assertArrayEquals(new float[] {0, 0, 0.5f, 0, -0.5f, 1f}, mid);
        float[] none = x.clone();
        MergeOps.keepMagnitudeRanks(none, 2, 2);
        assertArrayEquals(new float[6], none);
    }

    static TensorMerge tm(List<float[]> values, float[] base, List<Map<String, Object>> per, Map<String, Object> g) {
        List<float[]> v = new ArrayList<>();
        values.forEach(a -> v.add(a.clone()));
        List<MergeParams> mp = new ArrayList<>();
        per.forEach(p -> mp.add(new MergeParams(p)));
        return new TensorMerge(
                "t",
                null,
                0,
                1,
                new long[] {values.get(0).length},
                v,
                -1,
                base.clone(),
                mp,
                new MergeParams(g),
                42,
                null);
    }

    static Map<String, Object> taDefaults(MergeMethod m) {
        Map<String, Object> g = new java.util.HashMap<>();
        for (MergeMethod.Param p : m.params()) {
            if (p.scope() == MergeMethod.Scope.GLOBAL) {
                g.put(p.name(), p.defaultValue());
            }
        }
        return g;
    }

    @Test
    void tiesElectsTheSignAndAveragesTheAgreeingDeltas() {
        MergeMethod ties = MergeMethods.byId("ties", "test");
        float[] base = {0, 0, 0};
        List<float[]> v = List.of(new float[] {1, -2, 0}, new float[] {3, 1, 0});
        float[] out = ties.merge(tm(
                v,
                base,
                List.of(Map.of("weight", 1.0, "density", 1.0), Map.of("weight", 1.0, "density", 1.0)),
                taDefaults(ties)));
        // element 0: both +, mean 2; element 1: sum −1 → '−' wins, only −2 kept (divisor 1); element 2: nothing
        assertArrayEquals(new float[] {2, -2, 0}, out);
    }

    @Test
    void dareIsDeterministicForASeedAndKeepsAboutDensity() {
        MergeMethod dare = MergeMethods.byId("dare_linear", "test");
        float[] base = new float[100_000];
        float[] a = new float[base.length];
        java.util.Arrays.fill(a, 1f);
        List<Map<String, Object>> per = List.of(Map.of("weight", 1.0, "density", 0.25));
        float[] o1 = dare.merge(tm(List.of(a), base, per, taDefaults(dare)));
        float[] o2 = dare.merge(tm(List.of(a), base, per, taDefaults(dare)));
        assertArrayEquals(o1, o2);
        int kept = countNonZero(o1);
        for (float f : o1) {
            if (f != 0) {
                assertEquals(base.length / (double) kept, f, 1e-3); // L1 rescale: 1 / kept fraction
            }
        }
        assertEquals(0.25, kept / (double) base.length, 0.006);
    }

    static int countNonZero(float[] a) {
        int n = 0;
        for (float f : a) {
            n += f != 0 ? 1 : 0;
        }
        return n;
    }

    @Test
    void unknownMethodNamesTheKnownOnes() {
        InvalidInputException e =
                assertThrows(InvalidInputException.class, () -> MergeMethods.byId("tie", "config.yml: merge_method"));
        assertTrue(e.getMessage().contains("unknown merge method 'tie'"), e.getMessage());
        assertTrue(e.getMessage().contains("ties"), e.getMessage());
    }

    @Test
    void tensorSeedDependsOnNameNotOrder() {
        assertEquals(Merger.tensorSeed(1, "a.weight"), Merger.tensorSeed(1, "a.weight"));
        assertTrue(Merger.tensorSeed(1, "a.weight") != Merger.tensorSeed(2, "a.weight"));
        assertTrue(Merger.tensorSeed(1, "a.weight") != Merger.tensorSeed(1, "b.weight"));
    }

    @Test
    void yamlRefusesUnknownKeysAndNamesThem() {
        InvalidInputException e = assertThrows(
                InvalidInputException.class,
                () -> MergeConfig.parse("merge_method: linear\nmodels: [a]\nmerge_mehtod: x\n", null));
        assertTrue(e.getMessage().contains("unknown key 'merge_mehtod'"), e.getMessage());
        InvalidInputException s = assertThrows(
                InvalidInputException.class,
                () -> MergeConfig.parse(
                        "merge_method: passthrough\nslices:\n  - sources:\n      - {model: a, layer_rang: [0, 1]}\n",
                        null));
        assertTrue(s.getMessage().contains("unknown key 'layer_rang'"), s.getMessage());
    }

    /**
     * A text of several YAML documents is never read as its first document alone: {@link MergeConfig#parse} refuses
     * it, {@link MergeStages#parse} orders its stages by their references (the final one last) and binds the names.
     */
    @Test
    void severalDocumentsAreStagesNeverTheFirstAlone(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir)
            throws Exception {
        java.nio.file.Path m = java.nio.file.Files.createDirectories(dir.resolve("m"));
        String yaml = "merge_method: linear\nmodels: [b, " + m + "]\n---\nname: b\nmerge_method: linear\n"
                + "models: [a]\n---\nname: a\nmerge_method: karcher\nmodels: [" + m + "]\n";
        InvalidInputException e =
                assertThrows(InvalidInputException.class, () -> MergeConfig.parse(yaml, dir.resolve("x.yml")));
        assertTrue(e.getMessage().contains("x.yml: holds 3 YAML documents"), e.getMessage());
        MergeStages st = MergeStages.parse(yaml, dir.resolve("x.yml"));
        assertEquals(
                java.util.Arrays.asList("a", "b", null),
                st.stages().stream().map(MergeStages.Stage::name).collect(java.util.stream.Collectors.toList()));
        assertEquals(
                java.util.List.of(3, 2, 1),
                st.stages().stream().map(MergeStages.Stage::document).collect(java.util.stream.Collectors.toList()));
        MergeConfig bound = MergeStages.bind(st.last(), java.util.Map.of("b", dir.resolve("out-b")));
        assertEquals(dir.resolve("out-b").toString(), bound.models().get(0).model());
        assertEquals(m.toString(), bound.models().get(1).model());
        // one document with a leading '---' and a comment-only trailing document is one stage
        assertEquals(
                1,
                MergeStages.parse("---\nmerge_method: linear\nmodels: [" + m + "]\n---\n# end\n", null)
                        .stages()
                        .size());
    }
}
