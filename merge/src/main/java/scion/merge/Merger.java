package scion.merge;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.arch.Role;
import scion.io.arch.WeightGraph;
import scion.io.tensor.DType;
import scion.io.tensor.Tensor;
import scion.io.tensor.TensorOps;

/**
 * The per-tensor merge loop: each output tensor is a lazy {@link Tensor} that, when a writer first reads it, reads
 * its inputs, runs the {@link MergeMethod} in float32, narrows the result to the output dtype (round-to-nearest-even)
 * and releases everything once the writer has read its last byte.
 *
 * <p>Writers ({@code SafetensorsWriter}, {@code OnnxWriter}) read tensors one after the other, so at most one merged
 * tensor is alive: peak memory is about {@code (models + 2) ×} the largest tensor in float32 (one array per input,
 * the base, and the encoded output), whatever the model size.
 *
 * <p>How a method gets its inputs (see {@link TensorMerge}): for job {@code j}, source {@code i}'s weight is read with
 * {@link Tensor#readFloats} (any stored dtype → float32); when its {@code transposed} flag differs from the output's,
 * the {@code [r, c]} array is transposed to the output's layout. The base likewise. Parameters come resolved in the
 * {@link Job}. The seed passed to the method is {@link #tensorSeed(long, String)} of the run's seed and the output
 * name. With an {@link ImportanceProvider}, each model's importance array is fetched and aligned like its values.
 */
public final class Merger {
    private final List<Model> models;
    private final ImportanceProvider importance;
    private final long seed;

    /**
     * A loop over the given models.
     *
     * @param models the run's models; {@link Source#model()} indexes this list
     * @param importance per-element importance, or null
     * @param seed the run's seed
     */
    public Merger(List<Model> models, ImportanceProvider importance, long seed) {
        this.models = List.copyOf(models);
        this.importance = importance;
        this.seed = seed;
    }

    /**
     * One input of an output tensor.
     *
     * @param model index into the run's model list
     * @param weight that model's weight
     */
    public record Source(int model, WeightGraph.Weight weight) {}

    /**
     * The recipe of one output tensor, fully resolved by the planner.
     *
     * @param name the output name
     * @param role the role, or null
     * @param layer the output block index, or -1
     * @param layers the output's block count
     * @param shape the output shape
     * @param transposed whether the output stores this weight transposed ({@code [in, out]}, ONNX)
     * @param dtype the output dtype
     * @param method the method
     * @param sources the merged models' weights, in config order
     * @param baseIndex index of the base within {@code sources}, or -1
     * @param base the base's weight, or null
     * @param modelParams resolved per-model parameters, one per source
     * @param params resolved method-wide parameters
     */
    public record Job(
            String name,
            Role role,
            int layer,
            int layers,
            long[] shape,
            boolean transposed,
            DType dtype,
            MergeMethod method,
            List<Source> sources,
            int baseIndex,
            Source base,
            List<MergeParams> modelParams,
            MergeParams params) {}

    /** The seed of one output tensor: a 64-bit mix of the run seed and the tensor name (order-independent). */
    public static long tensorSeed(long runSeed, String name) {
        long h = runSeed ^ 0x9E3779B97F4A7C15L;
        for (byte b : name.getBytes(StandardCharsets.UTF_8)) {
            h = (h ^ (b & 0xff)) * 0x100000001B3L;
        }
        h ^= h >>> 33;
        h *= 0xff51afd7ed558ccdL;
        h ^= h >>> 33;
        return h;
    }

