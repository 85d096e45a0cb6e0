package scion.merge;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.arch.Role;
import scion.io.arch.WeightGraph;
import scion.io.tensor.BlockedTensor;
import scion.io.tensor.DType;
import scion.io.tensor.Tensor;
import scion.io.tensor.TensorEngine;
import scion.io.tensor.TensorOps;

/**
 * The per-tensor merge loop: each output tensor is a lazy {@link Tensor} that, when a writer reads it, reads its
 * inputs, runs the {@link MergeMethod} in float32 and narrows the result to the output dtype (round-to-nearest-even).
 *
 * <p><b>In blocks</b> (every method with a {@link MergeMethod#chunked} form, inputs in the output's layout, no
 * importance): the tensor is a {@link BlockedTensor} on the run's {@link TensorEngine}. The method's statistics passes
 * read the inputs in statistics blocks on the workers; then the output's row blocks (whole statistics blocks, as many
 * as the chunk budget holds) are merged by the workers ahead of the writer. Peak memory is a few blocks, whatever the
 * tensor's size; the bytes do not depend on the thread count or the chunk budget.
 *
 * <p><b>Whole</b> (the other methods): the inputs are read whole, merged, encoded, and dropped once the writer has
 * read the last byte: about {@code (models + 2) ×} the tensor in float32. {@link #checkMemory} refuses a plan whose
 * largest whole tensor would not fit the heap before anything is written.
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
    private final TensorEngine engine;

    /**
     * A loop over the given models.
     *
     * @param models the run's models; {@link Source#model()} indexes this list
     * @param importance per-element importance, or null
     * @param seed the run's seed
     * @param engine the workers and chunk budget (owned by the caller)
     */
    public Merger(List<Model> models, ImportanceProvider importance, long seed, TensorEngine engine) {
        this.models = List.copyOf(models);
        this.importance = importance;
        this.seed = seed;
        this.engine = engine;
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

    /** A lazy output tensor: merged in blocks when its method allows it, else whole on first read. */
    public Tensor lazy(Job job) {
        ChunkedMerge c = chunked(job);
        if (c == null) {
            return new LazyMerged(job);
        }
        long rowLength = BlockedTensor.rowLength(job.shape());
        int statRows = engine.statRows(rowLength);
        int budgetRows = engine.blockRows(rowLength, arrays(job));
        int blockRows = statRows * Math.max(1, budgetRows / statRows); // whole statistics blocks
        return new BlockedTensor(job.name(), job.dtype(), job.shape(), blockRows, new BlockKernel(job, c), engine);
    }

    /** The job's block-wise form, or null when it must be merged whole. */
    private ChunkedMerge chunked(Job job) {
        if (importance != null || job.method().needsImportance()) {
            return null;
        }
        for (Source s : job.sources()) {
            if (!aligned(s.weight(), job)) {
                return null;
            }
        }
        if (job.base() != null && !aligned(job.base().weight(), job)) {
            return null;
        }
        return job.method().chunked(spec(job));
    }

    private static boolean aligned(WeightGraph.Weight w, Job job) {
        return w.transposed() == job.transposed() || w.tensor().shape().length != 2;
    }

    private TensorSpec spec(Job job) {
        return new TensorSpec(
                job.name(),
                job.role(),
                job.layer(),
                job.layers(),
                job.shape(),
                job.sources().size(),
                job.baseIndex(),
                job.base() != null,
                job.modelParams(),
                job.params(),
                tensorSeed(seed, job.name()));
    }

    /** Float32 arrays alive per block: one per source, the base, and the output. */
    private static int arrays(Job job) {
        return job.sources().size() + (job.base() == null ? 0 : 1) + 1;
    }

    /**
     * The peak heap of one output tensor: blocks in flight (statistics or output) with their histograms for a
     * block-wise merge; every input and the output in float32 for a whole one (importance arrays included; the
     * encoding is written as it is read).
     */
    public long peakBytes(Job job) {
        long numel = numel(job.shape());
        if (chunked(job) != null) {
            long rowLength = BlockedTensor.rowLength(job.shape());
            long statRows = engine.statRows(rowLength);
            long rows = Math.max(statRows * Math.max(1, engine.blockRows(rowLength, arrays(job)) / statRows), 1);
            long block = Math.min(numel, rows * rowLength);
            long perBlock = block * (4L * arrays(job) + job.dtype().size());
            long histograms = (long) job.sources().size() * 3 * (1 << 16) * 8; // statistics of magnitude selection
            return engine.inFlight() * perBlock + histograms;
        }
        int copies = arrays(job) + (importance == null ? 0 : job.sources().size());
        return Math.multiplyExact(numel, 4L * copies);
    }

    /**
     * Refuses, before anything is written, a run whose largest tensor would not fit the heap: names that tensor, the
     * memory it needs and the remedies.
     */
    public void checkMemory(List<Job> jobs) {
        Job worst = null;
        long peak = 0;
        for (Job j : jobs) {
            long p = peakBytes(j);
            if (p > peak) {
                peak = p;
                worst = j;
            }
        }
        if (worst != null) {
            engine.checkFits(
                    "merge_method " + worst.method().id() + ": tensor '" + worst.name() + "' "
                            + Arrays.toString(worst.shape())
                            + (chunked(worst) == null ? " (merged whole)" : " (merged in blocks)"),
                    peak,
                    chunked(worst) != null);
        }
    }

    /** Reads rows {@code [row0, row0 + rows)} of every input of {@code job} (and of its base) as a block. */
    private ChunkedMerge.Block readBlock(Job job, long row0, int rows, long rowLength) {
        long start = row0 * rowLength;
        int length = Math.toIntExact(rows * rowLength);
        List<float[]> values = new ArrayList<>(job.sources().size());
        for (Source s : job.sources()) {
            float[] a = new float[length];
            s.weight().tensor().readFloats(start, a, 0, length);
            values.add(a);
        }
        float[] base = null;
        if (job.base() != null) {
            base = new float[length];
            job.base().weight().tensor().readFloats(start, base, 0, length);
        }
        return new ChunkedMerge.Block(start, length, row0, rows, values, base);
    }

    /** Runs a block-wise merge: its statistics passes on {@link #prepare}, then its apply pass block by block. */
    private final class BlockKernel implements BlockedTensor.Kernel {
        private final Job job;
        private final ChunkedMerge method;
        private final long rowLength;

        BlockKernel(Job job, ChunkedMerge method) {
            this.job = job;
            this.method = method;
            this.rowLength = BlockedTensor.rowLength(job.shape());
        }

        @Override
        public void prepare() {
            long rows = BlockedTensor.rowCount(job.shape());
            int statRows = engine.statRows(rowLength);
            int blocks = Math.toIntExact((rows + statRows - 1) / statRows);
            for (int p = 0; p < method.passes(); p++) {
                if (method.skip(p)) {
                    continue;
                }
                int pass = p;
                engine.inOrder(
                        blocks,
                        i -> {
                            long row0 = (long) i * statRows;
                            int n = (int) Math.min(statRows, rows - row0);
                            return method.observe(pass, readBlock(job, row0, n, rowLength));
                        },
                        partial -> method.accept(pass, partial));
                method.endPass(p);
            }
        }

        @Override
        public float[] compute(long row0, int rows) {
            return method.apply(readBlock(job, row0, rows, rowLength));
        }
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
        private final long numel;
        private float[] values; // the merged values while the writer reads them

        LazyMerged(Job job) {
            this.job = job;
            this.numel = Merger.numel(job.shape());
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
            int size = job.dtype().size();
            if (byteOffset % size != 0 || dst.remaining() % size != 0) {
                throw new IllegalStateException("'" + job.name() + "': read of " + dst.remaining() + " bytes at "
                        + byteOffset + " is not aligned to " + size + "-byte elements");
            }
            if (values == null) {
                values = mergeNow(job);
            }
            int first = Math.toIntExact(byteOffset / size);
            int n = (int) Math.min(dst.remaining() / size, numel - first);
            TensorOps.encode(job.dtype(), values, first, n, dst); // encoded as read: no second copy
            if (first + n >= numel) {
                values = null; // read to the end: drop it (a later read merges again)
            }
        }

        @Override
        public String toString() {
            return describe() + " <- " + job.method().id() + Arrays.toString(job.shape());
        }
    }
}
