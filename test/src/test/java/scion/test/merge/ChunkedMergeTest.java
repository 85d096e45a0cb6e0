package scion.test.merge;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import scion.io.tensor.BlockedTensor;
import scion.io.tensor.Tensor;
import scion.io.tensor.TensorEngine;
import scion.io.tensor.TensorOps;
import scion.merge.MergeConfig;
import scion.merge.MergePlan;
import scion.merge.Merger;
import scion.test.Fixtures;

/**
 * The block-wise merge engine gives the whole-tensor bytes: for every method with a block-wise form, on the llama
 * merge fixtures, each output tensor read from the {@link BlockedTensor} equals {@link Merger#mergeNow} encoded, and the
 * bytes are the same for 1, 2 and 4 threads and chunk budgets from 4 KiB (one statistics block per output block) to
 * 1 MiB (the whole tensor in one block).
 *
 * <p>Tolerance: none between engines that share a statistics block size — the statistics are combined in element
 * order and histograms are exact. Against the whole-tensor kernel, also none with the default statistics block (one
 * block covers these small tensors, so even float64 sums add up in the same order); with 256-element statistics blocks,
 * methods whose coefficients come from float64 sums (slerp's norms, rescale's L1 norms) may round their float32
 * coefficient differently: 2 ulp relative (2.4e-7) is allowed there, every other method must be exact.
 */
class ChunkedMergeTest {
    static final Path BASE = Fixtures.hf("llama");
    static final Path FT1 = Fixtures.resource("merge/llama-ft1");
    static final Path FT2 = Fixtures.resource("merge/llama-ft2");
    static final Path FT3 = Fixtures.resource("merge/llama-ft3");

    /** Method configs: name → (YAML, whether float64 sums feed its coefficients). */
    static Map<String, Object[]> configs() {
        String three = "models:\n  - model: " + FT1 + "\n    parameters: {weight: 1.0}\n  - model: " + FT2
                + "\n    parameters: {weight: 0.5}\n  - model: " + FT3 + "\n    parameters: {weight: 0.8}\n";
        String based = "base_model: " + BASE + "\n";
        Map<String, Object[]> m = new LinkedHashMap<>();
        m.put("linear", new Object[] {"merge_method: linear\n" + three, false});
        m.put("slerp", new Object[] {
            "merge_method: slerp\n" + based + "parameters: {t: 0.3}\nmodels:\n  - model: " + BASE + "\n  - model: "
                    + FT1 + "\n",
            true
        });
        m.put("task_arithmetic", new Object[] {"merge_method: task_arithmetic\n" + based + three, false});
        m.put("ties", new Object[] {"merge_method: ties\n" + based + "parameters: {density: 0.4}\n" + three, false});
        m.put("ties_rescaled", new Object[] {
            "merge_method: ties\n" + based + "parameters: {density: 0.3, rescale: true}\n" + three, true
        });
        m.put(
                "dare_ties",
                new Object[] {"merge_method: dare_ties\n" + based + "parameters: {density: 0.5}\n" + three, true});
        m.put("dare_linear", new Object[] {
            "merge_method: dare_linear\n" + based + "parameters: {density: 0.6, rescale: false}\n" + three, false
        });
        m.put("breadcrumbs", new Object[] {
            "merge_method: breadcrumbs\n" + based + "parameters: {density: 0.6, gamma: 0.05}\n" + three, false
        });
        m.put("breadcrumbs_ties", new Object[] {
            "merge_method: breadcrumbs_ties\n" + based + "parameters: {density: 0.5, gamma: 0.1}\n" + three, false
        });
        m.put("della", new Object[] {
            "merge_method: della\n" + based + "parameters: {density: 0.5, epsilon: 0.1}\n" + three, true
        });
        m.put("della_linear", new Object[] {
            "merge_method: della_linear\n" + based + "parameters: {density: 0.4, epsilon: 0.2}\n" + three, true
        });
        m.put("nuslerp", new Object[] {
            "merge_method: nuslerp\n" + based + "models:\n  - model: " + FT1 + "\n    parameters: {weight: 1.0}\n"
                    + "  - model: " + FT2 + "\n    parameters: {weight: 0.5}\n",
            true
        });
        m.put("nuslerp_rows", new Object[] {
            "merge_method: nuslerp\nparameters: {nuslerp_flatten: false}\nmodels:\n  - model: " + FT1
                    + "\n    parameters: {weight: 1.0}\n  - model: " + FT2 + "\n    parameters: {weight: 0.3}\n",
            false
        });
        m.put("model_stock", new Object[] {"merge_method: model_stock\n" + based + three, true});
        m.put("model_stock_rows", new Object[] {
            "merge_method: model_stock\n" + based + "parameters: {filter_wise: true}\n" + three, false
        });
        m.put("karcher", new Object[] {"merge_method: karcher\n" + three, true});
        m.put("sce", new Object[] {"merge_method: sce\n" + based + "parameters: {select_topk: 0.4}\n" + three, true});
        m.put("sce_all", new Object[] {"merge_method: sce\n" + based + three, true});
        m.put("ram", new Object[] {"merge_method: ram\n" + based + three, false});
        m.put("nearswap", new Object[] {
            "merge_method: nearswap\n" + based + "parameters: {t: 0.001}\nmodels:\n  - model: " + BASE + "\n  - model: "
                    + FT1 + "\n",
            false
        });
        m.put("passthrough", new Object[] {
            "merge_method: passthrough\nmodels:\n  - model: " + FT2 + "\n    parameters: {scale: 0.5}\n", false
        });
        return m;
    }

