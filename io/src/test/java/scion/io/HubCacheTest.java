package scion.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Optional;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The Hugging Face cache resolver: which texts are hub references, where the cache is, and refs → snapshots. */
class HubCacheTest {
    @TempDir
    Path tmp;

    static final String C1 = "1111111111111111111111111111111111111111";
    static final String C2 = "2222222222222222222222222222222222222222";
    static final String C3 = "3333333333333333333333333333333333333333";

    @Test
    void hubReferencesAreOneOrTwoSegmentsWithAnOptionalRevision() {
        assertEquals(Optional.of(new HubCache.Ref("org/name", null)), HubCache.parse("org/name"));
        assertEquals(Optional.of(new HubCache.Ref("org/Name-2.1_x", "v1.0")), HubCache.parse("org/Name-2.1_x@v1.0"));
        assertEquals(Optional.of(new HubCache.Ref("gpt2", null)), HubCache.parse("gpt2"));
        assertEquals(Optional.of(new HubCache.Ref("org/name", C1)), HubCache.parse("org/name@" + C1));
        for (String notHub : new String[] {
            "/abs/path", "./x", "../x", "a/b/c", "org--x/y", "org/name@", "org/na..me", ".hidden/x", "x/", "", "a b/c"
        }) {
            assertEquals(Optional.empty(), HubCache.parse(notHub), notHub);
        }
    }

    @Test
    void rootFollowsHuggingFaceHubsOrder() {
        assertEquals(Path.of("/c"), HubCache.root(Map.of("HF_HUB_CACHE", "/c", "HF_HOME", "/h"), "/home/u"));
        assertEquals(Path.of("/h/hub"), HubCache.root(Map.of("HF_HOME", "/h", "XDG_CACHE_HOME", "/x"), "/home/u"));
        assertEquals(Path.of("/x/huggingface/hub"), HubCache.root(Map.of("XDG_CACHE_HOME", "/x"), "/home/u"));
        assertEquals(Path.of("/home/u/.cache/huggingface/hub"), HubCache.root(Map.of(), "/home/u"));
    }

    @Test
    void refsAndCommitsResolveToSnapshots() throws Exception {
        Path repo = tmp.resolve("models--org--name");
        Files.createDirectories(repo.resolve("refs"));
        Files.writeString(repo.resolve("refs/main"), C1); // huggingface_hub writes the hash without a newline
        Files.writeString(repo.resolve("refs/v2"), C2 + "\n");
        Files.writeString(repo.resolve("refs/stale"), C3);
        Files.createDirectories(repo.resolve("snapshots/" + C1));
        Files.createDirectories(repo.resolve("snapshots/" + C2));
        assertEquals(Optional.of(repo.resolve("snapshots/" + C1)), HubCache.find(tmp, ref("org/name")));
        assertEquals(Optional.of(repo.resolve("snapshots/" + C2)), HubCache.find(tmp, ref("org/name@v2")));
        assertEquals(Optional.of(repo.resolve("snapshots/" + C2)), HubCache.find(tmp, ref("org/name@" + C2)));
        assertEquals(Optional.empty(), HubCache.find(tmp, ref("org/name@stale")), "ref to a missing snapshot");
        assertEquals(Optional.empty(), HubCache.find(tmp, ref("org/name@v9")));
        assertEquals(Optional.empty(), HubCache.find(tmp, ref("org/other")));
    }

    @Test
    void aReferenceNotInTheCacheNamesTheDownloadCommand() throws Exception {
        Files.createDirectories(tmp.resolve("models--org--name/refs"));
        InvalidInputException e =
                assertThrows(InvalidInputException.class, () -> HubCache.resolve(tmp, "org/other@v3"));
        assertEquals(
                "org/other@v3: no such file or folder, nor a model in the Hugging Face cache; expected a model folder"
                        + " or a downloaded hub model, found no models--org--other in " + tmp + "; hint: nothing is"
                        + " downloaded at run time, fetch it first with: huggingface-cli download org/other --revision"
                        + " v3 (or: hf download org/other --revision v3)",
                e.getMessage());
        e = assertThrows(InvalidInputException.class, () -> HubCache.resolve(tmp, "org/name"));
        assertTrue(
                e.getMessage().contains("found no snapshot for revision 'main' in " + tmp.resolve("models--org--name")),
                e.getMessage());
        assertTrue(
                e.getMessage().endsWith("huggingface-cli download org/name (or: hf download org/name)"),
                e.getMessage());
        e = assertThrows(InvalidInputException.class, () -> Model.open(Path.of("org/other"), tmp));
        assertTrue(e.getMessage().contains("huggingface-cli download org/other"), e.getMessage());
        e = assertThrows(InvalidInputException.class, () -> Model.open(tmp.resolve("absent"), tmp));
        assertTrue(e.getMessage().contains("absent: no such file or folder;"), e.getMessage());
    }

    private static HubCache.Ref ref(String s) {
        return HubCache.parse(s).orElseThrow();
    }
}
