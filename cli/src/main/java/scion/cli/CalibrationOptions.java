package scion.cli;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Iterator;
import java.util.NoSuchElementException;
import java.util.function.Consumer;
import picocli.CommandLine.Option;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.runtime.Device;
import scion.io.runtime.SessionFactory;
import scion.io.runtime.TextTokenizer;
import scion.io.runtime.calibration.Calibration;
import scion.io.runtime.calibration.TokenChunks;

/**
 * The calibration options every operator that reads activations shares ({@code --calib TEXT --tokens T}, mixed in
 * with picocli's {@code @Mixin}), and the one way to turn them into a calibration run: the text file is read line by
 * line, each non-blank line tokenised with the model's tokenizer (or {@code --calib-tokenizer}), the token stream cut
 * into windows of {@code --calib-length} tokens (BERT-style models get their {@code [CLS] … [SEP]} around each) and
 * streamed through {@link Calibration} until {@code --tokens} real tokens have been seen. Nothing but one batch's
 * activations and the consumer's statistics is held.
 */
final class CalibrationOptions {
    @Option(
            names = "--calib",
            paramLabel = "TEXT",
            description = "Calibration text: a UTF-8 file, one document or paragraph per line.")
    Path text;

    @Option(
            names = "--tokens",
            paramLabel = "T",
            defaultValue = "32768",
            description = "Calibration budget in real tokens (default: ${DEFAULT-VALUE}).")
    long tokens;

    @Option(
            names = "--calib-length",
            paramLabel = "N",
            defaultValue = "128",
            description = "Tokens per calibration sequence (default: ${DEFAULT-VALUE}, at most the model's positions).")
    int length;

    @Option(
            names = "--calib-tokenizer",
            paramLabel = "FILE",
            description = "A tokenizer.json for the calibration text (default: the one beside the model).")
    Path tokenizer;

    @Option(
            names = "--calib-device",
            paramLabel = "cpu|cuda|auto",
            defaultValue = "cpu",
            description = "Where ONNX Runtime runs the calibration (cuda needs the -Pgpu build and CUDA 12 + cuDNN 9;"
                    + " default: ${DEFAULT-VALUE}).")
    String device;

    /** Whether {@code --calib} was given. */
    boolean given() {
        return text != null;
    }

    /** Fails with a usage-style message naming the option when the operator needs calibration and none was given. */
    void require(String why) {
        if (text == null) {
            throw new InvalidInputException("--calib TEXT is required " + why);
        }
    }

    /** Checks the options and returns them with {@code --calib-length} as the sequence length (see {@link #run}). */
    Calibration.Options options() {
        if (length < 2) {
            throw InvalidInputException.of("--calib-length", "too short", "at least 2 tokens", String.valueOf(length));
        }
        Device d = Device.parse(device);
        if (d == Device.CUDA) {
            SessionFactory.requireCuda();
        }
        return Calibration.Options.defaults()
                .withMaxTokens(tokens)
                .withMaxLength(length)
                .withBatchTokens(Math.max(2048, length))
                .withDevice(d);
    }

