package scion.merge;

import java.util.List;

/**
 * Linear merge (model soups, Wortsman et al. 2022): {@code θ = Σ wᵢ θᵢ / Σ wᵢ} with {@code normalize} (default
 * true), {@code Σ wᵢ θᵢ} without. Uniform soup: all weights 1. Every listed model takes part, and so does the {@code
 * base_model}: as in mergekit, a base missing from {@code models} joins them as the last model with the top-level
 * {@code weight} ({@link MergePlan}); listed, it counts once. A base without a weight is refused.
 */
public final class LinearMerge implements MergeMethod {
    @Override
    public String id() {
        return "linear";
    }

    @Override
    public String summary() {
        return "weighted average of the models (model soups)";
    }

    @Override
    public BaseUse baseUse() {
        return BaseUse.UNUSED;
    }

    @Override
    public List<Param> params() {
        return List.of(
                Param.perModel("weight", null, "the model's weight"),
                Param.global("normalize", Boolean.TRUE, "divide by the sum of the weights"));
    }

    @Override
    public ChunkedMerge chunked(TensorSpec t) {
        return MergeMethod.elementwise(this, t);
    }

    @Override
    public float[] merge(TensorMerge t) {
        int n = t.numel();
        float[] acc = new float[n];
        double sum = 0;
        for (int m = 0; m < t.models(); m++) {
            float w = (float) t.modelParams().get(m).number("weight");
            sum += w;
            float[] v = t.values().get(m);
            for (int i = 0; i < n; i++) {
                acc[i] += w * v[i];
            }
        }
        boolean normalize = t.params().flag("normalize");
        if (normalize) {
            float inv = (float) sum;
            for (int i = 0; i < n; i++) {
                acc[i] /= inv;
            }
        }
        return acc;
    }
}
