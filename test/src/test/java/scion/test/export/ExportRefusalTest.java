package scion.test.export;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.function.Consumer;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.runtime.export.OnnxExporter;
import scion.test.Fixtures;

/** What export cannot reproduce is refused with an {@link InvalidInputException} that says what and where. */
class ExportRefusalTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path tmp;

    /** A copy of a fixture folder with its config.json edited. */
    private Path variant(String fixture, Consumer<ObjectNode> edit) throws IOException {
        Path src = Fixtures.hf(fixture);
        Path dst = tmp.resolve(fixture);
        Files.createDirectories(dst);
        try (Stream<Path> files = Files.list(src)) {
            for (Path f : (Iterable<Path>) files::iterator) {
                Files.copy(f, dst.resolve(f.getFileName()));
            }
        }
        ObjectNode cfg = (ObjectNode) JSON.readTree(dst.resolve("config.json").toFile());
        edit.accept(cfg);
        Files.writeString(dst.resolve("config.json"), JSON.writeValueAsString(cfg));
        return dst;
    }

    private static InvalidInputException refused(Path dir) {
        try (Model model = Model.open(dir)) {
            return assertThrows(
                    InvalidInputException.class, () -> OnnxExporter.export(model, OnnxExporter.Options.defaults()));
        }
    }

    private static void mentions(InvalidInputException e, String... parts) {
        for (String p : parts) {
            assertTrue(e.getMessage().contains(p), "message should mention '" + p + "': " + e.getMessage());
        }
    }

    @Test
    void onnxModelsAreRunnableAlready() {
        InvalidInputException e = refused(Fixtures.resource("onnx/llama.onnx"));
        mentions(e, "llama.onnx", "safetensors", "an ONNX model");
    }

    @Test
    void unsupportedRopeScaling() throws IOException {
        Path dir = variant("llama", c -> ((ObjectNode) c.get("rope_parameters"))
                .put("rope_type", "yarn")
                .put("factor", 4.0));
        InvalidInputException e = refused(dir);
        mentions(e, "config.json", "rope type 'yarn'", "supported: default, linear, llama3");
    }

    @Test
    void everyProblemAtOnce() throws IOException {
        Path dir = variant("llama", c -> {
            c.put("hidden_act", "gelu_10");
            ((ObjectNode) c.get("rope_parameters")).put("rope_type", "longrope");
        });
        InvalidInputException e = refused(dir);
        mentions(e, "activation 'gelu_10'", "rope type 'longrope'");
    }

    @Test
    void relativePositionBert() throws IOException {
        Path dir = variant("bert", c -> c.put("position_embedding_type", "relative_key"));
        mentions(refused(dir), "position_embedding_type 'relative_key'", "expected 'absolute'");
    }

    @Test
    void llama3RopeNeedsItsParameters() throws IOException {
        Path dir = variant("llama", c -> ((ObjectNode) c.get("rope_parameters")).put("rope_type", "llama3"));
        mentions(refused(dir), "rope type 'llama3' needs a numeric 'factor'");
    }

    @Test
    void oddRotaryDimension() throws IOException {
        Path dir = variant("gpt_neox", c -> ((ObjectNode) c.get("rope_parameters")).put("partial_rotary_factor", 0.1));
        mentions(refused(dir), "rotary dimension 1");
    }

    @Test
    void optionsAreChecked() {
        assertThrows(IllegalArgumentException.class, () -> OnnxExporter.Options.defaults()
                .withMaxInitializerBytes(1L << 31));
        assertThrows(IllegalArgumentException.class, () -> OnnxExporter.Options.defaults()
                .withExternalData(null));
    }
}
