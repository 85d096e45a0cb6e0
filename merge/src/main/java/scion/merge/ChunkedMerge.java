package scion.merge;

import java.util.List;

/**
 * A merge method's work on one tensor in blocks of whole rows, so that no input is ever held whole: optional
 * statistics passes over the inputs, then an element-wise apply pass over the output's row blocks.
 *
 * <p>The loop ({@link Merger}) runs, for each pass {@code p < passes()}: {@link #observe} on every statistics block
 * (in parallel; the blocks are {@link scion.io.tensor.TensorEngine#statRows} rows, a function of the shape alone),
 * {@link #accept} with each partial result in element order (one thread), then {@link #endPass}. Then {@link #apply}
 * runs on the output's blocks, in parallel; each block is a whole number of statistics blocks. Statistics are therefore
 * the same for any thread count and chunk budget, and so are the bytes written.
 *
 * <p>A {@link Block}'s arrays are fresh float32 copies in the output's layout, as {@link TensorMerge#values()}: a method
 * may overwrite them.
 */
public interface ChunkedMerge {
    /** The number of statistics passes before {@link #apply}; 0 for element-wise methods. */
    default int passes() {
        return 0;
    }

    /** Whether pass {@code pass} turned out unnecessary after the passes before it (it is then not run at all). */
    default boolean skip(int pass) {
        return false;
    }

    /** The partial statistics of one statistics block in pass {@code pass}; runs on a worker thread. */
    default Object observe(int pass, Block b) {
        return null;
    }

    /** Receives the partial statistics of pass {@code pass}, in element order, on one thread. */
    default void accept(int pass, Object partial) {}

    /** Ends pass {@code pass}. */
    default void endPass(int pass) {}

    /**
     * The merged values of block {@code b}: {@code b.length()} floats, a new array or one of {@code b}'s; runs on
     * worker threads, concurrently for different blocks.
     */
    float[] apply(Block b);

    /**
     * Elements {@code [start, start + length)} of every input, which are rows {@code [row0, row0 + rows)}.
     *
     * @param values one array per model, as {@link TensorMerge#values()}
     * @param base the base's values, or null without a base
     */
    record Block(long start, int length, long row0, int rows, List<float[]> values, float[] base) {}
}
