package scion.test.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.Json;
import scion.test.Fixtures;

/** {@code scion export}: the written model runs and validates as identical to the checkpoint exported in memory. */
class ExportCliTest {
    @Test
    void exportedGemmaValidatesAsIdenticalToItsCheckpoint(@TempDir Path dir) throws Exception {
        Path out = dir.resolve("gemma.onnx");
        CliRun r = CliRun.of("export", Fixtures.hf("gemma").toString(), out.toString(), "--residual-stream", "--json");
        assertEquals(0, r.code(), r.toString());
        JsonNode j = Json.mapper().readTree(r.out());
        assertEquals("gemma", j.get("family").asText());
        assertEquals(3, j.get("residual_stream_outputs").asInt());
        assertTrue(Files.exists(dir.resolve("gemma.onnx.data")));
        CliRun v = CliRun.of(
                "validate",
                Fixtures.hf("gemma").toString(),
                out.toString(),
                "--random-tokens",
                "16",
                "--expect",
                "identical");
        assertEquals(0, v.code(), v.toString());
    }

    @Test
    void onnxInputAndWrongSuffixAreRefused(@TempDir Path dir) {
        CliRun r = CliRun.of(
                "export",
                Fixtures.miniLmOnnx().toString(),
                dir.resolve("x.onnx").toString());
        assertEquals(3, r.code(), r.toString());
        r = CliRun.of(
                "export", Fixtures.hf("llama").toString(), dir.resolve("x.bin").toString());
        assertEquals(3, r.code(), r.toString());
        assertTrue(r.err().contains("a path ending in .onnx"), r.err());
        assertFalse(Files.exists(dir.resolve("x.bin")));
    }
}
