package scion.prune;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;

import java.util.List;
import java.util.Optional;
import org.junit.jupiter.api.Test;
import scion.io.arch.Axis;
import scion.io.arch.Dims;
import scion.io.arch.Role;
import scion.io.arch.WeightGraph.Weight;
import scion.io.arch.WeightSpec;
import scion.io.tensor.BufferTensor;
import scion.io.tensor.DType;
import scion.io.tensor.Tensor;

/** Index choice, lazy slicing and the norm rescaling of {@link Subcloning}, on hand-made tensors. */
class SubcloningTest {
    @Test
    void topKeepsTheHighestScoresInSourceOrderTiesToTheLowerIndex() {
        assertArrayEquals(new int[] {1, 3}, Subcloning.top(new double[] {0.1, 5, 0.2, 7}, 2));
        assertArrayEquals(new int[] {0, 2}, Subcloning.top(new double[] {1, 0, 1, 1}, 2));
        assertArrayEquals(new int[] {0, 1, 2}, Subcloning.top(new double[] {3, 2, 1}, 3));
    }

    private static float[] iota(int n) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = i + 0.25f * (i % 3);
        }
        return v;
    }

    @Test
    void slicedTensorGathersRowsAndColumnsExactlyInBf16AndCanBeReRead() {
        Tensor src = BufferTensor.encode("w", DType.BF16, new long[] {4, 5}, iota(20));
        SlicedTensor s = new SlicedTensor("w", src, new int[][] {{1, 3}, {0, 2, 4}}, 1f, 0f);
        assertArrayEquals(new long[] {2, 3}, s.shape());
        float[] all = src.toFloats();
        float[] want = {all[5], all[7], all[9], all[15], all[17], all[19]};
        assertArrayEquals(want, s.toFloats(), 0f);
        assertArrayEquals(want, s.toFloats(), 0f); // the buffer is dropped after a full read and recomputed
        assertEquals(DType.BF16, s.dtype());
    }

    private static Weight weight(String name, Role role, List<Axis> axes, Tensor t, boolean transposed, int layer) {
        WeightSpec spec =
                new WeightSpec(name, false, role, false, axes, false, Optional.empty(), false, Optional.empty());
        return new Weight(t, name, layer, spec, transposed);
    }

    private static Subcloning.Plan plan(double scale, String norm) {
        Dims src = new Dims(4, 1, 2, 2, 2, 6, 10, 0, 0, false);
        Dims dst = new Dims(2, 1, 1, 1, 2, 3, 10, 0, 0, false);
        Subcloning.Shape shape = new Subcloning.Shape(src, dst, 1, true);
        return new Subcloning.Plan(
                shape,
                Subcloning.Params.hidden(2),
                new int[] {1, 3},
                new int[] {0},
                new int[][] {{0, 2, 5}},
                new int[][] {{1}},
                new int[][] {{1}},
                scale,
                new double[] {1, 2, 1, 2},
                norm,
                List.of());
    }

    @Test
    void normScalesAreMultipliedBySqrtOfTheWidthRatioGemmaThroughOnePlusGamma() {
        Tensor g = BufferTensor.ofFloats("n", new long[] {4}, new float[] {1, 2, 3, 4});
        Weight n = weight("n", Role.ATTN_NORM, List.of(Axis.RESIDUAL), g, false, 0);
        double s = Math.sqrt(2);
        assertArrayEquals(
                new float[] {(float) (2 * s), (float) (4 * s)},
                plan(s, "rms").slice(n).toFloats(),
                1e-6f);
        // Gemma stores γ and computes (1 + γ): (1 + γ') = s·(1 + γ).
        float[] gemma = plan(s, "rms_plus_one").slice(n).toFloats();
        assertEquals((1 + 2) * s - 1, gemma[0], 1e-6);
        assertEquals((1 + 4) * s - 1, gemma[1], 1e-6);
        assertArrayEquals(new float[] {2, 4}, plan(1, "rms").slice(n).toFloats(), 0f);
    }

    @Test
    void attentionAndMlpAxesFollowTheStoredLayoutIncludingTransposedOnnxWeights() {
        // q_proj [heads·head_dim = 4, hidden = 4] → head 1 (rows 2, 3), residual columns 1, 3.
        float[] q = iota(16);
        Weight w = weight(
                "q",
                Role.ATTN_Q,
                List.of(Axis.Q, Axis.RESIDUAL),
                BufferTensor.ofFloats("q", new long[] {4, 4}, q),
                false,
                0);
        assertArrayEquals(
                new float[] {q[9], q[11], q[13], q[15]}, plan(1, "rms").slice(w).toFloats(), 0f);
        // The same weight stored [in, out] (an ONNX MatMul initializer): rows are residual, columns heads.
        Weight t = weight(
                "qt",
                Role.ATTN_Q,
                List.of(Axis.Q, Axis.RESIDUAL),
                BufferTensor.ofFloats("qt", new long[] {4, 4}, q),
                true,
                0);
        assertArrayEquals(
                new float[] {q[6], q[7], q[14], q[15]}, plan(1, "rms").slice(t).toFloats(), 0f);
        // down_proj [hidden, ffn = 6] → residual rows 1, 3 and neurons 0, 2, 5.
        float[] d = iota(24);
        Weight down = weight(
                "d",
                Role.MLP_DOWN,
                List.of(Axis.RESIDUAL, Axis.FFN),
                BufferTensor.ofFloats("d", new long[] {4, 6}, d),
                false,
                0);
        assertArrayEquals(
                new float[] {d[6], d[8], d[11], d[18], d[20], d[23]},
                plan(1, "rms").slice(down).toFloats(),
                0f);
        // Vocabulary axes stay whole; a buffer is passed through untouched.
        Tensor buf = BufferTensor.ofFloats("inv_freq", new long[] {1}, new float[] {1});
        assertSame(buf, plan(1, "rms").slice(weight("b", Role.BUFFER, List.of(Axis.ANY), buf, false, 0)));
    }
}
