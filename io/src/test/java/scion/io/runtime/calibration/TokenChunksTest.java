package scion.io.runtime.calibration;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

class TokenChunksTest {
    @Test
    void documentsAreConcatenatedAndCutIntoWindowsWithTheTailKept() {
        List<long[]> docs = List.of(new long[] {1, 2, 3}, new long[0], new long[] {4, 5, 6, 7, 8}, new long[] {9});
        List<long[]> out = new ArrayList<>();
        TokenChunks.of(docs.iterator(), 4).forEachRemaining(out::add);
        assertEquals(3, out.size());
        assertArrayEquals(new long[] {1, 2, 3, 4}, out.get(0));
        assertArrayEquals(new long[] {5, 6, 7, 8}, out.get(1));
        assertArrayEquals(new long[] {9}, out.get(2));
    }

    @Test
    void windowsAreWrappedWithSpecialTokens() {
        TokenChunks c = TokenChunks.of(List.of(new long[] {7, 8, 9}).iterator(), 2, w -> {
            long[] s = new long[w.length + 2];
            s[0] = 101;
            System.arraycopy(w, 0, s, 1, w.length);
            s[s.length - 1] = 102;
            return s;
        });
        assertArrayEquals(new long[] {101, 7, 8, 102}, c.next());
        assertArrayEquals(new long[] {101, 9, 102}, c.next());
        assertFalse(c.hasNext());
        assertFalse(TokenChunks.of(List.<long[]>of().iterator(), 3).hasNext());
    }
}
