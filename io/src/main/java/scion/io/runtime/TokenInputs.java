package scion.io.runtime;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import java.util.regex.Pattern;
import scion.io.InvalidInputException;

/**
 * The token sequences a model is run on, cut from text or drawn at random, and what they are (for reports).
 *
 * <p>Causal LMs read one token stream in sliding windows of {@code maxLength} tokens that start every {@code stride}
 * tokens (the Hugging Face perplexity recipe). Each window scores only the tokens no earlier window scored: position
 * {@code p} of a window ({@code p ≥ scoreFrom ≥ 1}) is predicted from the logits at {@code p - 1}. With {@code stride
 * == maxLength} the windows do not overlap and each scores all but its first token.
 *
 * <p>Encoders read one sequence per sentence (a sentence longer than {@code maxLength} is cut into pieces), each
 * between the tokenizer's special tokens; random ids are cut into plain chunks of {@code maxLength}.
 *
 * @param description what the inputs are, e.g. {@code text bridges.txt: 3,214 bytes, tokenizer.json (…)}
 * @param sequences the sequences, in order
 */
public record TokenInputs(String description, List<Sequence> sequences) {

    /**
     * One input row.
     *
     * @param ids the token ids
     * @param scoreFrom causal LMs: the first position whose token is scored ({@code ≥ 1}); encoders: 0
     */
    public record Sequence(long[] ids, int scoreFrom) {
        public int length() {
            return ids.length;
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof Sequence s && s.scoreFrom == scoreFrom && Arrays.equals(s.ids, ids);
        }

        @Override
        public int hashCode() {
            return 31 * Arrays.hashCode(ids) + scoreFrom;
        }

        @Override
        public String toString() {
            return "Sequence" + Arrays.toString(ids) + " from " + scoreFrom;
        }
    }

    public TokenInputs {
        sequences = List.copyOf(sequences);
        if (sequences.isEmpty()) {
            throw InvalidInputException.of("inputs", "no token sequences to run", "at least one", "none");
        }
    }

    /** The default longest sequence, capped by what the models were built for. */
    public static final int DEFAULT_MAX_LENGTH = 128;

    /** The default number of random tokens when neither text nor a count is given. */
    public static final int DEFAULT_RANDOM_TOKENS = 256;

    /**
     * What to run models on, as the command line says it.
     *
     * @param text a UTF-8 text file, or null for random tokens
     * @param randomTokens how many random tokens (used when {@code text} is null; null for the default)
     * @param seed the random seed
     * @param tokenizer an explicit tokenizer.json, or null to look beside the first model
     * @param maxLength the longest sequence, or null for {@value #DEFAULT_MAX_LENGTH} capped by the models' positions
     * @param stride causal-LM window step, or null for half the max length
     */
    public record Request(
            Path text, Integer randomTokens, long seed, Path tokenizer, Integer maxLength, Integer stride) {
        /**
         * The inputs for these models: tokenised with the first model's tokenizer, kind and vocabulary from the first
         * model (ids outside another model's vocabulary fail when it runs them).
         */
        public TokenInputs build(List<RuntimeModel> models) {
            RuntimeModel.Info first = models.get(0).info();
            int limit = 0;
            for (RuntimeModel m : models) {
                int p = m.info().maxPositions();
                if (p > 0) {
                    limit = limit == 0 ? p : Math.min(limit, p);
                }
            }
            int len;
            if (maxLength == null) {
                len = limit > 0 ? Math.min(DEFAULT_MAX_LENGTH, limit) : DEFAULT_MAX_LENGTH;
            } else {
                len = maxLength;
                if (limit > 0 && len > limit) {
                    throw InvalidInputException.of(
                            "--max-length",
                            "longer than the model's positions",
                            "at most " + limit,
                            Integer.toString(len));
                }
            }
            int str = stride == null ? Math.max(1, len / 2) : stride;
            boolean causal = first.kind() == RuntimeModel.Kind.CAUSAL_LM;
            TokenInputs in;
            if (text != null) {
                String body = readText(text);
                try (TextTokenizer tok = TextTokenizer.forModel(first.location(), tokenizer, first.vocab())) {
                    in = fromText(body, text.getFileName().toString(), tok, causal, len, str);
                }
            } else {
                int n = randomTokens == null ? DEFAULT_RANDOM_TOKENS : randomTokens;
                in = random(n, first.vocab(), seed, causal, len, str);
            }
            String shape = causal
                    ? String.format(Locale.ROOT, "max length %d, stride %d", len, str)
                    : String.format(Locale.ROOT, "max length %d", len);
            return new TokenInputs(
                    in.description()
                            + String.format(
                                    Locale.ROOT,
                                    " → %d %s, %,d tokens (%s)",
                                    in.sequences().size(),
                                    (causal ? "window" : "sequence")
                                            + (in.sequences().size() == 1 ? "" : "s"),
                                    in.tokens(),
                                    shape),
                    in.sequences());
        }
    }

    /** Reads a UTF-8 text file; a file that is not UTF-8 or missing is the user's mistake. */
    public static String readText(Path file) {
        if (!Files.isRegularFile(file)) {
            throw InvalidInputException.of(file.toString(), "no such text file", "a UTF-8 text file", "nothing");
        }
        try {
            return StandardCharsets.UTF_8
                    .newDecoder()
                    .decode(java.nio.ByteBuffer.wrap(Files.readAllBytes(file)))
                    .toString();
        } catch (CharacterCodingException e) {
            throw InvalidInputException.of(file.toString(), "not valid UTF-8", "a UTF-8 text file", e.getMessage());
        } catch (IOException e) {
            throw new UncheckedIOException(file + ": cannot read the text", e);
        }
    }

