package scion.io.runtime;

import java.util.Arrays;
import java.util.Random;

/**
 * A fixed-size uniform sample of a stream of value tuples (Vitter's algorithm R with a seeded generator, so the same
 * stream gives the same sample). Percentiles and rank correlations are computed on it instead of on every value.
 */
final class Reservoir {
    private final double[][] columns;
    private final Random random;
    private long seen;
    private int size;

    Reservoir(int capacity, int width, long seed) {
        this.columns = new double[width][capacity];
        this.random = new Random(seed);
    }

    void add(double... values) {
        int capacity = columns[0].length;
        int slot;
        if (size < capacity) {
            slot = size++;
        } else {
            long r = (long) (random.nextDouble() * (seen + 1));
            slot = r < capacity ? (int) r : -1;
        }
        seen++;
        if (slot >= 0) {
            for (int c = 0; c < columns.length; c++) {
                columns[c][slot] = values[c];
            }
        }
    }

    /** The sampled values of one column. */
    double[] column(int c) {
        return Arrays.copyOf(columns[c], size);
    }

    int size() {
        return size;
    }

    /** How many tuples the stream held (sampled or not). */
    long seen() {
        return seen;
    }
}
