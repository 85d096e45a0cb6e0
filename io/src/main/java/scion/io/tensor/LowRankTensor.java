package scion.io.tensor;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * A matrix stored as two factors, read as their product: {@code left [m, r] · right [r, n]} = {@code [m, n]}, float32.
 *
 * <p>The product is computed row by row when bytes are read (each read multiplies only the rows it covers; nothing is
 * cached), so a factored weight reads like the dense one it approximates. Runtimes that can use the factors directly
 * (the ONNX exporter's two MatMuls, calibration taps) ask for {@link #left()} and {@link #right()}.
 */
public final class LowRankTensor implements Tensor {
    private final String name;
    private final Tensor left; // [m, r]
    private final Tensor right; // [r, n]
    private final long[] shape;

    /**
     * @param name the name of the product (the dense weight's name)
     * @param left the left factor {@code [m, r]}
     * @param right the right factor {@code [r, n]}
     * @throws IllegalArgumentException when the factors are not matrices with a shared inner size
     */
    public LowRankTensor(String name, Tensor left, Tensor right) {
        long[] l = left.shape();
        long[] r = right.shape();
        if (l.length != 2 || r.length != 2 || l[1] != r[0]) {
            throw new IllegalArgumentException(
                    "factors of '" + name + "' do not multiply: " + Shapes.format(l) + " · " + Shapes.format(r));
        }
        this.name = name;
        this.left = left;
        this.right = right;
        this.shape = new long[] {l[0], r[1]};
    }

    public Tensor left() {
        return left;
    }

    public Tensor right() {
        return right;
    }

    /** The inner size r. */
    public long rank() {
        return left.shape()[1];
    }

    @Override
    public String name() {
        return name;
    }

    @Override
    public DType dtype() {
        return DType.F32;
    }

    @Override
    public long[] shape() {
        return shape;
    }

    @Override
    public void readBytes(long byteOffset, ByteBuffer dst) {
        long len = byteSize();
        if (byteOffset < 0 || byteOffset > len || byteOffset % 4 != 0) {
            throw new IndexOutOfBoundsException(
                    "offset " + byteOffset + " outside (or not aligned in) tensor '" + name + "' of " + len);
        }
        int want = (int) Math.min(dst.remaining() / 4, (len - byteOffset) / 4);
        if (want == 0) {
            return;
        }
        float[] out = new float[want];
        readFloats(byteOffset / 4, out, 0, want);
        ByteBuffer b = dst.duplicate().order(ByteOrder.LITTLE_ENDIAN);
        b.asFloatBuffer().put(out);
        dst.position(dst.position() + want * 4);
    }

    @Override
    public void readFloats(long start, float[] dst, int off, int len) {
        if (len == 0) {
            return;
        }
        int r = Math.toIntExact(rank());
        int n = Math.toIntExact(shape[1]);
        long firstRow = start / n;
        long lastRow = (start + len - 1) / n;
        int rows = Math.toIntExact(lastRow - firstRow + 1);
        float[] l = new float[Math.multiplyExact(rows, r)];
        left.readFloats(firstRow * r, l, 0, l.length);
        float[] rt = right.toFloats(); // [r, n]
        double[] row = new double[n];
        int written = 0;
        for (int i = 0; i < rows && written < len; i++) {
            java.util.Arrays.fill(row, 0);
            for (int k = 0; k < r; k++) {
                float v = l[i * r + k];
                int base = k * n;
                for (int j = 0; j < n; j++) {
                    row[j] += v * rt[base + j];
                }
            }
            long rowStart = (firstRow + i) * n;
            int from = (int) Math.max(0, start - rowStart);
            int count = Math.min(n - from, len - written);
            for (int j = 0; j < count; j++) {
                dst[off + written + j] = (float) row[from + j];
            }
            written += count;
        }
    }
}
