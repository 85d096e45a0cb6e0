package scion.io.safetensors.bench;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import scion.io.tensor.DType;
import scion.io.tensor.Shapes;
import scion.io.tensor.Tensor;

/**
 * A deterministic synthetic tensor computed on read: element {@code i} is a hash of {@code (seed, i)}, so a tensor of
 * any size costs no memory. Floating-point elements are finite values of magnitude in [2^-10, 2^-2) with a random
 * sign (weights-like); integer elements are the hash's low bits; BOOL is 0 or 1.
 */
public final class GeneratedTensor implements Tensor {
    private final String name;
    private final DType dtype;
    private final long[] shape;
    private final long seed;

    public GeneratedTensor(String name, DType dtype, long[] shape, long seed) {
        this.name = name;
        this.dtype = dtype;
        this.shape = shape.clone();
        this.seed = seed;
        Shapes.numel(shape, name);
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

    private static long mix(long z) {
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    /** The stored bits of element {@code i}, in the low {@code 8 × size} bits. */
    public long bits(long i) {
        long h = mix(seed * 0x9E3779B97F4A7C15L + i);
        long sign = h >>> 63;
        long e = (h >>> 56) & 7; // exponent offset 0..7
        switch (dtype) {
            case F64:
                return (sign << 63) | ((1013 + e) << 52) | (h & 0xF_FFFF_FFFF_FFFFL);
            case F32:
                return (sign << 31) | ((117 + e) << 23) | (h & 0x7F_FFFFL);
            case F16:
                return (sign << 15) | ((5 + e) << 10) | (h & 0x3FFL);
            case BF16:
                return (sign << 15) | ((117 + e) << 7) | (h & 0x7FL);
            case BOOL:
                return h & 1;
            default:
                return h;
        }
    }

    @Override
    public void readBytes(long byteOffset, ByteBuffer dst) {
        int size = dtype.size();
        long total = byteSize();
        if (byteOffset < 0 || byteOffset > total) {
            throw new IndexOutOfBoundsException("offset " + byteOffset + " outside tensor '" + name + "'");
        }
        ByteOrder saved = dst.order();
        dst.order(ByteOrder.LITTLE_ENDIAN);
        try {
            long pos = byteOffset;
            while (dst.hasRemaining() && pos < total && pos % size != 0) {
                dst.put((byte) (bits(pos / size) >>> (8 * (pos % size))));
                pos++;
            }
            long first = pos / size;
            long n = Math.min(dst.remaining() / size, (total - pos) / size);
            switch (size) {
                case 1:
                    for (long k = 0; k < n; k++) {
                        dst.put((byte) bits(first + k));
                    }
                    break;
                case 2:
                    for (long k = 0; k < n; k++) {
                        dst.putShort((short) bits(first + k));
                    }
                    break;
                case 4:
                    for (long k = 0; k < n; k++) {
                        dst.putInt((int) bits(first + k));
                    }
                    break;
                default:
                    for (long k = 0; k < n; k++) {
                        dst.putLong(bits(first + k));
                    }
                    break;
            }
            pos += n * size;
            while (dst.hasRemaining() && pos < total) {
                dst.put((byte) (bits(pos / size) >>> (8 * (pos % size))));
                pos++;
            }
        } finally {
            dst.order(saved);
        }
    }
}
