package scion.test.merge;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.HubCache;
import scion.test.Fixtures;
import scion.test.cli.CliRun;

/**
 * Hub references ({@code org/name}, {@code org/name@rev}) in merge configs and on any command's command line, read
 * from a Hugging Face cache laid out as huggingface_hub writes it (blobs, snapshot symlinks, refs) around real fixture
 * files; the cache root is set through {@link HubCache#ROOT_PROPERTY} (the JVM cannot set HF_HUB_CACHE).
 */
class HubReferenceCliTest {
    @TempDir
    Path tmp;

    Path cache;
    static final String C1 = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
    static final String C2 = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";

    final Path ft1 = Fixtures.resource("merge/llama-ft1");
    final Path ft2 = Fixtures.resource("merge/llama-ft2");

    @BeforeEach
    void cache() throws IOException {
        cache = tmp.resolve("hub");
        Path repo = cache.resolve("models--acme--tiny-llama");
        snapshot(repo, C1, ft1);
        snapshot(repo, C2, ft2);
        Files.createDirectories(repo.resolve("refs"));
        Files.writeString(repo.resolve("refs/main"), C1);
        Files.writeString(repo.resolve("refs/v2"), C2);
        System.setProperty(HubCache.ROOT_PROPERTY, cache.toString());
    }

    @AfterEach
    void clear() {
        System.clearProperty(HubCache.ROOT_PROPERTY);
    }

    /** A snapshot as huggingface_hub leaves it: each file a symlink to a content-named blob. */
    static void snapshot(Path repo, String commit, Path files) throws IOException {
        Path snap = Files.createDirectories(repo.resolve("snapshots").resolve(commit));
        Files.createDirectories(repo.resolve("blobs"));
        try (Stream<Path> s = Files.list(files)) {
            for (Path f : (Iterable<Path>) s::iterator) {
                Path blob = repo.resolve("blobs").resolve(commit + "-" + f.getFileName());
                Files.copy(f, blob);
                Files.createSymbolicLink(
                        snap.resolve(f.getFileName()), Path.of("../../blobs").resolve(blob.getFileName()));
            }
        }
    }

    /**
     * {@code acme/tiny-llama} (main → ft1) and {@code acme/tiny-llama@v2} (→ ft2) averaged: every tensor equals
     * (ft1 + ft2)/2 within float32 rounding (2e-7); a commit hash as the revision reads the same snapshot.
     */
    @Test
    void hubReferencesInAConfigReadTheCachedSnapshots() throws Exception {
        for (String second : new String[] {"acme/tiny-llama@v2", "acme/tiny-llama@" + C2}) {
            Path cfg = tmp.resolve("hub.yml");
            Files.writeString(
                    cfg,
                    "merge_method: linear\nparameters: {weight: 1.0}\nmodels:\n  - model: acme/tiny-llama\n"
                            + "  - model: " + second + "\n");
            Path out = tmp.resolve("out-" + second.length());
            CliRun r = CliRun.of("merge", cfg.toString(), out.toString(), "--json");
            assertEquals(0, r.code(), r.toString());
            assertTrue(r.out().replace(" ", "").contains("[\"acme/tiny-llama\",\"" + second + "\"]"), r.out());
            Map<String, float[]> a = MergeReferenceTest.read(ft1);
            Map<String, float[]> b = MergeReferenceTest.read(ft2);
            Map<String, float[]> o = MergeReferenceTest.read(out);
            double max = 0;
            for (String n : a.keySet()) {
                for (int i = 0; i < a.get(n).length; i++) {
                    max = Math.max(max, Math.abs(o.get(n)[i] - (a.get(n)[i] + b.get(n)[i]) / 2.0));
                }
            }
            assertTrue(max <= 2e-7, second + ": max |diff| " + max);
            assertTrue(Files.exists(out.resolve("generation_config.json")), "companions from the snapshot");
        }
    }