    /** Runs the method of {@code job} now and returns the merged float32 values. */
    public float[] mergeNow(Job job) {
        List<float[]> values = new ArrayList<>(job.sources().size());
        List<float[]> imp =
                importance == null ? null : new ArrayList<>(job.sources().size());
        for (Source s : job.sources()) {
            values.add(read(s, job));
            if (imp != null) {
                float[] a = importance.importance(s.model(), models.get(s.model()), s.weight());
                if (a == null || a.length != s.weight().tensor().numel()) {
                    throw InvalidInputException.of(
                            "tensor '" + job.name() + "'",
                            "no importance estimate for model " + s.model() + " ('"
                                    + s.weight().name() + "')",
                            s.weight().tensor().numel() + " values",
                            a == null ? "none" : a.length + " values");
                }
                imp.add(align(a, s.weight(), job));
            }
        }
        float[] base = job.base() == null ? null : read(job.base(), job);
        if (job.method().needsImportance() && imp == null) {
            throw InvalidInputException.of(
                    "merge_method " + job.method().id(),
                    "needs per-weight importance",
                    "an importance provider (calibration text)",
                    "none");
        }
        TensorMerge t = new TensorMerge(
                job.name(),
                job.role(),
                job.layer(),
                job.layers(),
                job.shape(),
                values,
                job.baseIndex(),
                base,
                job.modelParams(),
                job.params(),
                tensorSeed(seed, job.name()),
                imp);
        float[] out = job.method().merge(t);
        long n = numel(job.shape());
        if (out.length != n) {
            throw new IllegalStateException("merge method " + job.method().id() + " returned " + out.length
                    + " values for '" + job.name() + "' of " + n + " elements");
        }
        return out;
    }

    /** A lazy output tensor that merges on first read and drops its bytes after the last one is read. */
    public Tensor lazy(Job job) {
        return new LazyMerged(job);
    }

    private float[] read(Source s, Job job) {
        Tensor t = s.weight().tensor();
        float[] a = t.toFloats();
        return align(a, s.weight(), job);
    }

    private static float[] align(float[] a, WeightGraph.Weight w, Job job) {
        if (w.transposed() == job.transposed() || w.tensor().shape().length != 2) {
            return a;
        }
        long[] sh = w.tensor().shape();
        return transpose(a, Math.toIntExact(sh[0]), Math.toIntExact(sh[1]));
    }

    /** Transposes a row-major {@code [r, c]} array. */
    static float[] transpose(float[] a, int r, int c) {
        float[] out = new float[a.length];
        for (int i = 0; i < r; i++) {
            int row = i * c;
            for (int j = 0; j < c; j++) {
                out[j * r + i] = a[row + j];
            }
        }
        return out;
    }

    private static long numel(long[] shape) {
        long n = 1;
        for (long d : shape) {
            n = Math.multiplyExact(n, d);
        }
        return n;
    }

    private final class LazyMerged implements Tensor {
        private final Job job;
        private final long bytes;
        private ByteBuffer data; // the encoded result while the writer reads it

        LazyMerged(Job job) {
            this.job = job;
            this.bytes = Math.multiplyExact(
                    Merger.numel(job.shape()), (long) job.dtype().size());
        }

        @Override
        public String name() {
            return job.name();
        }

        @Override
        public DType dtype() {
            return job.dtype();
        }

        @Override
        public long[] shape() {
            return job.shape();
        }

        @Override
        public synchronized void readBytes(long byteOffset, ByteBuffer dst) {
            if (data == null) {
                float[] v = mergeNow(job);
                ByteBuffer b = ByteBuffer.allocate(Math.toIntExact(bytes)).order(ByteOrder.LITTLE_ENDIAN);
                TensorOps.encode(job.dtype(), v, 0, v.length, b);
                b.flip();
                data = b;
            }
            int off = Math.toIntExact(byteOffset);
            int n = Math.min(dst.remaining(), data.limit() - off);
            ByteBuffer src = data.duplicate();
            src.position(off).limit(off + n);
            dst.put(src);
            if (off + n >= bytes) {
                data = null; // read to the end: drop it (a later read merges again)
            }
        }

        @Override
        public String toString() {
            return describe() + " <- " + job.method().id() + Arrays.toString(job.shape());
        }
    }
}
