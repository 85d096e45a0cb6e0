package scion.test.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.MethodSource;
import scion.io.Json;
import scion.test.Fixtures;

/** {@code scion inspect} on the real MiniLM ONNX model and on the Hugging Face fixtures of every family. */
class InspectCliTest {

    @Test
    void miniLmOnnxIsFullyUnderstood() throws Exception {
        Path onnx = Fixtures.miniLmOnnx();
        CliRun r = CliRun.of("inspect", onnx.toString(), "--json");
        assertEquals(0, r.code(), r.toString());
        JsonNode j = Json.mapper().readTree(r.out());
        assertEquals("onnx", j.get("format").asText());
        assertEquals("bert", j.get("family").asText());
        assertEquals(6, j.get("layers").asInt());
        assertEquals(384, j.get("hidden").asInt());
        assertEquals(12, j.get("heads").asInt());
        assertEquals(32, j.get("head_dim").asInt());
        assertEquals(1536, j.get("ffn").asInt());
        assertEquals(30522, j.get("vocab").asInt());
        assertEquals(512, j.get("positions").asInt());
        // 22.6 M: embeddings 11,918,592 + 6 × 1,774,464 per layer (buffers such as position_ids excluded).
        assertEquals(22_565_376L, j.get("parameters").asLong());
        assertEquals(j.get("tensors").asInt(), j.get("tensors_with_role").asInt(), "every initializer has a role");
        assertEquals(36, j.get("tensors_traced_through_graph").asInt(), "6 layers × 6 anonymous MatMul weights");
        assertEquals(
                6 * 384 * 384 + 6 * 384,
                j.get("parameters_by_role").get("attn_q").asLong());
    }

    @Test
    void textReportNamesTheEssentials() {
        CliRun r = CliRun.of("inspect", Fixtures.miniLmOnnx().toString());
        assertEquals(0, r.code(), r.toString());
        assertTrue(r.out().contains("bert (encoder"), r.out());
        assertTrue(r.out().contains("12 × 32 (kv heads 12)"), r.out());
        assertTrue(r.out().contains("22.6 M (22,565,376)"), r.out());
        assertTrue(r.out().contains("102 of 102 tensors assigned a role (36 traced through the ONNX graph)"), r.out());
    }

    @ParameterizedTest(name = "{0}")
    @CsvSource({
        // family, layers, hidden, heads, kv heads, head_dim, ffn, vocab, tied
        "llama,    2, 64, 4, 2, 16, 128, 128, false",
        "mistral,  2, 64, 4, 2, 16, 128, 128, false",
        "qwen2,    2, 64, 4, 2, 16, 128, 128, true",
        "qwen3,    2, 64, 4, 2, 32, 128, 128, true",
        "gemma,    2, 64, 4, 2, 16, 128, 128, true",
        "gemma2,   2, 64, 4, 2, 16, 128, 128, true",
        "gpt2,     2, 64, 4, 4, 16, 128, 128, true",
        "gpt_neox, 2, 64, 4, 4, 16, 128, 128, false",
        "opt,      2, 64, 4, 4, 16, 128, 128, true",
        "bert,     2, 64, 4, 4, 16, 128, 128, false",
    })
    void huggingFaceFixturesOfEveryFamily(
            String family, int layers, int hidden, int heads, int kv, int headDim, int ffn, int vocab, boolean tied)
            throws Exception {
        CliRun r = CliRun.of("inspect", Fixtures.hf(family).toString(), "--json");
        assertEquals(0, r.code(), r.toString());
        JsonNode j = Json.mapper().readTree(r.out());
        assertEquals(family, j.get("family").asText());
        assertEquals(layers, j.get("layers").asInt());
        assertEquals(hidden, j.get("hidden").asInt());
        assertEquals(heads, j.get("heads").asInt());
        assertEquals(kv, j.get("kv_heads").asInt());
        assertEquals(headDim, j.get("head_dim").asInt());
        assertEquals(ffn, j.get("ffn").asInt());
        assertEquals(vocab, j.get("vocab").asInt());
        if (j.has("tied_embeddings")) {
            assertEquals(tied, j.get("tied_embeddings").asBoolean());
        }
        assertEquals(j.get("tensors").asInt(), j.get("tensors_with_role").asInt());
        assertEquals(Fixtures.hfParameterCount(family), j.get("parameters").asLong(), "matches transformers' count");
    }

    /** Every registered family has a fixture, and inspect counts its parameters as transformers does. */
    @ParameterizedTest(name = "{0}")
    @MethodSource("scion.test.Fixtures#families")
    void everyRegisteredFamilyInspectsLikeTransformers(String family) throws Exception {
        CliRun r = CliRun.of("inspect", Fixtures.hf(family).toString(), "--json");
        assertEquals(0, r.code(), r.toString());
        JsonNode j = Json.mapper().readTree(r.out());
        assertEquals(family, j.get("family").asText());
        assertEquals(j.get("tensors").asInt(), j.get("tensors_with_role").asInt());
        assertEquals(Fixtures.hfParameterCount(family), j.get("parameters").asLong(), "matches transformers' count");
    }
}