    /**
     * Runs the calibration text through {@code model} once, handing each batch to {@code consumer}.
     *
     * @throws InvalidInputException when the text is missing, unreadable, empty, or has no tokenizer
     */
    Calibration.Summary run(Model model, Calibration.Request request, Consumer<? super Calibration.Batch> consumer) {
        require("here");
        if (!Files.isRegularFile(text)) {
            throw InvalidInputException.of(text.toString(), "calibration text not found", "a UTF-8 text file", "none");
        }
        int vocab = model.graph().dims().vocab();
        Calibration.Options options = options();
        // A learned position table (BERT, GPT-2, OPT) bounds the windows; rotary models take --calib-length as given.
        // Both come from the weights, so a checkpoint and its ONNX export get the same windows.
        int learned =
                model.graph().dims().positions() - model.graph().architecture().positionOffset();
        if (learned > 0 && learned < length) {
            options = options.withMaxLength(learned);
        }
        try (TextTokenizer tok = TextTokenizer.forModel(model.location(), tokenizer, vocab);
                BufferedReader reader = Files.newBufferedReader(text, StandardCharsets.UTF_8);
                Calibration calibration = Calibration.open(model, request, options)) {
            int content = Math.max(1, Math.min(length, calibration.maxLength()) - tok.specialCount());
            Iterator<long[]> docs = new Documents(reader, tok, text.toString());
            Calibration.Summary s = calibration.run(TokenChunks.of(docs, content, tok::wrap), consumer);
            if (s.tokens() == 0) {
                throw InvalidInputException.of(
                        text.toString(), "no calibration tokens", "non-blank text", "an empty file");
            }
            return s;
        } catch (IOException e) {
            throw new UncheckedIOException(text + ": cannot read the calibration text", e);
        }
    }

    /**
     * The calibration text as token windows for {@code model} without running it, for operators with their own
     * forward pass (Fisher merging): the same lines, tokenizer and {@code [CLS] … [SEP]} wrapping as {@link #run},
     * windows of at most {@code maxLength} tokens in all. Close it to release the tokenizer and the file.
     */
    Windows windows(Model model, int maxLength) {
        require("here");
        if (!Files.isRegularFile(text)) {
            throw InvalidInputException.of(text.toString(), "calibration text not found", "a UTF-8 text file", "none");
        }
        TextTokenizer tok = TextTokenizer.forModel(
                model.location(), tokenizer, model.graph().dims().vocab());
        try {
            BufferedReader reader = Files.newBufferedReader(text, StandardCharsets.UTF_8);
            int content = Math.max(1, maxLength - tok.specialCount());
            return new Windows(
                    TokenChunks.of(new Documents(reader, tok, text.toString()), content, tok::wrap), tok, reader);
        } catch (IOException e) {
            tok.close();
            throw new UncheckedIOException(text + ": cannot read the calibration text", e);
        } catch (RuntimeException e) {
            tok.close();
            throw e;
        }
    }

    /** Token windows of the calibration text (see {@link #windows}). */
    static final class Windows implements Iterator<long[]>, AutoCloseable {
        private final Iterator<long[]> chunks;
        private final TextTokenizer tokenizer;
        private final BufferedReader reader;

        Windows(Iterator<long[]> chunks, TextTokenizer tokenizer, BufferedReader reader) {
            this.chunks = chunks;
            this.tokenizer = tokenizer;
            this.reader = reader;
        }

        @Override
        public boolean hasNext() {
            return chunks.hasNext();
        }

        @Override
        public long[] next() {
            return chunks.next();
        }

        @Override
        public void close() {
            tokenizer.close();
            try {
                reader.close();
            } catch (IOException e) {
                throw new UncheckedIOException("cannot close the calibration text", e);
            }
        }
    }

    /** Non-blank lines of the text, tokenised as they are asked for. */
    private static final class Documents implements Iterator<long[]> {
        private final BufferedReader reader;
        private final TextTokenizer tokenizer;
        private final String where;
        private long[] next;
        private long line;

        Documents(BufferedReader reader, TextTokenizer tokenizer, String where) {
            this.reader = reader;
            this.tokenizer = tokenizer;
            this.where = where;
        }

        @Override
        public boolean hasNext() {
            try {
                while (next == null) {
                    String s = reader.readLine();
                    if (s == null) {
                        return false;
                    }
                    line++;
                    if (!s.isBlank()) {
                        next = tokenizer.encode(s, where + ":" + line);
                    }
                }
                return true;
            } catch (IOException e) {
                throw new UncheckedIOException(where + ": cannot read line " + (line + 1), e);
            }
        }

        @Override
        public long[] next() {
            if (!hasNext()) {
                throw new NoSuchElementException();
            }
            long[] out = next;
            next = null;
            return out;
        }
    }
}
