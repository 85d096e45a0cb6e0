package scion.merge;

import java.util.List;
import scion.io.arch.Role;

/**
 * Everything a {@link MergeMethod} gets for one output tensor.
 *
 * <p><b>Values.</b> {@link #values()} holds one float32 array per input model, in the order of the config's {@code
 * models} list (or the slice's {@code sources}), each {@link #numel()} long, row-major in the <em>output's</em> layout:
 * stored dtypes are converted to float32, and a weight stored transposed in one model (ONNX {@code [in, out]}) is
 * transposed to the output's layout before the method sees it. When the base model is also listed among the models,
 * its entry is at {@link #baseIndex()}; {@link #base()} holds the base's values whenever a {@code base_model} is set
 * (null otherwise). The arrays are fresh copies owned by this merge: a method may overwrite them (e.g. to turn them
 * into task vectors in place) and may return one of them.
 *
 * <p><b>Parameters.</b> {@link #modelParams()}{@code .get(i)} are model {@code i}'s per-model parameters ({@code
 * weight}, {@code density}, ...) and {@link #params()} the method-wide ones ({@code normalize}, {@code t}, ...), both
 * already resolved for this tensor with mergekit's precedence: a model's own {@code parameters} over its slice's over
 * the top level, and at each level the first {@code filter} entry whose substring occurs in the tensor name over the
 * unfiltered value; a list value (gradient) is interpolated at this tensor's layer position (see {@link
 * MergeParams}). Defaults from {@link MergeMethod#params()} are filled in.
 *
 * <p><b>Seed.</b> {@link #seed()} is derived from the run's seed and the output tensor's name, so it does not depend on
 * the order tensors are merged in: same inputs and seed give the same bytes.
 *
 * <p><b>Importance.</b> {@link #importance()} is null unless an {@link ImportanceProvider} is attached to the run;
 * then it holds one array per model, aligned exactly like {@link #values()} (same length, same layout, same order).
 *
 * @param name the output tensor's name
 * @param role its role, or null when the architecture does not know it
 * @param layer its block index in the output, or -1 for global tensors (embeddings, final norm, head)
 * @param layers the number of blocks of the output (for gradients: position {@code layer / (layers - 1)})
 * @param shape the output shape (as stored)
 * @param values one array per model, see above
 * @param baseIndex the index of the base in {@code values}, or -1 when the base is not listed among the models
 * @param base the base model's values, or null without a {@code base_model}
 * @param modelParams per-model parameters, one per entry of {@code values}
 * @param params method-wide parameters
 * @param seed this tensor's seed
 * @param importance per-model per-element importance, or null
 */
public record TensorMerge(
        String name,
        Role role,
        int layer,
        int layers,
        long[] shape,
        List<float[]> values,
        int baseIndex,
        float[] base,
        List<MergeParams> modelParams,
        MergeParams params,
        long seed,
        List<float[]> importance) {

    /** Number of elements. */
    public int numel() {
        return values.isEmpty() ? base.length : values.get(0).length;
    }

    /** How many models are merged ({@code values().size()}). */
    public int models() {
        return values.size();
    }

    /** Whether a base model is set. */
    public boolean hasBase() {
        return base != null;
    }

    /** The indices of {@code values} that are not the base (the "task" models of task-arithmetic methods). */
    public int[] nonBase() {
        return java.util.stream.IntStream.range(0, values.size())
                .filter(i -> i != baseIndex)
                .toArray();
    }

    /** Rows and columns when the tensor is viewed as a matrix {@code [shape[0], numel / shape[0]]} (1-D: one row). */
    public int rows() {
        return shape.length < 2 ? 1 : Math.toIntExact(shape[0]);
    }
}
