package scion.io.tensor;

import java.util.Arrays;
import scion.io.InvalidInputException;

/** Shape arithmetic with overflow checks. */
public final class Shapes {
    private Shapes() {}

    /** The product of the dimensions; negative dimensions and overflow are errors that name the tensor. */
    public static long numel(long[] shape, String where) {
        long n = 1;
        for (long d : shape) {
            if (d < 0) {
                throw InvalidInputException.of(
                        where, "negative dimension in shape", "dimensions >= 0", Arrays.toString(shape));
            }
            try {
                n = Math.multiplyExact(n, d);
            } catch (ArithmeticException e) {
                throw InvalidInputException.of(
                        where, "shape overflows 64-bit element count", "< 2^63 elements", Arrays.toString(shape));
            }
        }
        return n;
    }

    /** Formats a shape as {@code [a, b]}. */
    public static String format(long[] shape) {
        return Arrays.toString(shape);
    }
}
