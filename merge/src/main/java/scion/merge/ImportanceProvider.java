package scion.merge;

import scion.io.Model;
import scion.io.arch.WeightGraph;

/**
 * Supplies a per-element importance (e.g. a diagonal Fisher estimate) of each input model's weights, for methods
 * that {@linkplain MergeMethod#needsImportance() need one}.
 *
 * <p>The loop calls {@link #importance} once per (output tensor, model), right before the method runs, and drops the
 * array afterwards. A provider that computes everything up front (calibration passes) should keep its estimates in
 * its own store, keyed by model and weight, and return them here.
 */
public interface ImportanceProvider {
    /**
     * The importance of one model's weight.
     *
     * @param modelIndex index of the model in the run's model list (same as in {@link TensorMerge#values()})
     * @param model the opened input model
     * @param weight that model's weight feeding this output tensor (its name, role, layer and whether it is stored
     *     transposed)
     * @return {@code weight.tensor().numel()} non-negative floats in the weight's <em>stored</em> element order (the
     *     order of {@code weight.tensor().readFloats}); the loop transposes them along with the values when needed.
     *     Returning null means "no estimate" and the loop reports an error naming the tensor.
     */
    float[] importance(int modelIndex, Model model, WeightGraph.Weight weight);
}
