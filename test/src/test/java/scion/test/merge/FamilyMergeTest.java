package scion.test.merge;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import scion.io.Model;
import scion.io.runtime.export.OnnxExporter;
import scion.test.Fixtures;
import scion.test.cli.CliRun;
import scion.test.export.ExportRun;

/**
 * {@code scion merge} on every registered family: a linear merge of a fixture with itself is the fixture, tensor by
 * tensor and bit for bit (½a + ½a = a in float32), under the same names (Qwen3's per-head q/k norms included), and the
 * merged checkpoint exports to logits equal to transformers' recorded ones (1e-4 relative, the export test's bound).
 */
class FamilyMergeTest {
    @TempDir
    Path tmp;

    @ParameterizedTest(name = "{0}")
    @MethodSource("scion.test.Fixtures#families")
    void mergeOfAModelWithItselfIsTheModel(String family) throws Exception {
        Path src = Fixtures.hf(family);
        Path out = tmp.resolve(family + "-merged");
        CliRun r = CliRun.of("merge", "--method", "linear", src.toString(), src.toString(), out.toString());
        assertEquals(0, r.code(), r.toString());
        Map<String, float[]> a = MergeReferenceTest.read(src);
        Map<String, float[]> o = MergeReferenceTest.read(out);
        assertEquals(a.keySet(), o.keySet(), family + ": tensor names");
        for (Map.Entry<String, float[]> e : a.entrySet()) {
            assertArrayEquals(e.getValue(), o.get(e.getKey()), family + ": " + e.getKey());
        }
        try (Model m = Model.open(out)) {
            assertEquals(family, m.graph().architecture().family());
            double err = ExportRun.errorAgainstTransformers(
                    OnnxExporter.export(m, OnnxExporter.Options.defaults()), src.resolve("expected.json"));
            assertTrue(err <= 1e-4, family + ": merged model's output vs transformers: " + err);
        }
    }
}
