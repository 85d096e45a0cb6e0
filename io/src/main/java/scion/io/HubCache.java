package scion.io;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Optional;
import java.util.regex.Pattern;

/**
 * The local Hugging Face hub cache, read only: a model reference {@code org/name} or {@code org/name@rev} (as mergekit
 * and transformers take them) resolved to the snapshot folder a download left on disk. Nothing is fetched.
 *
 * <p>Layout (huggingface_hub's cache, "Manage huggingface_hub cache-system"): the root is {@code $HF_HUB_CACHE} (or the
 * older {@code $HUGGINGFACE_HUB_CACHE}), else {@code $HF_HOME/hub}, else {@code $XDG_CACHE_HOME/huggingface/hub},
 * else {@code ~/.cache/huggingface/hub}; a model repository {@code org/name} lives in {@code
 * models--org--name/}, whose {@code refs/<revision>} file holds the commit hash a branch or tag points to, and whose
 * {@code snapshots/<commit>/} folder holds the files of that commit (symbolic links into {@code blobs/}). A revision
 * absent from {@code refs/} may be a commit hash itself ({@code snapshots/<rev>/}). No revision means {@code main}.
 *
 * <p>A reference is hub-like when it is one or two segments of letters, digits, {@code _ - .} (not starting with
 * {@code .} or {@code -}, no {@code --} or {@code ..}, at most 96 characters), as huggingface_hub's repository ids
 * are, optionally followed by {@code @revision}. A local path always wins: callers ask the cache only for a path that
 * does not exist.
 */
public final class HubCache {
    private HubCache() {}

    /**
     * The system property that overrides the environment for the cache root (a seam for in-process tests and
     * embedding programs: Java cannot set environment variables).
     */
    public static final String ROOT_PROPERTY = "scion.hf_hub_cache";

    private static final Pattern SEGMENT = Pattern.compile("[A-Za-z0-9_][A-Za-z0-9_.\\-]*");
    private static final Pattern COMMIT = Pattern.compile("[0-9a-f]{40}");

    /**
     * A hub model reference.
     *
     * @param repo {@code org/name} (or a bare {@code name})
     * @param revision the branch, tag or commit after {@code @}, or null for {@code main}
     */
    public record Ref(String repo, String revision) {
        /** The revision asked for, {@code main} when none is given. */
        public String revisionOrMain() {
            return revision == null ? "main" : revision;
        }

        /** The command that puts this model into the cache (the {@code huggingface-cli} and the newer {@code hf}). */
        public String downloadCommand() {
            String rev = revision == null ? "" : " --revision " + revision;
            return "huggingface-cli download " + repo + rev + " (or: hf download " + repo + rev + ")";
        }

        @Override
        public String toString() {
            return revision == null ? repo : repo + "@" + revision;
        }
    }

    /** {@code text} as a hub reference, or empty when it cannot be one (an absolute or dotted path, three segments). */
    public static Optional<Ref> parse(String text) {
        if (text == null || text.isEmpty()) {
            return Optional.empty();
        }
        String repo = text;
        String rev = null;
        int at = text.indexOf('@');
        if (at >= 0) {
            repo = text.substring(0, at);
            rev = text.substring(at + 1);
            if (rev.isEmpty() || rev.contains("..") || rev.startsWith("/") || rev.contains("\\")) {
                return Optional.empty();
            }
        }
        if (repo.length() > 96 || repo.contains("--") || repo.contains("..")) {
            return Optional.empty();
        }
        String[] parts = repo.split("/", -1);
        if (parts.length > 2) {
            return Optional.empty();
        }
        for (String p : parts) {
            if (!SEGMENT.matcher(p).matches() || p.endsWith(".") || p.endsWith("-")) {
                return Optional.empty();
            }
        }
        return Optional.of(new Ref(repo, rev));
    }

    /** The cache root: {@link #ROOT_PROPERTY} when set, else from the environment ({@link #root(Map, String)}). */
    public static Path root() {
        String prop = System.getProperty(ROOT_PROPERTY);
        if (prop != null && !prop.isEmpty()) {
            return Path.of(prop);
        }
        return root(System.getenv(), System.getProperty("user.home"));
    }

    /** The cache root for these environment variables and home folder (huggingface_hub's order). */
    public static Path root(Map<String, String> env, String home) {
        for (String k : new String[] {"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"}) {
            String hub = env.get(k);
            if (hub != null && !hub.isEmpty()) {
                return Path.of(hub);
            }
        }
        String hfHome = env.get("HF_HOME");
        if (hfHome != null && !hfHome.isEmpty()) {
            return Path.of(hfHome, "hub");
        }
        String xdg = env.get("XDG_CACHE_HOME");
        if (xdg != null && !xdg.isEmpty()) {
            return Path.of(xdg, "huggingface", "hub");
        }
        return Path.of(home, ".cache", "huggingface", "hub");
    }

    /** The repository folder of {@code ref} in the cache at {@code root}: {@code models--org--name}. */
    public static Path repoFolder(Path root, Ref ref) {
        return root.resolve("models--" + ref.repo().replace("/", "--"));
    }

    /** The snapshot folder of {@code ref} in the cache at {@code root}, when it is there. */
    public static Optional<Path> find(Path root, Ref ref) {
        Path repo = repoFolder(root, ref);
        String rev = ref.revisionOrMain();
        Path refFile = repo.resolve("refs").resolve(rev);
        if (Files.isRegularFile(refFile)) {
            String commit;
            try {
                commit = Files.readString(refFile, StandardCharsets.UTF_8).strip();
            } catch (IOException e) {
                return Optional.empty();
            }
            if (COMMIT.matcher(commit).matches()) {
                Path snap = repo.resolve("snapshots").resolve(commit);
                if (Files.isDirectory(snap)) {
                    return Optional.of(snap);
                }
            }
            return Optional.empty();
        }
        if (COMMIT.matcher(rev).matches()) {
            Path snap = repo.resolve("snapshots").resolve(rev);
            if (Files.isDirectory(snap)) {
                return Optional.of(snap);
            }
        }
        return Optional.empty();
    }

    /** {@link #find(Path, Ref)} for text, in the cache {@link #root()} names. */
    public static Optional<Path> find(String text) {
        return parse(text).flatMap(r -> find(root(), r));
    }

    /**
     * The snapshot folder of the hub reference {@code text} in the cache at {@code root}; a user's error naming the
     * download command when it is not there.
     */
    public static Path resolve(Path root, String text) {
        Ref ref = parse(text)
                .orElseThrow(() -> InvalidInputException.of(
                        text,
                        "no such file or folder",
                        "a model folder, .safetensors or .onnx file, or a hub reference org/name[@revision]",
                        "nothing"));
        return find(root, ref).orElseThrow(() -> notCached(root, ref));
    }

    /** The refusal for a hub reference that is not in the cache at {@code root}. */
    public static InvalidInputException notCached(Path root, Ref ref) {
        Path repo = repoFolder(root, ref);
        String found;
        if (!Files.isDirectory(repo)) {
            found = "no " + repo.getFileName() + " in " + root;
        } else {
            found = "no snapshot for revision '" + ref.revisionOrMain() + "' in " + repo;
        }
        return new InvalidInputException(ref + ": no such file or folder, nor a model in the Hugging Face cache;"
                + " expected a model folder or a downloaded hub model, found " + found + "; hint: nothing is"
                + " downloaded at run time, fetch it first with: " + ref.downloadCommand());
    }
}
