package scion.io.tensor;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;

/**
 * {@link CounterRandom}: the uniforms have the stated moments and range, the two values of one hash and neighbouring
 * counters are uncorrelated, streams differ by seed and name, and a value does not depend on the order (or thread)
 * it is computed in.
 */
class CounterRandomTest {
    private static final int N = 1 << 20;

    /**
     * Mean 0, variance 1, third moment 0, fourth moment 9/5 (a uniform's), each within 5 standard errors of its
     * 2^20-sample estimate (standard deviations of u, u², u³, u⁴ on [−√3, √3]: 1, √0.8, √(27/7) ≈ 1.96, √5.76 = 2.4):
     * a wrong scale, an offset or a Gaussian instead of a uniform fail.
     */
    @Test
    void uniformsHaveUnitVarianceZeroMeanAndAUniformsKurtosis() {
        long key = CounterRandom.key(42, "model.layers.0.mlp.up_proj.weight");
        for (boolean low : new boolean[] {false, true}) {
            double m1 = 0;
            double m2 = 0;
            double m3 = 0;
            double m4 = 0;
            double min = Double.MAX_VALUE;
            double max = -Double.MAX_VALUE;
            for (int i = 0; i < N; i++) {
                long bits = CounterRandom.bits(key, i);
                double u = low ? CounterRandom.uniformLow(bits) : CounterRandom.uniform(bits);
                m1 += u;
                m2 += u * u;
                m3 += u * u * u;
                m4 += u * u * u * u;
                min = Math.min(min, u);
                max = Math.max(max, u);
            }
            double se = 1 / Math.sqrt(N);
            assertEquals(0, m1 / N, 5 * se, "mean");
            assertEquals(1, m2 / N, 5 * Math.sqrt(0.8) * se, "variance");
            assertEquals(0, m3 / N, 5 * 1.97 * se, "third moment");
            assertEquals(1.8, m4 / N, 5 * 2.4 * se, "fourth moment (a Gaussian's is 3)");
            double sqrt3 = Math.sqrt(3);
            assertTrue(min >= -sqrt3 && min < -sqrt3 + 1e-4, "min " + min);
            assertTrue(max < sqrt3 && max > sqrt3 - 1e-4, "max " + max);
        }
    }

    /** Correlation of the two values of a hash, and of neighbouring counters: |r| < 5/√N. */
    @Test
    void valuesAreUncorrelated() {
        long key = CounterRandom.key(7, "t");
        double sameHash = 0;
        double neighbours = 0;
        double prev = CounterRandom.uniform(CounterRandom.bits(key, -1));
        for (int i = 0; i < N; i++) {
            long bits = CounterRandom.bits(key, i);
            double a = CounterRandom.uniform(bits);
            sameHash += a * CounterRandom.uniformLow(bits);
            neighbours += a * prev;
            prev = a;
        }
        double bound = 5 / Math.sqrt(N);
        assertEquals(0, sameHash / N, bound, "high and low value of one hash");
        assertEquals(0, neighbours / N, bound, "counters i and i+1");
    }

    @Test
    void aValueDependsOnSeedNameAndCounterOnlyNotOnOrderOrThread() {
        long key = CounterRandom.key(3, "w");
        int n = 100_000;
        double[] forward = new double[n];
        for (int i = 0; i < n; i++) {
            forward[i] = CounterRandom.uniform(CounterRandom.bits(key, i));
        }
        double[] backward = new double[n];
        for (int i = n - 1; i >= 0; i--) {
            backward[i] = CounterRandom.uniform(CounterRandom.bits(key, i));
        }
        double[] parallel = IntStream.range(0, n)
                .parallel()
                .mapToDouble(i -> CounterRandom.uniform(CounterRandom.bits(CounterRandom.key(3, "w"), i)))
                .toArray();
        assertArrayEquals(forward, backward);
        assertArrayEquals(forward, parallel);
        assertNotEquals(key, CounterRandom.key(4, "w"), "another seed");
        assertNotEquals(key, CounterRandom.key(3, "v"), "another name");
        assertNotEquals(CounterRandom.key(0, "ab"), CounterRandom.key(0, "ba"), "names are hashed in order");
        // Pinned values: the noise of grown checkpoints must not change silently between versions.
        assertEquals(0xE220A8397B1DCDAFL, CounterRandom.mix(0), "SplitMix64's first output for seed 0");
        assertEquals(-0.598752251462156, CounterRandom.uniform(CounterRandom.bits(CounterRandom.key(1, "x"), 5)));
    }
}
