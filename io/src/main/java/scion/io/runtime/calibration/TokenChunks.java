package scion.io.runtime.calibration;

import java.util.Arrays;
import java.util.Iterator;
import java.util.NoSuchElementException;
import java.util.function.UnaryOperator;

/**
 * Calibration sequences cut from tokenised text: the documents' token ids are concatenated into one stream and cut
 * into consecutive windows of {@code length} content tokens, each optionally wrapped (a tokenizer's special tokens,
 * e.g. {@code TextTokenizer::wrap} for BERT's {@code [CLS] … [SEP]}). The last, shorter window is kept unless it is
 * empty. Lazy: documents are read as windows are asked for, so a corpus streams through {@link Calibration#run}
 * without being held.
 *
 * <p>Typical use: {@code TokenChunks.of(lines.map(tokenizer::encode).iterator(), 128 - tokenizer.specialCount(),
 * tokenizer::wrap)}.
 */
public final class TokenChunks implements Iterator<long[]> {
    private final Iterator<long[]> documents;
    private final int length;
    private final UnaryOperator<long[]> wrap;
    private long[] current = new long[0];
    private int offset;
    private long[] next;

    private TokenChunks(Iterator<long[]> documents, int length, UnaryOperator<long[]> wrap) {
        if (length < 1) {
            throw new IllegalArgumentException("chunk length must be positive; found " + length);
        }
        this.documents = documents;
        this.length = length;
        this.wrap = wrap;
    }

    /** Windows of {@code length} content tokens, each passed through {@code wrap}. */
    public static TokenChunks of(Iterator<long[]> documents, int length, UnaryOperator<long[]> wrap) {
        return new TokenChunks(documents, length, wrap);
    }

    /** Windows of {@code length} tokens, unwrapped. */
    public static TokenChunks of(Iterator<long[]> documents, int length) {
        return new TokenChunks(documents, length, UnaryOperator.identity());
    }

    @Override
    public boolean hasNext() {
        if (next == null) {
            next = fill();
        }
        return next != null;
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

    private long[] fill() {
        long[] window = new long[length];
        int n = 0;
        while (n < length) {
            if (offset == current.length) {
                if (!documents.hasNext()) {
                    break;
                }
                current = documents.next();
                offset = 0;
                continue;
            }
            int take = Math.min(length - n, current.length - offset);
            System.arraycopy(current, offset, window, n, take);
            n += take;
            offset += take;
        }
        if (n == 0) {
            return null;
        }
        return wrap.apply(n == length ? window : Arrays.copyOf(window, n));
    }
}
