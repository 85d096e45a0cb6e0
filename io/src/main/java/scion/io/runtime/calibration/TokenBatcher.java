package scion.io.runtime.calibration;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;
import java.util.NoSuchElementException;

/**
 * Groups token sequences into batches under a token budget, reading its source lazily.
 *
 * <p>A batch is padded to its longest sequence; {@code sequences × longest ≤ batchTokens} always holds. Sequences
 * longer than {@code maxLength} are cut to their first {@code maxLength} tokens; empty ones are skipped. Once {@code
 * maxTokens} real tokens have been handed out the batcher stops, cutting the sequence that crosses the limit. Order
 * is kept. Nothing but the next sequence is read ahead.
 */
final class TokenBatcher implements Iterator<List<long[]>> {
    private final Iterator<long[]> source;
    private final int batchTokens;
    private final int maxLength;
    private final long maxTokens;
    private long handedOut;
    private long[] pending;
    private long truncated;

    TokenBatcher(Iterator<long[]> source, int batchTokens, int maxLength, long maxTokens) {
        if (batchTokens < 1 || maxLength < 1 || maxTokens < 1) {
            throw new IllegalArgumentException("batchTokens, maxLength and maxTokens must be positive; found "
                    + batchTokens + ", " + maxLength + ", " + maxTokens);
        }
        this.source = source;
        this.batchTokens = batchTokens;
        this.maxLength = Math.min(maxLength, batchTokens);
        this.maxTokens = maxTokens;
    }

    /** Sequences cut to {@code maxLength} so far. */
    long truncatedSequences() {
        return truncated;
    }

    private long[] peek() {
        while (pending == null && handedOut < maxTokens && source.hasNext()) {
            long[] s = source.next();
            if (s == null || s.length == 0) {
                continue;
            }
            int len = s.length;
            if (len > maxLength) {
                len = maxLength;
                truncated++;
            }
            len = (int) Math.min(len, maxTokens - handedOut);
            pending = len == s.length ? s : Arrays.copyOf(s, len);
            handedOut += len;
        }
        return pending;
    }

    @Override
    public boolean hasNext() {
        return peek() != null;
    }

    @Override
    public List<long[]> next() {
        if (peek() == null) {
            throw new NoSuchElementException();
        }
        List<long[]> batch = new ArrayList<>();
        int longest = 0;
        while (peek() != null) {
            int len = pending.length;
            int wouldBe = Math.max(longest, len);
            if (!batch.isEmpty() && (long) (batch.size() + 1) * wouldBe > batchTokens) {
                break;
            }
            batch.add(pending);
            longest = wouldBe;
            pending = null;
        }
        return batch;
    }
}