    /** All ids across sequences (overlapping windows counted each time). */
    public long tokens() {
        long n = 0;
        for (Sequence s : sequences) {
            n += s.length();
        }
        return n;
    }

    /** Tokens scored for perplexity (causal LMs). */
    public long scoredTokens() {
        long n = 0;
        for (Sequence s : sequences) {
            n += Math.max(0, s.length() - s.scoreFrom());
        }
        return n;
    }

    /**
     * Inputs from text.
     *
     * @param text the text
     * @param name the text's name for reports (a file name)
     * @param tok the model's tokenizer
     * @param causal sliding windows over one stream (true) or one sequence per sentence (false)
     */
    public static TokenInputs fromText(
            String text, String name, TextTokenizer tok, boolean causal, int maxLength, int stride) {
        checkLengths(maxLength, stride);
        if (text.isBlank()) {
            throw InvalidInputException.of(name, "the text is empty", "some text", "only white space or nothing");
        }
        String what = "text " + name + ": " + String.format(Locale.ROOT, "%,d", text.length()) + " characters, "
                + tok.describe();
        if (causal) {
            return new TokenInputs(what, windows(tok.encode(text, name), maxLength, stride, name));
        }
        int room = maxLength - tok.specialCount();
        if (room < 1) {
            throw InvalidInputException.of(
                    "--max-length",
                    "too short for the tokenizer's special tokens",
                    "more than " + tok.specialCount(),
                    Integer.toString(maxLength));
        }
        List<Sequence> out = new ArrayList<>();
        for (String sentence : sentences(text)) {
            long[] ids = tok.encode(sentence, name);
            for (int at = 0; at < ids.length; at += room) {
                out.add(new Sequence(tok.wrap(Arrays.copyOfRange(ids, at, Math.min(ids.length, at + room))), 0));
            }
        }
        return new TokenInputs(what, out);
    }

    /** {@code n} ids drawn uniformly from {@code [0, vocab)} with {@code java.util.Random(seed)}. */
    public static TokenInputs random(int n, int vocab, long seed, boolean causal, int maxLength, int stride) {
        checkLengths(maxLength, stride);
        if (n < 2) {
            throw InvalidInputException.of("--random-tokens", "too few tokens", "at least 2", Integer.toString(n));
        }
        long[] ids = randomIds(n, vocab, seed);
        String what = String.format(Locale.ROOT, "%,d random tokens (uniform over %,d ids, seed %d)", n, vocab, seed);
        if (causal) {
            return new TokenInputs(what, windows(ids, maxLength, stride, "--random-tokens"));
        }
        List<Sequence> out = new ArrayList<>();
        for (int at = 0; at < n; at += maxLength) {
            out.add(new Sequence(Arrays.copyOfRange(ids, at, Math.min(n, at + maxLength)), 0));
        }
        return new TokenInputs(what, out);
    }

    /** Deterministic random ids: the same {@code (n, vocab, seed)} gives the same ids on every JVM. */
    public static long[] randomIds(int n, int vocab, long seed) {
        Random r = new Random(seed);
        long[] ids = new long[n];
        for (int i = 0; i < n; i++) {
            ids[i] = r.nextInt(vocab);
        }
        return ids;
    }

    /** Sliding windows over {@code stream} (see the class comment); windows that would score nothing are dropped. */
    public static List<Sequence> windows(long[] stream, int maxLength, int stride, String where) {
        checkLengths(maxLength, stride);
        int n = stream.length;
        if (n < 2) {
            throw InvalidInputException.of(
                    where, "too short to score a next token", "at least 2 tokens", n + " token" + (n == 1 ? "" : "s"));
        }
        List<Sequence> out = new ArrayList<>();
        int prevEnd = 0;
        for (int begin = 0; ; begin += stride) {
            int end = Math.min(begin + maxLength, n);
            int fresh = end - prevEnd;
            int scoreFrom = Math.max(1, (end - begin) - fresh);
            if (scoreFrom < end - begin) {
                out.add(new Sequence(Arrays.copyOfRange(stream, begin, end), scoreFrom));
            }
            prevEnd = end;
            if (end == n) {
                break;
            }
        }
        return out;
    }

    private static final Pattern PARAGRAPH = Pattern.compile("\\R\\s*\\R");
    private static final Pattern SENTENCE_END = Pattern.compile("(?<=[.!?][\"')\\]]?)\\s+(?=[\\p{Lu}\\p{N}\"'(\\[])");

    /**
     * The sentences of a text: paragraphs split at blank lines, then after {@code . ! ?} (optionally followed by a
     * closing quote or bracket) and white space when the next character starts a sentence (upper case, digit, quote
     * or bracket). Line breaks inside a paragraph become spaces.
     */
    public static List<String> sentences(String text) {
        List<String> out = new ArrayList<>();
        for (String para : PARAGRAPH.split(text)) {
            String p = para.replaceAll("\\s+", " ").trim();
            if (p.isEmpty()) {
                continue;
            }
            for (String s : SENTENCE_END.split(p)) {
                if (!s.isBlank()) {
                    out.add(s.trim());
                }
            }
        }
        return out;
    }

    private static void checkLengths(int maxLength, int stride) {
        if (maxLength < 2) {
            throw InvalidInputException.of("--max-length", "too short", "at least 2", Integer.toString(maxLength));
        }
        if (stride < 1 || stride > maxLength) {
            throw InvalidInputException.of(
                    "--stride", "out of range", "1 to --max-length (" + maxLength + ")", Integer.toString(stride));
        }
    }
}
