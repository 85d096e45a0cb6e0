package scion.io.runtime;

import ai.djl.huggingface.tokenizers.Encoding;
import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Optional;
import scion.io.InvalidInputException;

/**
 * Turns text into token ids for a model: its Hugging Face {@code tokenizer.json} through DJL's {@link
 * HuggingFaceTokenizer}, or, for byte vocabularies without a tokenizer, the text's UTF-8 bytes.
 *
 * <p>Where the tokenizer is looked for ({@link #findTokenizerJson}): for a model folder, {@code tokenizer.json} in it;
 * for a file {@code <dir>/<name>.onnx}, {@code <dir>/tokenizer.json}, then {@code <dir>/<name>-tokenizer.json} and
 * {@code <dir>/<name>.tokenizer.json} (the layout of the MiniLM demo cache and of the langchain4j jars).
 *
 * <p>Byte-level fallback, used only when no tokenizer.json is found: the id of each UTF-8 byte is its value.
 *
 * <ul>
 *   <li>vocabulary of exactly 256: every text maps;
 *   <li>vocabulary below 256 (the 128-token test fixtures): the text maps only if every byte is below the vocabulary
 *       size (ASCII for 128); otherwise it is refused, naming the first offending byte and its offset. Bytes are
 *       never folded modulo the vocabulary;
 *   <li>vocabulary above 256: refused. Such a model has a real tokenizer, and its ids 0..255 are not bytes (use
 *       {@code --tokenizer} or random tokens).
 * </ul>
 *
 * <p>{@link #encode} returns the content ids only; {@link #wrap} adds the tokenizer's special tokens around one
 * sequence (BERT's {@code [CLS] … [SEP]}), found by encoding a probe word with and without them.
 */
public final class TextTokenizer implements AutoCloseable {
    /** Where the ids come from. */
    public enum Kind {
        HUGGING_FACE,
        BYTES
    }

    private final Kind kind;
    private final Path source; // tokenizer.json, or null for bytes
    private final HuggingFaceTokenizer hf;
    private final int vocab;
    private final long[] prefix;
    private final long[] suffix;

    private TextTokenizer(Kind kind, Path source, HuggingFaceTokenizer hf, int vocab, long[] prefix, long[] suffix) {
        this.kind = kind;
        this.source = source;
        this.hf = hf;
        this.vocab = vocab;
        this.prefix = prefix;
        this.suffix = suffix;
    }

    /** The tokenizer.json that belongs to a model folder or file, if there is one. */
    public static Optional<Path> findTokenizerJson(Path model) {
        List<Path> candidates = new ArrayList<>();
        if (Files.isDirectory(model)) {
            candidates.add(model.resolve("tokenizer.json"));
        } else {
            Path dir = model.toAbsolutePath().getParent();
            String name = model.getFileName().toString();
            int dot = name.lastIndexOf('.');
            String stem = dot > 0 ? name.substring(0, dot) : name;
            candidates.add(dir.resolve("tokenizer.json"));
            candidates.add(dir.resolve(stem + "-tokenizer.json"));
            candidates.add(dir.resolve(stem + ".tokenizer.json"));
        }
        for (Path p : candidates) {
            if (Files.isRegularFile(p)) {
                return Optional.of(p);
            }
        }
        return Optional.empty();
    }

    /**
     * The tokenizer for a model: {@code explicit} when given, else its tokenizer.json, else the byte-level fallback
     * where it applies; otherwise an {@link InvalidInputException} saying what was looked for.
     *
     * @param model the model folder or file
     * @param explicit a tokenizer.json the user named, or {@code null}
     * @param vocab the model's vocabulary size (ids must stay below it)
     */
    public static TextTokenizer forModel(Path model, Path explicit, int vocab) {
        if (explicit != null) {
            return huggingFace(explicit, vocab);
        }
        Optional<Path> found = findTokenizerJson(model);
        if (found.isPresent()) {
            return huggingFace(found.get(), vocab);
        }
        if (vocab > 256) {
            throw InvalidInputException.of(
                    model.toString(),
                    "no tokenizer.json beside the model, and the byte-level fallback applies only to vocabularies of"
                            + " at most 256 tokens",
                    "tokenizer.json (or <name>-tokenizer.json) next to the model, or a byte vocabulary",
                    "none, vocabulary " + vocab + "; hint: --tokenizer FILE, or --random-tokens N");
        }
        return bytes(vocab);
    }

    /** The byte-level tokenizer for a vocabulary of at most 256 ids (see the class comment). */
    public static TextTokenizer bytes(int vocab) {
        if (vocab <= 0 || vocab > 256) {
            throw InvalidInputException.of(
                    "byte-level tokenizer", "unsupported vocabulary size", "1 to 256", Integer.toString(vocab));
        }
        return new TextTokenizer(Kind.BYTES, null, null, vocab, new long[0], new long[0]);
    }

