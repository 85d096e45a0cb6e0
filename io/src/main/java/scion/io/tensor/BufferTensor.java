package scion.io.tensor;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import scion.io.InvalidInputException;

/**
 * A tensor whose bytes are already in a {@link ByteBuffer}: an ONNX {@code raw_data} field (aliasing the mapped model
 * file), a decoded typed field, or an operator's result.
 */
public final class BufferTensor implements Tensor {
    private final String name;
    private final DType dtype;
    private final long[] shape;
    private final ByteBuffer data; // little-endian, position 0, limit = byteSize

    /** Wraps {@code data} (from its position to its limit); its length must equal numel × dtype size. */
    public BufferTensor(String name, DType dtype, long[] shape, ByteBuffer data) {
        this.name = name;
        this.dtype = dtype;
        this.shape = shape.clone();
        this.data = data.slice().order(ByteOrder.LITTLE_ENDIAN);
        long expected = byteSize();
        if (this.data.remaining() != expected) {
            throw InvalidInputException.of(
                    "tensor '" + name + "'",
                    "byte length does not match shape " + Shapes.format(shape) + " × " + dtype.size() + " bytes",
                    expected + " bytes",
                    this.data.remaining() + " bytes");
        }
    }

    /** A float32 tensor holding {@code values} (not copied). */
    public static BufferTensor ofFloats(String name, long[] shape, float[] values) {
        ByteBuffer b = ByteBuffer.allocate(Math.multiplyExact(values.length, 4)).order(ByteOrder.LITTLE_ENDIAN);
        b.asFloatBuffer().put(values);
        return new BufferTensor(name, DType.F32, shape, b);
    }

    /** A tensor of {@code dtype} encoded from float32 {@code values} (rounded to nearest even). */
    public static BufferTensor encode(String name, DType dtype, long[] shape, float[] values) {
        ByteBuffer b = ByteBuffer.allocate(Math.multiplyExact(values.length, dtype.size()))
                .order(ByteOrder.LITTLE_ENDIAN);
        TensorOps.encode(dtype, values, 0, values.length, b);
        b.flip();
        return new BufferTensor(name, dtype, shape, b);
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
        return shape;
    }

    @Override
    public void readBytes(long byteOffset, ByteBuffer dst) {
        int off = Math.toIntExact(byteOffset);
        ByteBuffer src = data.duplicate();
        int n = Math.min(dst.remaining(), src.limit() - off);
        src.position(off).limit(off + n);
        dst.put(src);
    }

    /** A read-only view of the bytes. */
    public ByteBuffer bytes() {
        return data.asReadOnlyBuffer().order(ByteOrder.LITTLE_ENDIAN);
    }
}
