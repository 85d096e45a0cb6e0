package scion.test;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import scion.io.arch.Architectures;

/** Where the test inputs are: the real MiniLM from its Maven artifact, and the committed Hugging Face fixtures. */
public final class Fixtures {
    private Fixtures() {}

    private static Path miniLm;

    /** all-MiniLM-L6-v2 ONNX, copied once per test JVM from the model jar on the classpath into a temp folder. */
    public static synchronized Path miniLmOnnx() {
        if (miniLm == null) {
            try {
                Path dir = Files.createTempDirectory("scion-minilm");
                dir.toFile().deleteOnExit();
                Path f = dir.resolve("all-minilm-l6-v2.onnx");
                try (InputStream in = Fixtures.class.getResourceAsStream("/all-minilm-l6-v2.onnx")) {
                    if (in == null) {
                        throw new IllegalStateException("all-minilm-l6-v2.onnx is not on the test classpath");
                    }
                    Files.copy(in, f, StandardCopyOption.REPLACE_EXISTING);
                }
                f.toFile().deleteOnExit();
                miniLm = f;
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
        return miniLm;
    }

    /** A committed fixture folder under {@code fixtures/} (e.g. {@code hf/llama}, {@code onnx}). */
    public static Path resource(String relative) {
        var url = Fixtures.class.getResource("/fixtures/" + relative);
        if (url == null) {
            throw new IllegalStateException("missing test fixture fixtures/" + relative);
        }
        try {
            return Path.of(url.toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    /** The repository root (tests run in {@code test/}). */
    public static Path repoRoot() {
        Path p = Path.of("").toAbsolutePath();
        return Files.exists(p.resolve("test/fixtures")) ? p : p.getParent();
    }

    /** The Hugging Face fixture folder of a family (config.json + model.safetensors + expected.json). */
    public static Path hf(String family) {
        return resource("hf/" + family);
    }

    /**
     * The small causal LM trained on real text ({@code test/fixtures/train_tiny_lm.py}): llama, hidden 128, 8 layers,
     * 4 query / 2 key-value heads, FFN 384, byte-level BPE vocabulary of 1024, bf16 safetensors, trained on the prose
     * of "The Rust Programming Language". The folder also holds {@code tokenizer.json}, {@code heldout.txt} (held-out
     * chapters), {@code calib.txt} (24 kB of training text) and {@code training.json} (loss log and transformers'
     * held-out perplexity).
     */
    public static Path trainedLm() {
        return resource("trained/rustbook-llama");
    }

    /**
     * Every registered family ({@link Architectures#FAMILIES}): each has a fixture {@code hf/<family>}, so tests that
     * iterate this cover a new family as soon as its JSON, registry line and fixture exist.
     */
    public static List<String> families() {
        return Architectures.FAMILIES;
    }

    /** The registered families that are causal language models. */
    public static List<String> causalFamilies() {
        List<String> out = new ArrayList<>();
        for (String f : Architectures.FAMILIES) {
            if (Architectures.byFamily(f).orElseThrow().isCausalLm()) {
                out.add(f);
            }
        }
        return out;
    }

    /**
     * Parameter counts as transformers reports them ({@code sum(p.numel() for p in model.parameters())}, tied
     * weights counted once), recorded when the fixtures were generated.
     */
    public static long hfParameterCount(String family) {
        Long n = PARAMETERS.get(family);
        if (n == null) {
            throw new IllegalStateException("no recorded transformers parameter count for fixture hf/" + family
                    + " (generate_hf_fixtures.py writes it into expected.json as 'parameters')");
        }
        return n;
    }

    private static final Map<String, Long> PARAMETERS = Map.of(
            "llama", 90_432L,
            "mistral", 90_432L,
            "qwen2", 82_496L,
            "gemma", 82_240L,
            "gemma2", 82_496L,
            "gpt2", 79_360L,
            "gpt_neox", 83_456L,
            "opt", 79_488L,
            "qwen3", 106_944L,
            "bert", 83_648L);
}
