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
