package scion.test.prune;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.Json;
import scion.test.Fixtures;
import scion.test.cli.CliRun;

/**
 * Subcloning the trained Rust-book llama to half width (128 → 64) on its calibration text: held-out perplexity before
 * any training is far below chance (the vocabulary has 1024 tokens), above the source's, and lower with the √(D/D')
 * norm rescaling than without it. The full held-out table is {@code test/bench/subclone-trained.sh}; this test uses
 * the first 12 kB of the held-out text and 4096 calibration tokens to stay fast.
 */
class SubcloningTrainedTest {
    @TempDir
    Path tmp;

    private double perplexity(Path model, Path text) throws Exception {
        CliRun r = CliRun.of(
                "eval",
                model.toString(),
                "--text",
                text.toString(),
                "--max-length",
                "129",
                "--stride",
                "129",
                "--json");
        assertEquals(0, r.code(), r.toString());
        JsonNode j = Json.mapper().readTree(r.out());
        return j.get("perplexity").get("perplexity").asDouble();
    }

    @Test
    void halfWidthBeatsChanceAndTheRescalingHelps() throws Exception {
        Path src = Fixtures.trainedLm();
        String held = Files.readString(src.resolve("heldout.txt"), StandardCharsets.UTF_8);
        Path text = tmp.resolve("heldout-12k.txt");
        Files.writeString(text, held.substring(0, held.indexOf('\n', 12_000) + 1), StandardCharsets.UTF_8);
        Path calib = src.resolve("calib.txt");
        Path with = tmp.resolve("half");
        Path without = tmp.resolve("half-norescale");
        CliRun a = CliRun.of(
                "subclone",
                src.toString(),
                with.toString(),
                "--hidden",
                "64",
                "--calib",
                calib.toString(),
                "--tokens",
                "4096");
        assertEquals(0, a.code(), a.toString());
        CliRun b = CliRun.of(
                "subclone",
                src.toString(),
                without.toString(),
                "--hidden",
                "64",
                "--calib",
                calib.toString(),
                "--tokens",
                "4096",
                "--no-rescale");
        assertEquals(0, b.code(), b.toString());
        double p0 = perplexity(src, text);
        double p1 = perplexity(with, text);
        double p2 = perplexity(without, text);
        String all = "source " + p0 + ", subcloned " + p1 + ", without rescaling " + p2;
        assertTrue(p0 < p1, all);
        assertTrue(p1 < 0.4 * 1024, "far below chance (uniform over 1024 tokens): " + all);
        assertTrue(p1 < 0.97 * p2, "the rescaling lowers perplexity by more than 3 %: " + all);
    }
}
