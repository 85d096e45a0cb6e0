package scion.io.tensor;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.Future;

/**
 * A lazy output tensor produced in row blocks by a {@link TensorEngine}: when a writer reads a byte range, the blocks
 * covering it (and the next few, read-ahead) are computed by the engine's workers, encoded to the output dtype with
 * round-to-nearest-even, served, and dropped once the writer has passed them.
 *
 * <p>The tensor is viewed as {@code [rows, rowLength]} with {@code rowLength} the product of every axis but the first
 * (one element per row for 0-D and 1-D tensors). Writers read tensors front to back; a read behind the blocks kept
 * recomputes them. Before the first block, {@link Kernel#prepare} runs once on the reading thread (an operator's
 * statistics passes). At most {@link TensorEngine#inFlight()} blocks are alive.
 */
public final class BlockedTensor implements Tensor {
    /** How a {@link BlockedTensor} computes its values. */
    public interface Kernel {
        /** Runs once before the first block is computed (statistics passes); the default does nothing. */
        default void prepare() {}

        /**
         * The values of rows {@code [row0, row0 + rows)}, row-major, {@code rows × rowLength} floats. Called from worker
         * threads, concurrently for different blocks: it must not change shared state.
         */
        float[] compute(long row0, int rows);
    }

    private final String name;
    private final DType dtype;
    private final long[] shape;
    private final long rowLength;
    private final long rowCount;
    private final int blockRows;
    private final long blockBytes;
    private final int blocks;
    private final Kernel kernel;
    private final TensorEngine engine;
    private final TreeMap<Integer, Future<ByteBuffer>> alive = new TreeMap<>();
    private boolean prepared;

    /**
     * A tensor of {@code shape} in {@code dtype} whose blocks hold {@code blockRows} rows.
     *
     * @param blockRows rows per block, e.g. {@link TensorEngine#blockRows}
     */
    public BlockedTensor(String name, DType dtype, long[] shape, int blockRows, Kernel kernel, TensorEngine engine) {
        this.name = name;
        this.dtype = dtype;
        this.shape = shape.clone();
        this.rowLength = rowLength(shape);
        this.rowCount = rowCount(shape);
        this.blockRows = Math.max(1, blockRows);
        this.blockBytes = Math.multiplyExact(Math.multiplyExact((long) this.blockRows, rowLength), (long) dtype.size());
        this.blocks = Math.toIntExact((rowCount + this.blockRows - 1) / this.blockRows);
        long elements = Math.multiplyExact((long) this.blockRows, rowLength);
        if (elements > Integer.MAX_VALUE - 8) {
            throw new IllegalArgumentException("block of " + elements + " elements in '" + name + "'");
        }
        this.kernel = kernel;
        this.engine = engine;
    }

    /** Elements per row: the product of every axis but the first (1 for 0-D and 1-D tensors). */
    public static long rowLength(long[] shape) {
        long n = 1;
        for (int i = 1; i < shape.length; i++) {
            n = Math.multiplyExact(n, shape[i]);
        }
        return n;
    }

    /** Rows: the first axis (the element count for 1-D tensors, 1 for scalars). */
    public static long rowCount(long[] shape) {
        return shape.length == 0 ? 1 : shape[0];
    }

    @Override
    public String name() {
        return name;
    }

    @Override
    public DType dtype() {
        return dtype;
    }

    @Override
    public long[] shape() {
        return shape.clone();
    }

    @Override
    public synchronized void readBytes(long byteOffset, ByteBuffer dst) {
        if (!prepared) {
            kernel.prepare();
            prepared = true;
        }
        long total = byteSize();
        long pos = byteOffset;
        while (dst.hasRemaining() && pos < total) {
            int b = (int) (pos / blockBytes);
            // Blocks behind the reader are done with.
            Map<Integer, Future<ByteBuffer>> behind = alive.headMap(b, false);
            behind.values().forEach(f -> f.cancel(true));
            behind.clear();
            for (int k = b; k < Math.min(blocks, b + engine.inFlight()); k++) {
                if (!alive.containsKey(k)) {
                    int block = k;
                    alive.put(k, engine.submit(() -> encode(block)));
                }
            }
            ByteBuffer data = TensorEngine.await(alive.get(b));
            int off = (int) (pos - (long) b * blockBytes);
            int n = Math.min(dst.remaining(), data.limit() - off);
            ByteBuffer src = data.duplicate();
            src.position(off).limit(off + n);
            dst.put(src);
            pos += n;
            if (off + n == data.limit()) {
                alive.remove(b);
            }
        }
        if (pos >= total) {
            alive.values().forEach(f -> f.cancel(true));
            alive.clear();
        }
    }

    private ByteBuffer encode(int block) {
        long row0 = (long) block * blockRows;
        int rows = (int) Math.min(blockRows, rowCount - row0);
        int n = Math.toIntExact(rows * rowLength);
        float[] v = kernel.compute(row0, rows);
        if (v.length != n) {
            throw new IllegalStateException("'" + name + "': a block of " + n + " values came back with " + v.length);
        }
        ByteBuffer b = ByteBuffer.allocate(Math.multiplyExact(n, dtype.size())).order(ByteOrder.LITTLE_ENDIAN);
        TensorOps.encode(dtype, v, 0, n, b);
        b.flip();
        return b;
    }

    @Override
    public String toString() {
        return describe() + " in blocks of " + blockRows + " rows " + Arrays.toString(shape);
    }
}
