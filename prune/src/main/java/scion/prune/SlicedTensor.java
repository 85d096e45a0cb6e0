package scion.prune;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
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
    private ByteBuffer bytes;

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
        if (bytes == null) {
            bytes = compute();
        }
        int off = Math.toIntExact(byteOffset);
        ByteBuffer src = bytes.duplicate();
        int n = Math.min(dst.remaining(), src.limit() - off);
        src.position(off).limit(off + n);
        dst.put(src);
        if (off + n >= bytes.limit()) {
            bytes = null; // read to the end: drop the buffer (a re-read recomputes it)
        }
    }

    private ByteBuffer compute() {
        long[] src = source.shape();
        float[] out = new float[Math.toIntExact(numel())];
        if (src.length == 1) {
            float[] all = source.toFloats();
            for (int i = 0; i < out.length; i++) {
                out[i] = all[keep[0] == null ? i : keep[0][i]];
            }
        } else if (src.length == 2) {
            int cols = Math.toIntExact(src[1]);
            int outCols = Math.toIntExact(shape[1]);
            float[] row = new float[cols];
            for (int r = 0; r < shape[0]; r++) {
                long sr = keep[0] == null ? r : keep[0][r];
                source.readFloats(Math.multiplyExact(sr, (long) cols), row, 0, cols);
                int base = r * outCols;
                if (keep[1] == null) {
                    System.arraycopy(row, 0, out, base, cols);
                } else {
                    for (int c = 0; c < outCols; c++) {
                        out[base + c] = row[keep[1][c]];
                    }
                }
            }
        }
        if (scale != 1f || shift != 0f) {
            for (int i = 0; i < out.length; i++) {
                out[i] = out[i] * scale + shift;
            }
        }
        ByteBuffer b = ByteBuffer.allocate(Math.multiplyExact(out.length, dtype().size()))
                .order(ByteOrder.LITTLE_ENDIAN);
        TensorOps.encode(dtype(), out, 0, out.length, b);
        b.flip();
        return b;
    }
}
