package scion.io.runtime.calibration;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;

class TokenBatcherTest {
    /** Sequences of the given lengths whose tokens encode (sequence, position), counting how many were read. */
    private static final class Source implements Iterator<long[]> {
        final int[] lengths;
        int read;

        Source(int... lengths) {
            this.lengths = lengths;
        }

        @Override
        public boolean hasNext() {
            return read < lengths.length;
        }

        @Override
        public long[] next() {
            long[] s = new long[lengths[read]];
            for (int t = 0; t < s.length; t++) {
                s[t] = read * 1000L + t;
            }
            read++;
            return s;
        }
    }

    private static List<List<long[]>> all(TokenBatcher b) {
        List<List<long[]>> out = new ArrayList<>();
        while (b.hasNext()) {
            out.add(b.next());
        }
        return out;
    }

    @Test
    void everyBatchStaysWithinTheTokenBudgetIncludingPadding() {
        Random rnd = new Random(7);
        int[] lengths = new int[300];
        for (int i = 0; i < lengths.length; i++) {
            lengths[i] = 1 + rnd.nextInt(200);
        }
        int budget = 512;
        long total = 0;
        long seqs = 0;
        for (List<long[]> batch : all(new TokenBatcher(new Source(lengths), budget, 10_000, Long.MAX_VALUE))) {
            int longest = batch.stream().mapToInt(s -> s.length).max().orElseThrow();
            assertTrue(batch.size() * longest <= budget, batch.size() + " × " + longest + " > " + budget);
            for (long[] s : batch) {
                total += s.length;
            }
            seqs += batch.size();
        }
        assertEquals(lengths.length, seqs, "every sequence in exactly one batch");
        long expected = 0;
        for (int l : lengths) {
            expected += l;
        }
        assertEquals(expected, total);
    }

    @Test
    void greedyPackingKeepsOrder() {
        List<List<long[]>> batches = all(new TokenBatcher(new Source(3, 3, 3, 4, 2, 8), 12, 100, Long.MAX_VALUE));
        // [3,3,3,(4 → 4 × 4 = 16 > 12)] [4,2 (2 × 4 = 8), 8 → 3 × 8 = 24 > 12] [8]
        assertEquals(3, batches.size());
        assertEquals(3, batches.get(0).size());
        assertEquals(2, batches.get(1).size());
        assertEquals(1, batches.get(2).size());
        assertEquals(3000L, batches.get(1).get(0)[0], "the fourth sequence opens the second batch");
    }

    @Test
    void totalTokenBudgetCutsTheLastSequenceAndStops() {
        Source src = new Source(10, 10, 10, 10, 10);
        List<List<long[]>> batches = all(new TokenBatcher(src, 1000, 100, 25));
        long total =
                batches.stream().flatMap(List::stream).mapToLong(s -> s.length).sum();
        assertEquals(25, total);
        long[] last = batches.get(batches.size() - 1)
                .get(batches.get(batches.size() - 1).size() - 1);
        assertArrayEquals(new long[] {2000, 2001, 2002, 2003, 2004}, last, "the first 5 tokens of the third");
        assertEquals(3, src.read, "nothing read past the budget");
    }

    @Test
    void longSequencesAreCutToMaxLengthAndToTheBatchBudget() {
        TokenBatcher b = new TokenBatcher(new Source(50, 7, 0, 300), 64, 40, Long.MAX_VALUE);
        List<List<long[]>> batches = all(b);
        List<Integer> lengths = new ArrayList<>();
        batches.forEach(batch -> batch.forEach(s -> lengths.add(s.length)));
        assertEquals(List.of(40, 7, 40), lengths, "cut to 40, the empty one skipped");
        assertEquals(2, b.truncatedSequences());
        TokenBatcher small = new TokenBatcher(new Source(100), 16, 512, Long.MAX_VALUE);
        assertEquals(16, small.next().get(0).length, "a sequence never exceeds the batch budget");
    }

    @Test
    void readsOnlyOneSequenceAhead() {
        Source src = new Source(4, 4, 4, 4, 4, 4, 4, 4);
        TokenBatcher b = new TokenBatcher(src, 8, 100, Long.MAX_VALUE);
        assertEquals(2, b.next().size());
        assertEquals(3, src.read, "two batched and one peeked, the rest untouched");
    }

    @Test
    void rejectsNonPositiveBudgets() {
        assertThrows(IllegalArgumentException.class, () -> new TokenBatcher(new Source(1), 0, 1, 1));
        assertThrows(IllegalArgumentException.class, () -> new TokenBatcher(new Source(1), 1, 1, 0));
    }
}
