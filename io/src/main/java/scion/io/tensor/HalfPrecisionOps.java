package scion.io.tensor;

/**
 * Conversions between float32 and the 16- and 8-bit float formats, bit-exact.
 *
 * <p>Widening (f16, bf16, f8 → f32) is exact. Narrowing (f32 → f16, bf16) rounds to nearest, ties to even, as IEEE
 * 754 §4.3.1 and PyTorch's {@code Tensor.to(float16/bfloat16)} do: overflow gives ±infinity, NaN stays NaN (quiet),
 * subnormals are produced and read. The 8-bit formats follow the OCP FP8 spec: E4M3 ("FN": bias 7, no infinities,
 * S.1111.111 is NaN) and E5M2 (bias 15, IEEE-like, the top byte of an f16).
 */
public final class HalfPrecisionOps {
    private HalfPrecisionOps() {}

    /** f16 bits (low 16 bits of {@code h}) to float32, exact. */
    public static float f16ToF32(int h) {
        int sign = (h & 0x8000) << 16;
        int exp = (h >>> 10) & 0x1f;
        int mant = h & 0x3ff;
        if (exp == 0x1f) {
            // Inf or NaN: keep the payload in the high mantissa bits.
            return Float.intBitsToFloat(sign | 0x7f800000 | (mant << 13));
        }
        if (exp == 0) {
            if (mant == 0) {
                return Float.intBitsToFloat(sign);
            }
            // Subnormal: mant * 2^-24, exact in float32.
            float v = mant * 0x1p-24f;
            return sign == 0 ? v : -v;
        }
        return Float.intBitsToFloat(sign | ((exp + 112) << 23) | (mant << 13));
    }

    /** float32 to f16 bits, round to nearest even. */
    public static short f32ToF16(float f) {
        int bits = Float.floatToRawIntBits(f);
        int sign = (bits >>> 16) & 0x8000;
        int exp = (bits >>> 23) & 0xff;
        int mant = bits & 0x7fffff;
        if (exp == 0xff) {
            if (mant == 0) {
                return (short) (sign | 0x7c00);
            }
            // NaN: keep the top payload bits, force quiet so it never becomes an infinity.
            return (short) (sign | 0x7c00 | 0x200 | (mant >>> 13));
        }
        int e = exp - 127 + 15;
        if (e >= 0x1f) {
            return (short) (sign | 0x7c00);
        }
        if (e <= 0) {
            if (e < -10) {
                // Smaller than half the smallest subnormal: rounds to zero.
                return (short) sign;
            }
            int m = mant | 0x800000; // implicit bit
            int shift = 14 - e; // 14..24
            int half = 1 << (shift - 1);
            int rounded = m >>> shift;
            int rem = m & ((1 << shift) - 1);
            if (rem > half || (rem == half && (rounded & 1) != 0)) {
                rounded++;
            }
            return (short) (sign | rounded); // may carry into the smallest normal: still correct
        }
        int rounded = (e << 10) | (mant >>> 13);
        int rem = mant & 0x1fff;
        if (rem > 0x1000 || (rem == 0x1000 && (rounded & 1) != 0)) {
            rounded++; // may carry into the exponent, up to infinity: correct
        }
        return (short) (sign | rounded);
    }

    /** bf16 bits (low 16 bits of {@code b}) to float32, exact. */
    public static float bf16ToF32(int b) {
        return Float.intBitsToFloat((b & 0xffff) << 16);
    }

    /** float32 to bf16 bits, round to nearest even. */
    public static short f32ToBf16(float f) {
        int bits = Float.floatToRawIntBits(f);
        if ((bits & 0x7fffffff) > 0x7f800000) {
            return (short) ((bits >>> 16) | 0x40); // quiet NaN
        }
        int lsb = (bits >>> 16) & 1;
        return (short) ((bits + 0x7fff + lsb) >>> 16);
    }

    /** OCP FP8 E4M3FN bits to float32, exact. */
    public static float f8e4m3ToF32(int b) {
        int sign = (b & 0x80) != 0 ? -1 : 1;
        int exp = (b >>> 3) & 0xf;
        int mant = b & 0x7;
        if (exp == 0xf && mant == 0x7) {
            return Float.NaN;
        }
        if (exp == 0) {
            return sign * mant * 0x1p-9f;
        }
        return sign * (1 + mant / 8f) * (float) Math.scalb(1.0, exp - 7);
    }

    /** OCP FP8 E5M2 bits to float32, exact (the top byte of an f16). */
    public static float f8e5m2ToF32(int b) {
        return f16ToF32((b & 0xff) << 8);
    }
}
