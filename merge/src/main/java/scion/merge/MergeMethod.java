package scion.merge;

import java.util.List;
import java.util.Optional;

/**
 * One merge method: how the values of one tensor in several models become the values of the output tensor.
 *
 * <p>A method sees one output tensor at a time, as a {@link TensorMerge}: the float32 values of that tensor in every
 * input model (already read, converted from the stored dtype and aligned to the output's layout), the base model's
 * values when the config names a {@code base_model}, the method's parameters resolved for this tensor, a seed and,
 * when an {@link ImportanceProvider} is attached, one per-element importance array per model. It returns the merged
 * values (a new array or one of the inputs it may overwrite, see {@link TensorMerge#values()}); the loop ({@link
 * Merger}) narrows them to the output dtype with round-to-nearest-even, writes them and drops everything.
 *
 * <p>Implementations are stateless and thread-safe; names are mergekit's ({@code merge_method:} values). A new method
 * is one class implementing this interface and one line in {@link MergeMethods#ALL}.
 */
public interface MergeMethod {
    /** The {@code merge_method} name, as in mergekit ({@code linear}, {@code ties}, ...). */
    String id();

    /** One sentence for {@code --help} and the README table. */
    String summary();

    /** Whether {@code base_model} is required, optional or not used by this method. */
    BaseUse baseUse();

    /**
     * The parameters this method reads, with their scope and default. Names not listed here are refused when no
     * method uses them; parameters listed by another method are ignored with a note (mergekit configs often carry
     * them at the top level).
     */
    List<Param> params();

    /** Whether the result depends on {@link TensorMerge#seed()} (DARE, DELLA, ...). */
    default boolean randomized() {
        return false;
    }

    /**
     * Whether the method needs {@link TensorMerge#importance()} (Fisher merging); the loop then refuses to run
     * without an {@link ImportanceProvider}.
     */
    default boolean needsImportance() {
        return false;
    }

    /**
     * Checks the number of models before any tensor is read.
     *
     * @param models how many models the {@code models}/{@code sources} list holds (the base counted if listed)
     * @param hasBase whether a {@code base_model} is set
     * @return a problem sentence ({@code "slerp merges exactly two models"}), or empty
     */
    default Optional<String> checkModels(int models, boolean hasBase) {
        return Optional.empty();
    }

    /**
     * Merges one tensor.
     *
     * @return the merged values, {@code t.numel()} floats in the output's row-major layout
     */
    float[] merge(TensorMerge t);

    /**
     * This method's block-wise form for one tensor ({@link ChunkedMerge}: statistics passes, then row blocks), or null
     * when it needs every input whole at once; the loop then holds them whole, within the memory plan. The block-wise
     * form must give the values {@link #merge} gives (up to the summation order of float64 statistics).
     */
    default ChunkedMerge chunked(TensorSpec t) {
        return null;
    }

    /** The block-wise form of a method whose every output element depends only on the same element of its inputs. */
    static ChunkedMerge elementwise(MergeMethod m, TensorSpec t) {
        return b -> m.merge(t.block(b));
    }

    /** How a method uses {@code base_model}. */
    enum BaseUse {
        REQUIRED,
        OPTIONAL,
        UNUSED
    }

    /** Where a parameter may be given and what it holds. */
    enum Scope {
        /** Method-wide ({@code parameters:} at the top level or a slice's level), e.g. {@code normalize}, {@code t}. */
        GLOBAL,
        /** Per model ({@code models[i].parameters}), falling back to slice and top level, e.g. {@code weight}. */
        PER_MODEL
    }

    /**
     * A parameter of a method.
     *
     * @param name mergekit's name
     * @param scope where it is read
     * @param defaultValue the default ({@link Double}, {@link Boolean} or {@link String}), or null when required
     * @param doc one sentence
     */
    record Param(String name, Scope scope, Object defaultValue, String doc) {
        public static Param global(String name, Object defaultValue, String doc) {
            return new Param(name, Scope.GLOBAL, defaultValue, doc);
        }

        public static Param perModel(String name, Object defaultValue, String doc) {
            return new Param(name, Scope.PER_MODEL, defaultValue, doc);
        }

        public boolean required() {
            return defaultValue == null;
        }
    }
}
