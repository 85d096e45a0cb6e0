package scion.test.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.Json;
import scion.test.Fixtures;
import scion.test.cli.CliRun;

/** {@code scion eval}: perplexity of a causal-LM fixture and embedding statistics of MiniLM on English text. */
class EvalCliTest {

    /**
     * The llama ONNX fixture on a 14-byte text whose bytes are the fixture's two rows of token ids: in two windows of
     * 7 (no overlap) the perplexity must equal the one computed here from the logits transformers recorded in
     * expected.json for those ids. The fixture's ORT outputs differ from torch's by ≤ 4.8e-7 (expected.json); a logit
     * error e moves each NLL by at most 2e, so 1e-5 relative on the perplexity is ample.
     */
    @Test
    void perplexityOfTheLlamaFixtureEqualsTheOneFromItsExpectedLogits(@TempDir Path dir) throws Exception {
        Path onnx = Fixtures.resource("onnx/llama.onnx");
        JsonNode expected = Json.mapper()
                .readTree(Fixtures.resource("onnx/llama.expected.json").toFile());
        JsonNode ids = expected.get("inputs").get("input_ids").get("data");
        JsonNode logits = expected.get("outputs").get("logits").get("data");
        byte[] text = new byte[14];
        double nll = 0;
        int scored = 0;
        for (int b = 0; b < 2; b++) {
            for (int p = 0; p < 7; p++) {
                text[b * 7 + p] = (byte) ids.get(b).get(p).asInt();
            }
            for (int p = 1; p < 7; p++) {
                JsonNode row = logits.get(b).get(p - 1);
                double max = Double.NEGATIVE_INFINITY;
                for (JsonNode v : row) {
                    max = Math.max(max, v.asDouble());
                }
                double sum = 0;
                for (JsonNode v : row) {
                    sum += Math.exp(v.asDouble() - max);
                }
                nll -= row.get(ids.get(b).get(p).asInt()).asDouble() - max - Math.log(sum);
                scored++;
            }
        }
        double expectedPpl = Math.exp(nll / scored);
        Path file = dir.resolve("ids.txt");
        Files.write(file, text);

        CliRun r = CliRun.of(
                "eval", onnx.toString(), "--text", file.toString(), "--max-length", "7", "--stride", "7", "--json");
        assertEquals(0, r.code(), r.toString());
        JsonNode j = Json.mapper().readTree(r.out());
        assertTrue(
                j.get("inputs").asText().contains("byte-level fallback"),
                j.get("inputs").asText());
        JsonNode ppl = j.get("perplexity");
        assertEquals(12, ppl.get("scored_tokens").asInt());
        double got = ppl.get("perplexity").asDouble();
        assertTrue(Double.isFinite(got) && got > 1);
        assertEquals(expectedPpl, got, 1e-5 * expectedPpl, "perplexity from expected.json: " + expectedPpl);
        assertEquals(Math.log(got), ppl.get("mean_nll").asDouble(), 1e-12);
    }

    @Test
    void randomTokensAreDeterministicPerSeed() throws Exception {
        String onnx = Fixtures.resource("onnx/gpt2.onnx").toString();
        double a = perplexity(CliRun.of("eval", onnx, "--random-tokens", "300", "--seed", "7", "--json"));
        double b = perplexity(CliRun.of("eval", onnx, "--random-tokens", "300", "--seed", "7", "--json"));
        double c = perplexity(CliRun.of("eval", onnx, "--random-tokens", "300", "--seed", "8", "--json"));
        assertEquals(a, b, 0.0, "same seed, same tokens, same perplexity");
        assertNotEquals(a, c);
        // an untrained 128-token model is close to uniform: perplexity near the vocabulary size
        assertTrue(a > 64 && a < 256, "perplexity " + a);
    }

    static double perplexity(CliRun r) throws Exception {
        assertEquals(0, r.code(), r.toString());
        return Json.mapper()
                .readTree(r.out())
                .get("perplexity")
                .get("perplexity")
                .asDouble();
    }

    /**
     * MiniLM on four paragraphs of English: one mean-pooled embedding per sentence. Sane ranges for a sentence
     * encoder on sentences of one topic: norms of a few units (MiniLM's token states have norms ≈ 4–7), pairwise
     * cosines clearly positive but far from 1 (related, not identical sentences; measured 0.25), and no single
     * direction holding most of the variance (measured 14 %).
     */
    @Test
    void miniLmEmbeddingStatisticsOnEnglishTextAreSane() throws Exception {
        CliRun r = CliRun.of(
                "eval",
                RuntimeFixtures.miniLm().toString(),
                "--text",
                RuntimeFixtures.englishText().toString(),
                "--json");
        assertEquals(0, r.code(), r.toString());
        JsonNode j = Json.mapper().readTree(r.out());
        assertTrue(j.get("perplexity").isNull());
        JsonNode e = j.get("embeddings");
        assertEquals(24, e.get("embeddings").asInt(), "one per sentence of bridges.txt");
        assertEquals(384, e.get("dimension").asInt());
        double norm = e.get("norm_mean").asDouble();
        assertTrue(norm > 2 && norm < 10, "norm " + norm);
        assertTrue(e.get("norm_std").asDouble() > 0 && e.get("norm_std").asDouble() < norm / 2);
        double cos = e.get("mean_pairwise_cosine").asDouble();
        assertTrue(cos > 0.1 && cos < 0.6, "mean pairwise cosine " + cos);
        assertTrue(
                e.get("cosine_p5").asDouble() < cos && cos < e.get("cosine_p95").asDouble());
        assertEquals(cos, e.get("anisotropy").asDouble(), 0.0);
        double share = e.get("first_component_share").asDouble();
        assertTrue(share > 1.0 / 24 && share < 0.5, "first component share " + share);

        CliRun text = CliRun.of(
                "eval",
                RuntimeFixtures.miniLm().toString(),
                "--text",
                RuntimeFixtures.englishText().toString());
        assertEquals(0, text.code(), text.toString());
        assertTrue(text.out().contains("24 mean-pooled embeddings of width 384"), text.out());
        assertTrue(text.out().contains("anisotropy"), text.out());
    }
}
