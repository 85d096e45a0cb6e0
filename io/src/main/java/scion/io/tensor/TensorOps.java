package scion.io.tensor;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/** Element codecs: stored bytes (little-endian) to float32 and back, for every {@link DType}. */
public final class TensorOps {
    private TensorOps() {}

    /** Every f16 bit pattern widened to float32 (256 KiB): decoding is a table look-up, not a branchy conversion. */
    private static final float[] F16_TABLE = new float[65536];

    static {
        for (int h = 0; h < 65536; h++) {
            F16_TABLE[h] = HalfPrecisionOps.f16ToF32(h);
        }
    }

    /** Decodes {@code n} elements of {@code dt} from {@code src} (little-endian) into {@code dst[off ...]}. */
    public static void decode(DType dt, ByteBuffer src, float[] dst, int off, int n) {
        src.order(ByteOrder.LITTLE_ENDIAN);
        switch (dt) {
            case F32:
                src.asFloatBuffer().get(dst, off, n);
                src.position(src.position() + 4 * n);
                break;
            case F64:
                for (int i = 0; i < n; i++) {
                    dst[off + i] = (float) src.getDouble();
                }
                break;
            case F16:
                for (int i = 0; i < n; i++) {
                    dst[off + i] = F16_TABLE[src.getShort() & 0xffff];
                }
                break;
            case BF16:
                for (int i = 0; i < n; i++) {
                    dst[off + i] = HalfPrecisionOps.bf16ToF32(src.getShort() & 0xffff);
                }
                break;
            case F8_E4M3:
                for (int i = 0; i < n; i++) {
                    dst[off + i] = HalfPrecisionOps.f8e4m3ToF32(src.get() & 0xff);
                }
                break;
            case F8_E5M2:
                for (int i = 0; i < n; i++) {
                    dst[off + i] = HalfPrecisionOps.f8e5m2ToF32(src.get() & 0xff);
                }
                break;
            case I64:
                for (int i = 0; i < n; i++) {
                    dst[off + i] = src.getLong();
                }
                break;
            case I32:
                for (int i = 0; i < n; i++) {
                    dst[off + i] = src.getInt();
                }
                break;
            case I16:
                for (int i = 0; i < n; i++) {
                    dst[off + i] = src.getShort();
                }
                break;
            case I8:
                for (int i = 0; i < n; i++) {
                    dst[off + i] = src.get();
                }
                break;
            case U8:
            case BOOL:
                for (int i = 0; i < n; i++) {
                    dst[off + i] = src.get() & 0xff;
                }
                break;
        }
    }

    /**
     * Encodes {@code n} float32 values from {@code src[off ...]} as {@code dt} into {@code dst} (little-endian),
     * rounding to nearest even for f16/bf16. Only floating-point targets that Scion writes are allowed.
     */
    public static void encode(DType dt, float[] src, int off, int n, ByteBuffer dst) {
        dst.order(ByteOrder.LITTLE_ENDIAN);
        switch (dt) {
            case F32:
                dst.asFloatBuffer().put(src, off, n);
                dst.position(dst.position() + 4 * n);
                break;
            case F64:
                for (int i = 0; i < n; i++) {
                    dst.putDouble(src[off + i]);
                }
                break;
            case F16:
                for (int i = 0; i < n; i++) {
                    dst.putShort(HalfPrecisionOps.f32ToF16(src[off + i]));
                }
                break;
            case BF16:
                for (int i = 0; i < n; i++) {
                    dst.putShort(HalfPrecisionOps.f32ToBf16(src[off + i]));
                }
                break;
            default:
                throw new IllegalArgumentException("cannot encode float32 values as " + dt);
        }
    }
}