    /**
     * mergekit's multimerge example as users write it — hub names, three stages (linear, then slerp on the first
     * stage's output, then an unnamed dare_ties over the second stage and another hub model) — with the four hub models
     * placed in the cache as llama fixtures: it runs every stage in order and writes a model whose every tensor is
     * finite and differs from the inputs. The first two stages are checked by value through a recipe of just them.
     */
    @Test
    void mergekitsMultimergeExampleRunsFromTheCache() throws Exception {
        Path llama = Fixtures.hf("llama");
        Path ft3 = Fixtures.resource("merge/llama-ft3");
        snapshot(cache.resolve("models--mistralai--Mistral-7B-v0.1"), C1, llama);
        snapshot(cache.resolve("models--BioMistral--BioMistral-7B"), C1, ft1);
        snapshot(cache.resolve("models--NousResearch--Hermes-2-Pro-Mistral-7B"), C1, ft2);
        snapshot(cache.resolve("models--teknium--OpenHermes-2.5-Mistral-7B"), C1, ft3);
        for (String r : new String[] {
            "mistralai--Mistral-7B-v0.1",
            "BioMistral--BioMistral-7B",
            "NousResearch--Hermes-2-Pro-Mistral-7B",
            "teknium--OpenHermes-2.5-Mistral-7B"
        }) {
            Files.createDirectories(cache.resolve("models--" + r + "/refs"));
            Files.writeString(cache.resolve("models--" + r + "/refs/main"), C1);
        }
        String stages = "name: first-merge\nmerge_method: linear\nmodels:\n  - model: mistralai/Mistral-7B-v0.1\n"
                + "  - model: BioMistral/BioMistral-7B\nparameters:\n  weight: 0.5\ndtype: float32\n---\n"
                + "name: second-merge\nmerge_method: slerp\nbase_model: first-merge\nmodels:\n"
                + "  - model: NousResearch/Hermes-2-Pro-Mistral-7B\nparameters:\n  t: 0.5\ndtype: float32\n";
        Path cfg = tmp.resolve("multimerge.yml");
        Files.writeString(
                cfg,
                stages + "---\nmerge_method: dare_ties\nbase_model: mistralai/Mistral-7B-v0.1\nmodels:\n"
                        + "  - model: second-merge\n    parameters:\n      density: 0.6\n      weight: 0.5\n"
                        + "  - model: teknium/OpenHermes-2.5-Mistral-7B\n    parameters:\n      density: 0.8\n"
                        + "      weight: 0.5\n");
        Path out = tmp.resolve("multimerge-out");
        CliRun r = CliRun.of("merge", cfg.toString(), out.toString(), "--seed", "3");
        assertEquals(0, r.code(), r.toString());
        assertTrue(r.err().contains("stage 1/3 'first-merge' (linear)"), r.err());
        assertTrue(r.err().contains("stage 2/3 'second-merge' (slerp)"), r.err());
        assertTrue(r.err().contains("stage 3/3 final merge (dare_ties)"), r.err());
        Map<String, float[]> o = MergeReferenceTest.read(out);
        Map<String, float[]> b = MergeReferenceTest.read(llama);
        Map<String, float[]> d = MergeReferenceTest.read(ft3);
        assertEquals(b.keySet(), o.keySet());
        for (String n : o.keySet()) {
            for (float v : o.get(n)) {
                assertTrue(Float.isFinite(v), n);
            }
            assertFalse(java.util.Arrays.equals(o.get(n), b.get(n)), n + " equals the base");
            assertFalse(java.util.Arrays.equals(o.get(n), d.get(n)), n + " equals OpenHermes");
        }
        // the first two stages by value: linear 0.5/0.5 of base and ft1, then SLERP at t = 0.5 towards ft2
        Path two = tmp.resolve("two.yml");
        Files.writeString(two, stages);
        Path out2 = tmp.resolve("two-out");
        r = CliRun.of("merge", two.toString(), out2.toString());
        assertEquals(0, r.code(), r.toString());
        Map<String, float[]> a = MergeReferenceTest.read(ft1);
        Map<String, float[]> c = MergeReferenceTest.read(ft2);
        Map<String, float[]> o2 = MergeReferenceTest.read(out2);
        double max = 0;
        for (String n : b.keySet()) {
            int len = b.get(n).length;
            double[] v0 = new double[len];
            double[] v1 = new double[len];
            for (int i = 0; i < len; i++) {
                v0[i] = (0.5 * b.get(n)[i] + 0.5 * a.get(n)[i]) / 1.0;
                v1[i] = c.get(n)[i];
            }
            double[] want = slerp(0.5, v0, v1);
            for (int i = 0; i < len; i++) {
                max = Math.max(max, Math.abs(o2.get(n)[i] - want[i]));
            }
        }
        System.out.println("multimerge stages 1-2 (linear, slerp) from the hub cache vs float64: max |diff| " + max);
        assertTrue(max < 1e-5, "max |diff| " + max);
    }

