package scion.merge;

import java.util.List;
import java.util.Optional;
import java.util.function.BiFunction;
import java.util.function.Function;

/** A {@link MergeMethod} described by its fields and a kernel: the form the smaller methods take. */
final class SimpleMethod implements MergeMethod {
    private final String id;
    private final String summary;
    private final BaseUse baseUse;
    private final List<Param> params;
    private final boolean randomized;
    private final BiFunction<Integer, Boolean, Optional<String>> check;
    private final Function<TensorMerge, float[]> kernel;
    private final Function<TensorSpec, ChunkedMerge> chunks; // null: whole tensors only

    SimpleMethod(
            String id,
            String summary,
            BaseUse baseUse,
            List<Param> params,
            boolean randomized,
            BiFunction<Integer, Boolean, Optional<String>> check,
            Function<TensorMerge, float[]> kernel) {
        this(id, summary, baseUse, params, randomized, check, kernel, null);
    }

    private SimpleMethod(
            String id,
            String summary,
            BaseUse baseUse,
            List<Param> params,
            boolean randomized,
            BiFunction<Integer, Boolean, Optional<String>> check,
            Function<TensorMerge, float[]> kernel,
            Function<TensorSpec, ChunkedMerge> chunks) {
        this.id = id;
        this.summary = summary;
        this.baseUse = baseUse;
        this.params = List.copyOf(params);
        this.randomized = randomized;
        this.check = check;
        this.kernel = kernel;
        this.chunks = chunks;
    }

    /** This method with a block-wise form ({@link MergeMethod#chunked}). */
    SimpleMethod withChunks(Function<TensorSpec, ChunkedMerge> f) {
        return new SimpleMethod(id, summary, baseUse, params, randomized, check, kernel, f);
    }

    /** This method, element-wise: its kernel runs on each block alone. */
    SimpleMethod elementwise() {
        return withChunks(t -> MergeMethod.elementwise(this, t));
    }

    @Override
    public String id() {
        return id;
    }

    @Override
    public String summary() {
        return summary;
    }

    @Override
    public BaseUse baseUse() {
        return baseUse;
    }

    @Override
    public List<Param> params() {
        return params;
    }

    @Override
    public boolean randomized() {
        return randomized;
    }

    @Override
    public Optional<String> checkModels(int models, boolean hasBase) {
        return check.apply(models, hasBase);
    }

    @Override
    public float[] merge(TensorMerge t) {
        return kernel.apply(t);
    }

    @Override
    public ChunkedMerge chunked(TensorSpec t) {
        return chunks == null ? null : chunks.apply(t);
    }
}
