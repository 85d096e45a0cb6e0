package scion.io.tensor;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onnxruntime.platform.Fp16Conversions;
import java.math.BigDecimal;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * All 65,536 bit patterns of f16 and bf16: widening is exact, narrowing the widened value gives the same bits back,
 * and narrowing arbitrary float32 values rounds to the nearest representable value, ties to even.
 */
class HalfPrecisionOpsTest {

    @Test
    void f16RoundTripsEveryBitPattern() {
        for (int h = 0; h < 65536; h++) {
            float f = HalfPrecisionOps.f16ToF32(h);
            short back = HalfPrecisionOps.f32ToF16(f);
            if (Float.isNaN(f)) {
                assertTrue(Float.isNaN(HalfPrecisionOps.f16ToF32(back)), "NaN stays NaN: " + h);
                assertEquals(h & 0x8000, back & 0x8000, "NaN sign kept");
            } else {
                assertEquals(h, back & 0xffff, "f16 bits " + Integer.toHexString(h));
            }
        }
    }

    @Test
    void f16WideningAgreesWithOnnxRuntime() {
        for (int h = 0; h < 65536; h++) {
            float ours = HalfPrecisionOps.f16ToF32(h);
            float ort = Fp16Conversions.fp16ToFloat((short) h);
            if (Float.isNaN(ours)) {
                assertTrue(Float.isNaN(ort));
            } else {
                assertEquals(Float.floatToIntBits(ort), Float.floatToIntBits(ours), "bits " + h);
            }
        }
    }

    @Test
    void bf16RoundTripsEveryBitPattern() {
        for (int b = 0; b < 65536; b++) {
            float f = HalfPrecisionOps.bf16ToF32(b);
            short back = HalfPrecisionOps.f32ToBf16(f);
            if (Float.isNaN(f)) {
                assertTrue(Float.isNaN(HalfPrecisionOps.bf16ToF32(back)));
            } else {
                assertEquals(b, back & 0xffff, "bf16 bits " + Integer.toHexString(b));
            }
        }
    }

    @Test
    void narrowingRoundsToNearestEvenAgainstExactArithmetic() {
        Random rnd = new Random(42);
        for (int i = 0; i < 200_000; i++) {
            float f = Float.intBitsToFloat(rnd.nextInt());
            if (Float.isNaN(f) || Float.isInfinite(f)) {
                continue;
            }
            checkNearestEven(f, HalfPrecisionOps.f32ToF16(f), true);
            checkNearestEven(f, HalfPrecisionOps.f32ToBf16(f), false);
        }
        // Midpoints between adjacent f16 values must go to the even one.
        for (int h = 0; h < 0x7bff; h++) {
            double a = HalfPrecisionOps.f16ToF32(h);
            double b = HalfPrecisionOps.f16ToF32(h + 1);
            float mid = (float) ((a + b) / 2);
            if ((a + b) / 2 == mid) {
                int expected = (h & 1) == 0 ? h : h + 1;
                assertEquals(expected, HalfPrecisionOps.f32ToF16(mid) & 0xffff, "tie at " + h);
            }
        }
    }

    private static void checkNearestEven(float f, short bits, boolean f16) {
        int b = bits & 0xffff;
        float got = f16 ? HalfPrecisionOps.f16ToF32(b) : HalfPrecisionOps.bf16ToF32(b);
        if (Float.isInfinite(got)) {
            return; // overflow: checked by the max-finite comparison below
        }
        // Neighbours of the result: the true value must not be closer to either.
        int up = (b & 0x7fff) == 0x7fff ? b : b + 1;
        int down = (b & 0x7fff) == 0 ? b : b - 1;
        BigDecimal exact = new BigDecimal(f);
        BigDecimal dGot = exact.subtract(new BigDecimal(got)).abs();
        for (int n : new int[] {up, down}) {
            float v = f16 ? HalfPrecisionOps.f16ToF32(n) : HalfPrecisionOps.bf16ToF32(n);
            if (Float.isNaN(v) || Float.isInfinite(v)) {
                continue;
            }
            BigDecimal dn = exact.subtract(new BigDecimal(v)).abs();
            int c = dn.compareTo(dGot);
            assertTrue(c > 0 || (c == 0 && (b & 1) == 0), "value " + f + " rounded to " + got + " not nearest-even");
        }
    }

    @Test
    void bulkDecodeEqualsTheScalarConversionForEveryPattern() {
        java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(2 * 65536).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        for (int h = 0; h < 65536; h++) {
            b.putShort((short) h);
        }
        b.flip();
        float[] out = new float[65536];
        TensorOps.decode(DType.F16, b.duplicate(), out, 0, 65536);
        for (int h = 0; h < 65536; h++) {
            assertEquals(
                    Float.floatToRawIntBits(HalfPrecisionOps.f16ToF32(h)), Float.floatToRawIntBits(out[h]), "f16 " + h);
        }
        TensorOps.decode(DType.BF16, b.duplicate(), out, 0, 65536);
        for (int h = 0; h < 65536; h++) {
            assertEquals(
                    Float.floatToRawIntBits(HalfPrecisionOps.bf16ToF32(h)),
                    Float.floatToRawIntBits(out[h]),
                    "bf16 " + h);
        }
    }

    @Test
    void specialValues() {
        assertEquals(0x7c00, HalfPrecisionOps.f32ToF16(70000f) & 0xffff, "overflow to +inf");
        assertEquals(0xfc00, HalfPrecisionOps.f32ToF16(Float.NEGATIVE_INFINITY) & 0xffff);
        assertEquals(0x0001, HalfPrecisionOps.f32ToF16(0x1p-24f) & 0xffff, "smallest subnormal");
        assertEquals(0x0000, HalfPrecisionOps.f32ToF16(0x1p-26f) & 0xffff, "below half the smallest: zero");
        assertEquals(0x7bff, HalfPrecisionOps.f32ToF16(65504f) & 0xffff, "max finite");
        assertEquals(448f, HalfPrecisionOps.f8e4m3ToF32(0x7e), "E4M3 max");
        assertTrue(Float.isNaN(HalfPrecisionOps.f8e4m3ToF32(0x7f)));
        assertEquals(57344f, HalfPrecisionOps.f8e5m2ToF32(0x7b), "E5M2 max");
        assertEquals(0x1p-9f, HalfPrecisionOps.f8e4m3ToF32(0x01), "E4M3 smallest subnormal");
    }
}
