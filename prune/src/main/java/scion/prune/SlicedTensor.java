package scion.prune;

import java.nio.ByteBuffer;
import scion.io.tensor.DType;
import scion.io.tensor.Tensor;
import scion.io.tensor.TensorOps;

/**
 * A lazy sub-tensor: the elements of {@code source} at the kept indices of each axis (a gather along every axis at
 * once), optionally transformed element-wise ({@code y = a·x + b}), in the source's dtype. Computed on the first read
 * and released once the last byte has been read, so a writer holds one such tensor at a time.
 *
 * <p>Without a transform the values are copied exactly (a float32 round trip of F32/F16/BF16 values is exact); with
 * one they are rounded to nearest even on encoding.
 */
final class SlicedTensor implements Tensor {
    private final String name;
    private final Tensor source;
    private final int[][] keep; // per stored axis: kept source indices (ascending), or null for all
    private final long[] shape;
    private final float scale;
    private final float shift;
    private float[] vector; // a 1-D result while it is read
    private long rowRead = -1; // the output row held in outRow
    private float[] sourceRow;
    private float[] outRow;

    /**
     * @param keep per stored axis of {@code source}, the indices kept, or {@code null} to keep the axis whole
     * @param scale multiplies every value
     * @param shift is added after the scale
     */
    SlicedTensor(String name, Tensor source, int[][] keep, float scale, float shift) {
        long[] src = source.shape();
        if (keep.length != src.length) {
            throw new IllegalArgumentException(
                    "tensor '" + source.name() + "' has " + src.length + " axes; " + keep.length + " index sets given");
        }
        if (src.length > 2) {
            throw new IllegalArgumentException("tensor '" + source.name() + "': only 1-D and 2-D weights are sliced");
        }
        this.name = name;
        this.source = source;
        this.keep = keep.clone();
        this.shape = new long[src.length];
        for (int a = 0; a < src.length; a++) {
            shape[a] = keep[a] == null ? src[a] : keep[a].length;
            if (keep[a] != null) {
                for (int i : keep[a]) {
                    if (i < 0 || i >= src[a]) {
                        throw new IllegalArgumentException(
                                "index " + i + " outside axis " + a + " of '" + source.name() + "' (" + src[a] + ")");
                    }
                }
            }
        }
        this.scale = scale;
        this.shift = shift;
    }

    @Override
    public String name() {
        return name;
    }

    @Override
    public DType dtype() {
        return source.dtype();
    }

    @Override
    public long[] shape() {
        return shape;
    }

    @Override
    public synchronized void readBytes(long byteOffset, ByteBuffer dst) {
        int size = dtype().size();
        if (byteOffset % size != 0 || dst.remaining() % size != 0) {
            throw new IllegalStateException("'" + name + "': read of " + dst.remaining() + " bytes at " + byteOffset
                    + " is not aligned to " + size + "-byte elements");
        }
        long e = byteOffset / size;
        long end = Math.min(numel(), e + dst.remaining() / size);
        if (shape.length == 1) {
            if (vector == null) {
                vector = computeVector();
            }
            TensorOps.encode(dtype(), vector, (int) e, (int) (end - e), dst);
            if (end == numel()) {
                vector = null;
            }
            return;
        }
        long outCols = shape[1];
        while (e < end) {
            long r = e / outCols;
            int c = (int) (e % outCols);
            int n = (int) Math.min(outCols - c, end - e);
            TensorOps.encode(dtype(), row(r), c, n, dst);
            e += n;
        }
    }

    /** Output row {@code r} (kept while the reader is in it). */
    private float[] row(long r) {
        if (r == rowRead) {
            return outRow;
        }
        int cols = Math.toIntExact(source.shape()[1]);
        int outCols = Math.toIntExact(shape[1]);
        if (sourceRow == null) {
            sourceRow = new float[cols];
            outRow = new float[outCols];
        }
        long sr = keep[0] == null ? r : keep[0][Math.toIntExact(r)];
        source.readFloats(Math.multiplyExact(sr, (long) cols), sourceRow, 0, cols);
        for (int c = 0; c < outCols; c++) {
            outRow[c] = transform(sourceRow[keep[1] == null ? c : keep[1][c]]);
        }
        rowRead = r;
        return outRow;
    }

    private float[] computeVector() {
        float[] all = source.toFloats();
        float[] out = new float[Math.toIntExact(numel())];
        for (int i = 0; i < out.length; i++) {
            out[i] = transform(all[keep[0] == null ? i : keep[0][i]]);
        }
        return out;
    }

    private float transform(float x) {
        return scale != 1f || shift != 0f ? x * scale + shift : x;
    }
}
