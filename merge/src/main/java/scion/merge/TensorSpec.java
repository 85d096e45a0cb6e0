package scion.merge;

import java.util.List;
import java.util.stream.IntStream;
import scion.io.arch.Role;
import scion.io.tensor.BlockedTensor;

/**
 * One output tensor as a method sees it before any value is read: {@link TensorMerge} without the values, for
 * methods that merge in blocks ({@link MergeMethod#chunked}).
 *
 * @param name the output tensor's name
 * @param role its role, or null
 * @param layer its block index in the output, or -1
 * @param layers the output's block count
 * @param shape the output shape
 * @param models how many models are merged
 * @param baseIndex the base's index among the models, or -1
 * @param hasBase whether a base model is set
 * @param modelParams per-model parameters, one per model
 * @param params method-wide parameters
 * @param seed this tensor's seed
 */
public record TensorSpec(
        String name,
        Role role,
        int layer,
        int layers,
        long[] shape,
        int models,
        int baseIndex,
        boolean hasBase,
        List<MergeParams> modelParams,
        MergeParams params,
        long seed) {

    /** The spec of a tensor whose values are already read. */
    static TensorSpec of(TensorMerge t) {
        return new TensorSpec(
                t.name(),
                t.role(),
                t.layer(),
                t.layers(),
                t.shape(),
                t.models(),
                t.baseIndex(),
                t.hasBase(),
                t.modelParams(),
                t.params(),
                t.seed());
    }

    /** Number of elements. */
    public long numel() {
        return Math.multiplyExact(BlockedTensor.rowCount(shape), BlockedTensor.rowLength(shape));
    }

    /** The indices of the models that are not the base. */
    public int[] nonBase() {
        return IntStream.range(0, models).filter(i -> i != baseIndex).toArray();
    }

    /** The same tensor restricted to one block: what a whole-tensor kernel sees when run on that block alone. */
    TensorMerge block(ChunkedMerge.Block b) {
        long[] s = shape.length == 0 ? new long[0] : shape.clone();
        if (s.length > 0) {
            s[0] = s.length == 1 ? b.length() : b.rows();
        }
        return new TensorMerge(
                name, role, layer, layers, s, b.values(), baseIndex, b.base(), modelParams, params, seed, null);
    }
}
