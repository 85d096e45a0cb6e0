package scion.io.tensor;

import java.nio.charset.StandardCharsets;

/**
 * A counter-based random generator: every value is a pure function of a key and a counter, so values can be computed
 * in any order, by any number of threads, and come out the same bytes.
 *
 * <p>The hash is SplitMix64's finaliser (Steele, Lea and Flood 2014, "Fast Splittable Pseudorandom Number
 * Generators"; the same mixing as {@code java.util.SplittableRandom}): {@code bits(key, i) = mix(key + i)}, where a
 * key is {@code mix(seed ^ hash(name))} for a seed and a stream name (a tensor name). There is no state: a stream is
 * its key, element {@code i} is {@link #bits(long, long)}.
 *
 * <p>Distribution: {@link #uniform(long)} turns the top 24 bits into a uniform value of mean 0 and variance 1 on
 * {@code [−√3, √3)} (2^24 equally spaced values); {@link #uniformLow(long)} the next 24 bits of the same hash, so one
 * hash gives two independent values.
 */
public final class CounterRandom {
    private CounterRandom() {}

    private static final long GOLDEN = 0x9E3779B97F4A7C15L;
    private static final double SQRT3 = Math.sqrt(3);

    /** SplitMix64's finaliser of {@code z + γ}: a bijection of the 64-bit integers with full avalanche. */
    public static long mix(long z) {
        z += GOLDEN;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    /** A 64-bit hash of a name's UTF-8 bytes (one {@link #mix} per byte). */
    public static long hash(String name) {
        long h = GOLDEN;
        for (byte b : name.getBytes(StandardCharsets.UTF_8)) {
            h = mix(h ^ (b & 0xff));
        }
        return h;
    }

    /** The key of the stream {@code name} under {@code seed}. */
    public static long key(long seed, String name) {
        return mix(seed ^ hash(name));
    }

    /** The random bits of element {@code counter} of the stream {@code key}. */
    public static long bits(long key, long counter) {
        return mix(key + counter);
    }

    /** A uniform value of mean 0 and variance 1 in {@code [−√3, √3)} from the top 24 bits of {@code bits}. */
    public static double uniform(long bits) {
        // 1 + m·2^-24 by placing the 24 bits m under a double's exponent of 1 (no integer-to-double conversion);
        // 2·that − 3 = m·2^-23 − 1 exactly, in [−1, 1).
        double oneToTwo = Double.longBitsToDouble(0x3FF0000000000000L | (bits >>> 40) << 28);
        return (2 * oneToTwo - 3) * SQRT3;
    }

    /** Like {@link #uniform(long)}, from bits 8..31 of {@code bits}: a second value independent of the first. */
    public static double uniformLow(long bits) {
        return uniform(bits << 32);
    }
}
