package scion.prune;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import scion.io.InvalidInputException;
import scion.io.runtime.calibration.Calibration;

/** LayerDrop's choices and checks that need no model: --drop parsing, kept blocks, the baseline, ranking ties. */
class LayerDropTest {
    @Test
    void lastDropsTheBlocksBeforeTheFinalOne() {
        assertArrayEquals(new int[] {6}, LayerDrop.last(8, 1));
        assertArrayEquals(new int[] {4, 5, 6}, LayerDrop.last(8, 3));
        assertArrayEquals(new int[] {0, 1, 2, 3, 4, 5, 6}, LayerDrop.last(8, 7));
        InvalidInputException e = assertThrows(InvalidInputException.class, () -> LayerDrop.last(8, 8));
        assertTrue(e.getMessage().startsWith("--remove: "), e.getMessage());
        assertTrue(e.getMessage().contains("expected 1..7"), e.getMessage());
        assertThrows(InvalidInputException.class, () -> LayerDrop.last(8, 0));
    }

    @Test
    void lowestIsStableAndSorted() {
        double[] bi = {0.5, 0.1, 0.3, 0.1, 0.9};
        assertArrayEquals(new int[] {1, 3}, LayerDrop.lowest(bi, 2));
        assertArrayEquals(new int[] {1, 2, 3}, LayerDrop.lowest(bi, 3));
        assertArrayEquals(new int[] {1}, LayerDrop.lowest(bi, 1)); // tie 1 vs 3: the earlier
    }

    @Test
    void keepListsTheRemainingSourceBlocks() {
        assertArrayEquals(new int[] {0, 1, 2, 5}, LayerDrop.keep(6, new int[] {3, 4}));
        assertArrayEquals(new int[] {0, 2, 4}, LayerDrop.keep(5, new int[] {3, 1}));
    }

    @Test
    void dropListsAreCheckedAllAtOnce() {
        assertArrayEquals(new int[] {3, 4}, LayerDrop.parseDrop(" 4, 3", 6));
        InvalidInputException e = assertThrows(InvalidInputException.class, () -> LayerDrop.parseDrop("1,1,9", 6));
        assertTrue(e.getMessage().startsWith("2 problems; --drop: block listed twice"), e.getMessage());
        assertTrue(e.getMessage().contains("--drop: block index out of range; expected 0..5, found 9"), e.getMessage());
        e = assertThrows(InvalidInputException.class, () -> LayerDrop.parseDrop("0,1,2", 3));
        assertTrue(e.getMessage().contains("would remove every block"), e.getMessage());
        e = assertThrows(InvalidInputException.class, () -> LayerDrop.parseDrop("1;2", 6));
        assertTrue(e.getMessage().contains("not a list of block indices"), e.getMessage());
        assertThrows(InvalidInputException.class, () -> LayerDrop.parseDrop(" ", 6));
        assertThrows(InvalidInputException.class, () -> LayerDrop.keep(4, new int[] {-1}));
    }

    @Test
    void metricsParseAndSayWhatTheyNeed() {
        assertEquals(LayerDrop.Metric.BLOCK_INFLUENCE, LayerDrop.Metric.parse("Block-Influence"));
        assertEquals(LayerDrop.Metric.ANGULAR, LayerDrop.Metric.parse("angular"));
        assertEquals(Calibration.Positions.LAST_TOKEN, LayerDrop.Metric.ANGULAR.defaultPositions());
        assertEquals(Calibration.Positions.ALL_TOKENS, LayerDrop.Metric.BLOCK_INFLUENCE.defaultPositions());
        assertTrue(!LayerDrop.Metric.LAST.calibrated() && LayerDrop.Metric.ANGULAR.calibrated());
        InvalidInputException e = assertThrows(InvalidInputException.class, () -> LayerDrop.Metric.parse("cosine"));
        assertEquals(
                "--metric: unknown metric; expected angular, block-influence or last, found 'cosine'", e.getMessage());
    }
}
