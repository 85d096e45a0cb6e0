package scion.io.tensor;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import scion.io.InvalidInputException;

/**
 * A lazy dtype conversion of another tensor: bytes are produced chunk by chunk on read, through float32, rounding
 * to nearest even. Only floating-point to floating-point conversions are allowed (integer tensors such as position
 * ids keep their dtype).
 */
final class ConvertedTensor implements Tensor {
    private final Tensor source;
    private final DType target;

    ConvertedTensor(Tensor source, DType target) {
        if (!source.dtype().isFloatingPoint() || !target.isFloatingPoint() || !target.isWritable()) {
            throw InvalidInputException.of(
                    "tensor '" + source.name() + "'",
                    "cannot convert " + source.dtype() + " to " + target,
                    "a floating-point tensor and target f32, f16, bf16 or f64",
                    source.dtype() + " → " + target);
        }
        this.source = source;
        this.target = target;
    }

    @Override
    public String name() {
        return source.name();
    }

    @Override
    public DType dtype() {
        return target;
    }

    @Override
    public long[] shape() {
        return source.shape();
    }

    @Override
    public void readBytes(long byteOffset, ByteBuffer dst) {
        int size = target.size();
        long total = byteSize();
        if (byteOffset % size != 0) {
            throw new IllegalArgumentException("unaligned read of converted tensor '" + name() + "'");
        }
        long start = byteOffset / size;
        long end = Math.min(total, byteOffset + dst.remaining()) / size;
        float[] buf = new float[(int) Math.min(1 << 18, Math.max(0, end - start))];
        ByteBuffer out = dst.duplicate().order(ByteOrder.LITTLE_ENDIAN);
        long e = start;
        while (e < end) {
            int n = (int) Math.min(buf.length, end - e);
            source.readFloats(e, buf, 0, n);
            TensorOps.encode(target, buf, 0, n, out);
            e += n;
        }
        dst.position(out.position());
    }
}
