package scion.io.runtime;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;
import scion.io.InvalidInputException;

class TokenInputsTest {

    /** Every token after the first is scored exactly once, with at least min(stride-overlap) context. */
    @Test
    void slidingWindowsScoreEveryTokenOnce() {
        for (int n : new int[] {2, 3, 7, 14, 100, 129, 257}) {
            for (int len : new int[] {2, 7, 64}) {
                for (int stride : new int[] {1, len / 2 == 0 ? 1 : len / 2, len}) {
                    long[] stream = new long[n];
                    for (int i = 0; i < n; i++) {
                        stream[i] = i;
                    }
                    List<TokenInputs.Sequence> w = TokenInputs.windows(stream, len, stride, "t");
                    int[] scored = new int[n];
                    for (TokenInputs.Sequence s : w) {
                        assertTrue(s.length() <= len);
                        assertTrue(s.scoreFrom() >= 1 && s.scoreFrom() < s.length(), s.toString());
                        for (int p = s.scoreFrom(); p < s.length(); p++) {
                            scored[(int) s.ids()[p]]++;
                        }
                    }
                    // non-overlapping windows cannot score their first token; overlapping ones score all
                    for (int i = 1; i < n; i++) {
                        boolean windowStart = stride == len && i % len == 0;
                        assertEquals(
                                windowStart ? 0 : 1,
                                scored[i],
                                "n=" + n + " len=" + len + " stride=" + stride + " i=" + i);
                    }
                    assertEquals(0, scored[0]);
                }
            }
        }
    }

    @Test
    void nonOverlappingWindowsAreThePlainChunks() {
        long[] s = {17, 37, 71, 119, 53, 1, 91, 48, 68, 102, 22, 84, 32, 122};
        List<TokenInputs.Sequence> w = TokenInputs.windows(s, 7, 7, "t");
        assertEquals(2, w.size());
        assertArrayEquals(new long[] {17, 37, 71, 119, 53, 1, 91}, w.get(0).ids());
        assertArrayEquals(new long[] {48, 68, 102, 22, 84, 32, 122}, w.get(1).ids());
        assertEquals(1, w.get(1).scoreFrom());
    }

    @Test
    void randomIdsAreDeterministicPerSeed() {
        long[] a = TokenInputs.randomIds(1000, 128, 42);
        assertArrayEquals(a, TokenInputs.randomIds(1000, 128, 42));
        assertFalse(java.util.Arrays.equals(a, TokenInputs.randomIds(1000, 128, 43)));
        for (long id : a) {
            assertTrue(id >= 0 && id < 128);
        }
        // java.util.Random's algorithm is specified: the first ids never change between JVMs
        assertArrayEquals(new long[] {93, 6, 87, 6, 39}, java.util.Arrays.copyOf(TokenInputs.randomIds(5, 128, 42), 5));
    }

    @Test
    void randomInputsForEncodersAreChunks() {
        TokenInputs in = TokenInputs.random(300, 1000, 1, false, 128, 64);
        assertEquals(3, in.sequences().size());
        assertEquals(300, in.tokens());
        assertEquals(44, in.sequences().get(2).length());
    }

    @Test
    void sentenceSplitting() {
        List<String> s = TokenInputs.sentences(
                "The first bridge. It fell!  Was it\nrebuilt? \"Yes,\" he said. In 1779 iron came.\n\nNew paragraph e.g. here");
        assertEquals(
                List.of(
                        "The first bridge.",
                        "It fell!",
                        "Was it rebuilt?",
                        "\"Yes,\" he said.",
                        "In 1779 iron came.",
                        "New paragraph e.g. here"),
                s);
    }

    @Test
    void badLengthsAreTheUsersMistake() {
        long[] s = new long[10];
        assertTrue(assertThrows(InvalidInputException.class, () -> TokenInputs.windows(s, 1, 1, "t"))
                .getMessage()
                .startsWith("--max-length"));
        assertTrue(assertThrows(InvalidInputException.class, () -> TokenInputs.windows(s, 8, 9, "t"))
                .getMessage()
                .startsWith("--stride"));
        assertTrue(assertThrows(InvalidInputException.class, () -> TokenInputs.windows(new long[1], 8, 4, "x.txt"))
                .getMessage()
                .startsWith("x.txt: too short"));
        assertThrows(InvalidInputException.class, () -> TokenInputs.random(1, 10, 0, true, 8, 4));
    }

    /** Equal lengths batch together in order of first appearance; a large vocabulary shrinks the batches. */
    @Test
    void batchesGroupByLengthAndCapTheOutputSize() {
        List<TokenInputs.Sequence> seqs = new java.util.ArrayList<>();
        for (int len : new int[] {5, 3, 5, 5, 3, 5}) {
            seqs.add(new TokenInputs.Sequence(new long[len], 1));
        }
        List<List<TokenInputs.Sequence>> b = Validation.batches(seqs, 3, 0);
        assertEquals(List.of(3, 1, 2), b.stream().map(List::size).toList());
        assertEquals(5, b.get(0).get(0).length());
        assertEquals(3, b.get(2).get(0).length());
        // 4,194,304 logits per token: a 5-token row is 20 Mi values, so one row per batch under the 32 Mi cap; a
        // 3-token row is 12 Mi values, so the two of them still share a batch
        assertEquals(
                List.of(1, 1, 1, 1, 2),
                Validation.batches(seqs, 3, 4 << 20).stream().map(List::size).toList());
        assertThrows(InvalidInputException.class, () -> Validation.batches(seqs, 0, 0));
    }
}