    /** SLERP as mergekit defines it: lerp when the normalised vectors are within 0.9995 of colinear. */
    static double[] slerp(double t, double[] v0, double[] v1) {
        double n0 = 0;
        double n1 = 0;
        double dot = 0;
        for (int i = 0; i < v0.length; i++) {
            n0 += v0[i] * v0[i];
            n1 += v1[i] * v1[i];
            dot += v0[i] * v1[i];
        }
        dot /= Math.sqrt(n0) * Math.sqrt(n1);
        double a = 1 - t;
        double bb = t;
        if (Math.abs(dot) <= 0.9995) {
            double th = Math.acos(dot);
            a = Math.sin((1 - t) * th) / Math.sin(th);
            bb = Math.sin(t * th) / Math.sin(th);
        }
        double[] r = new double[v0.length];
        for (int i = 0; i < r.length; i++) {
            r[i] = a * v0[i] + bb * v1[i];
        }
        return r;
    }

    /** Any command that opens a model takes a hub reference (here inspect and convert, positional). */
    @Test
    void otherCommandsTakeHubReferencesToo() {
        CliRun r = CliRun.of("inspect", "acme/tiny-llama@v2", "--json");
        assertEquals(0, r.code(), r.toString());
        assertTrue(r.out().contains("llama"), r.out());
        Path out = tmp.resolve("conv");
        r = CliRun.of("convert", "acme/tiny-llama", out.toString(), "--dtype", "bf16");
        assertEquals(0, r.code(), r.toString());
        assertTrue(Files.exists(out.resolve("model.safetensors")));
    }

    /** Not in the cache: one line naming the download command; nothing fetched, nothing written. */
    @Test
    void aMissingReferenceIsRefusedWithTheDownloadCommand() {
        Path out = tmp.resolve("absent-out");
        CliRun r = CliRun.of("merge", "--method", "linear", "acme/tiny-llama", "acme/absent@v9", out.toString());
        assertEquals(3, r.code(), r.toString());
        System.out.println("missing hub reference: " + r.err().strip());
        assertEquals(1, r.err().strip().lines().count(), r.err());
        assertTrue(
                r.err().contains("acme/absent@v9: no such file or folder, nor a model in the Hugging Face cache"),
                r.err());
        assertTrue(r.err().contains("found no models--acme--absent in " + cache), r.err());
        assertTrue(r.err().contains("huggingface-cli download acme/absent --revision v9"), r.err());
        assertFalse(Files.exists(out));
        r = CliRun.of("merge", "--method", "linear", "acme/tiny-llama@v7", ft1.toString(), out.toString());
        assertEquals(3, r.code(), r.toString());
        assertTrue(r.err().contains("found no snapshot for revision 'v7'"), r.err());
        assertFalse(Files.exists(out));
    }
}