    @TestFactory
    Stream<DynamicTest> blocksGiveTheWholeTensorsBytes() {
        List<DynamicTest> tests = new ArrayList<>();
        configs()
                .forEach((name, c) ->
                        tests.add(DynamicTest.dynamicTest(name, () -> check(name, (String) c[0], (Boolean) c[1]))));
        return tests.stream();
    }

    static void check(String name, String yaml, boolean sums) {
        MergeConfig config = MergeConfig.parse(yaml, null);
        long seed = 11;
        try (MergePlan plan = MergePlan.open(config);
                TensorEngine one = TensorEngine.withStatElements(1, 4 << 10, 256);
                TensorEngine four = TensorEngine.withStatElements(4, 64 << 10, 256);
                TensorEngine two = TensorEngine.withStatElements(2, 1 << 20, 256);
                TensorEngine standard = TensorEngine.of(2)) {
            Merger whole = new Merger(plan.models(), null, seed, standard);
            Merger m1 = new Merger(plan.models(), null, seed, one);
            Merger m4 = new Merger(plan.models(), null, seed, four);
            Merger m2 = new Merger(plan.models(), null, seed, two);
            int blocked = 0;
            double worst = 0;
            for (Merger.Job job : plan.jobs()) {
                float[] v = whole.mergeNow(job);
                ByteBuffer expected = ByteBuffer.allocate(v.length * job.dtype().size());
                TensorOps.encode(job.dtype(), v, 0, v.length, expected);
                byte[] exp = expected.array();
                Tensor t1 = m1.lazy(job);
                if (t1 instanceof BlockedTensor) {
                    blocked++;
                }
                byte[] b1 = bytes(t1);
                assertArrayEquals(b1, bytes(m4.lazy(job)), name + " " + job.name() + ": 1 vs 4 threads");
                assertArrayEquals(b1, bytes(m2.lazy(job)), name + " " + job.name() + ": 4 KiB vs 1 MiB blocks");
                assertArrayEquals(
                        exp, bytes(whole.lazy(job)), name + " " + job.name() + ": default statistics blocks vs whole");
                if (sums) {
                    worst = Math.max(worst, maxRelative(job, exp, b1));
                } else {
                    assertArrayEquals(exp, b1, name + " " + job.name() + ": blocks vs whole tensor");
                }
            }
            // della's rows are a matrix's rows: a vector is one row, merged whole
            long expectedBlocked = plan.jobs().stream()
                    .filter(j -> !name.startsWith("della") || j.shape().length >= 2)
                    .count();
            assertEquals(expectedBlocked, blocked, name + ": tensors merged in blocks");
            assertTrue(worst <= 2.4e-7, name + ": max relative difference " + worst);
        }
    }

    /** Max |a − b| / max(|a|, 1e-6) over the decoded elements. */
    static double maxRelative(Merger.Job job, byte[] a, byte[] b) {
        int n = a.length / job.dtype().size();
        float[] x = new float[n];
        float[] y = new float[n];
        TensorOps.decode(job.dtype(), ByteBuffer.wrap(a), x, 0, n);
        TensorOps.decode(job.dtype(), ByteBuffer.wrap(b), y, 0, n);
        double worst = 0;
        for (int i = 0; i < n; i++) {
            worst = Math.max(worst, Math.abs(x[i] - y[i]) / Math.max(Math.abs(x[i]), 1e-6));
        }
        return worst;
    }

    /** The tensor's bytes, read front to back in odd-sized pieces (a whole number of elements) as writers read. */
    static byte[] bytes(Tensor t) {
        int size = t.dtype().size();
        byte[] out = new byte[Math.toIntExact(t.byteSize())];
        ByteBuffer dst = ByteBuffer.wrap(out).order(ByteOrder.LITTLE_ENDIAN);
        long pos = 0;
        while (pos < out.length) {
            int n = (int) Math.min(777L * size, out.length - pos);
            ByteBuffer piece = dst.duplicate();
            piece.position((int) pos).limit((int) pos + n);
            t.readBytes(pos, piece);
            pos += n;
        }
        return out;
    }
}
