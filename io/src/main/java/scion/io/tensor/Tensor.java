package scion.io.tensor;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.Optional;

/**
 * A named n-dimensional array in its stored dtype: a lazy view, read only when an operator asks for it.
 *
 * <p>Bytes are little-endian, row-major (C order), as in safetensors and ONNX {@code raw_data}. Implementations:
 * {@link MappedTensor} (a region of a mapped file), {@link BufferTensor} (bytes already in memory) and the lazy
 * dtype conversion returned by {@link #as(DType)}.
 */
public interface Tensor {
    String name();

    DType dtype();

    /** The shape; callers must not modify the returned array. */
    long[] shape();

    /** Number of elements, checked for overflow. */
    default long numel() {
        return Shapes.numel(shape(), name());
    }

    /** Number of stored bytes, checked for overflow. */
    default long byteSize() {
        return Math.multiplyExact(numel(), (long) dtype().size());
    }

    /**
     * Copies stored bytes starting at {@code byteOffset} into {@code dst} until it is full (or the tensor ends).
     * Advances {@code dst}'s position.
     */
    void readBytes(long byteOffset, ByteBuffer dst);

    /** The file region backing this tensor unchanged, if any: lets writers copy it with zero-copy transfers. */
    default Optional<FileRegion> fileRegion() {
        return Optional.empty();
    }

    /** Reads elements {@code [start, start + len)} converted to float32 into {@code dst[off ...]}. */
    default void readFloats(long start, float[] dst, int off, int len) {
        DType dt = dtype();
        int chunk = Math.max(1, Math.min(len, (1 << 20) / dt.size()));
        ByteBuffer buf = ByteBuffer.allocate(chunk * dt.size()).order(ByteOrder.LITTLE_ENDIAN);
        int done = 0;
        while (done < len) {
            int n = Math.min(chunk, len - done);
            buf.clear().limit(n * dt.size());
            readBytes(Math.multiplyExact(start + done, (long) dt.size()), buf);
            buf.flip();
            TensorOps.decode(dt, buf, dst, off + done, n);
            done += n;
        }
    }

    /** All elements as float32; only for tensors below 2^31 elements (use {@link #readFloats} otherwise). */
    default float[] toFloats() {
        long n = numel();
        if (n > Integer.MAX_VALUE - 8) {
            throw new IllegalStateException(
                    "tensor '" + name() + "' has " + n + " elements; read it in chunks with readFloats");
        }
        float[] out = new float[(int) n];
        readFloats(0, out, 0, out.length);
        return out;
    }

    /** A lazy view of this tensor converted to {@code target} (this tensor itself when the dtype matches). */
    default Tensor as(DType target) {
        if (target == dtype()) {
            return this;
        }
        return new ConvertedTensor(this, target);
    }

    /** A short description: {@code name dtype[d0, d1]}. */
    default String describe() {
        return name() + " " + dtype() + Arrays.toString(shape());
    }
}
