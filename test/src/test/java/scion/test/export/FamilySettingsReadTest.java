package scion.test.export;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.Model;
import scion.io.runtime.export.FamilySettings;
import scion.test.Fixtures;

/**
 * {@link FamilySettings#read}, the one reading of config.json shared by the ONNX export and the Fisher gradient pass:
 * the values transformers uses, and unsupported settings collected (not thrown) for the caller to refuse in its words.
 */
class FamilySettingsReadTest {
    @TempDir
    Path tmp;

    private static FamilySettings read(Path dir, List<String> problems) {
        try (Model m = Model.open(dir)) {
            return FamilySettings.read(m, problems);
        }
    }

    @Test
    void readsWhatTransformersUses() {
        List<String> problems = new ArrayList<>();
        FamilySettings llama = read(Fixtures.hf("llama"), problems);
        assertEquals(List.of(), problems);
        assertTrue(llama.causal());
        assertEquals(1e-6f, llama.eps());
        assertEquals(FamilySettings.Activation.SILU, llama.activation());
        assertEquals(16, llama.rotaryDim());
        float[] inv = llama.invFreq();
        assertEquals(8, inv.length);
        for (int i = 0; i < inv.length; i++) {
            // transformers: 1 / theta ** (arange(0, dim, 2).float() / dim) in float32
            assertEquals(1.0f / (float) Math.pow(10000f, (float) (2 * i) / 16f), inv[i], "inv_freq " + i);
        }
        assertArrayEquals(new int[] {0, 0}, llama.window());

        FamilySettings mistral = read(Fixtures.hf("mistral"), problems);
        assertArrayEquals(new int[] {4096, 4096}, mistral.window(), "mistral: sliding_window on every layer");
        FamilySettings qwen2 = read(Fixtures.hf("qwen2"), problems);
        assertArrayEquals(new int[] {0, 0}, qwen2.window(), "qwen2: sliding_window null");

        FamilySettings bert = read(Fixtures.hf("bert"), problems);
        assertEquals(List.of(), problems);
        assertEquals(false, bert.causal());
        assertEquals(FamilySettings.Activation.GELU_ERF, bert.activation());
        assertEquals(0, bert.rotaryDim());
        assertNull(bert.invFreq());
    }

    @Test
    void unsupportedSettingsAreCollectedNotThrown() throws IOException {
        Path dir = tmp.resolve("llama");
        Files.createDirectories(dir);
        try (Stream<Path> files = Files.list(Fixtures.hf("llama"))) {
            for (Path f : (Iterable<Path>) files::iterator) {
                Files.copy(f, dir.resolve(f.getFileName()));
            }
        }
        ObjectMapper json = new ObjectMapper();
        ObjectNode cfg = (ObjectNode) json.readTree(dir.resolve("config.json").toFile());
        cfg.put("hidden_act", "gelu_10");
        ((ObjectNode) cfg.get("rope_parameters")).put("rope_type", "yarn").put("factor", 4.0);
        Files.writeString(dir.resolve("config.json"), json.writeValueAsString(cfg));

        List<String> problems = new ArrayList<>();
        read(dir, problems);
        assertEquals(2, problems.size(), problems.toString());
        assertTrue(problems.get(0).contains("activation 'gelu_10'"), problems.toString());
        assertTrue(problems.get(1).contains("rope type 'yarn'"), problems.toString());
    }
}