    /** A Hugging Face tokenizer.json, without padding or truncation (sequences are cut by the caller). */
    public static TextTokenizer huggingFace(Path json, int vocab) {
        if (!Files.isRegularFile(json)) {
            throw InvalidInputException.of(json.toString(), "no such tokenizer file", "a tokenizer.json", "nothing");
        }
        quietSlf4j();
        HuggingFaceTokenizer hf;
        try {
            hf = HuggingFaceTokenizer.builder()
                    .optTokenizerPath(json)
                    .optTruncation(false)
                    .optPadding(false)
                    .optAddSpecialTokens(false)
                    .build();
        } catch (IOException | RuntimeException e) {
            throw new InvalidInputException(
                    json + ": not a Hugging Face tokenizer; expected a tokenizer.json the tokenizers library reads,"
                            + " found: " + e.getMessage(),
                    e);
        }
        try {
            long[] content = hf.encode("hello", false, false).getIds();
            long[] with = hf.encode("hello", true, false).getIds();
            int at = indexOf(with, content);
            long[] prefix = at < 0 ? new long[0] : Arrays.copyOfRange(with, 0, at);
            long[] suffix = at < 0 ? new long[0] : Arrays.copyOfRange(with, at + content.length, with.length);
            return new TextTokenizer(Kind.HUGGING_FACE, json, hf, vocab, prefix, suffix);
        } catch (RuntimeException e) {
            hf.close();
            throw e;
        }
    }

    private static int indexOf(long[] hay, long[] needle) {
        outer:
        for (int i = 0; i + needle.length <= hay.length; i++) {
            for (int j = 0; j < needle.length; j++) {
                if (hay[i + j] != needle[j]) {
                    continue outer;
                }
            }
            return i;
        }
        return -1;
    }

    /** DJL logs through SLF4J; without a binding SLF4J prints a three-line warning on stderr. Keep it quiet. */
    private static void quietSlf4j() {
        if (System.getProperty("slf4j.internal.verbosity") == null) {
            System.setProperty("slf4j.internal.verbosity", "ERROR");
        }
    }

    public Kind kind() {
        return kind;
    }

    /** The tokenizer.json in use, if any. */
    public Optional<Path> source() {
        return Optional.ofNullable(source);
    }

    /** The vocabulary size every id is checked against. */
    public int vocab() {
        return vocab;
    }

    /** How many special tokens {@link #wrap} adds. */
    public int specialCount() {
        return prefix.length + suffix.length;
    }

    /** One line for reports: {@code tokenizer.json (path)} or {@code bytes (vocabulary 128)}. */
    public String describe() {
        return kind == Kind.HUGGING_FACE
                ? "tokenizer.json (" + source + ")"
                : "byte-level fallback (UTF-8 bytes as ids, vocabulary " + vocab + ")";
    }

    /** The content ids of {@code text}, without special tokens; every id is below the vocabulary size. */
    public long[] encode(String text) {
        return encode(text, "text");
    }

    /** {@link #encode(String)}, naming the text {@code where} in errors (a file name). */
    public long[] encode(String text, String where) {
        if (kind == Kind.BYTES) {
            byte[] b = text.getBytes(StandardCharsets.UTF_8);
            long[] ids = new long[b.length];
            for (int i = 0; i < b.length; i++) {
                int v = b[i] & 0xFF;
                if (v >= vocab) {
                    throw InvalidInputException.of(
                            where,
                            "byte " + v + " at offset " + i + " has no token in a " + vocab + "-token byte vocabulary",
                            "bytes below " + vocab + (vocab == 128 ? " (ASCII text)" : ""),
                            "byte " + v + "; hint: --random-tokens N, or a tokenizer.json beside the model");
                }
                ids[i] = v;
            }
            return ids;
        }
        Encoding e = hf.encode(text, false, false);
        long[] ids = e.getIds();
        for (long id : ids) {
            if (id < 0 || id >= vocab) {
                throw InvalidInputException.of(
                        source.toString(),
                        "the tokenizer produced an id outside the model's vocabulary",
                        "ids below " + vocab,
                        Long.toString(id) + "; hint: is this the model's own tokenizer?");
            }
        }
        return ids;
    }

    /** {@code content} between the tokenizer's special tokens (e.g. {@code [CLS] … [SEP]}); bytes add none. */
    public long[] wrap(long[] content) {
        long[] out = new long[prefix.length + content.length + suffix.length];
        System.arraycopy(prefix, 0, out, 0, prefix.length);
        System.arraycopy(content, 0, out, prefix.length, content.length);
        System.arraycopy(suffix, 0, out, prefix.length + content.length, suffix.length);
        return out;
    }

    @Override
    public void close() {
        if (hf != null) {
            hf.close();
        }
    }
}
