package scion.io.tensor;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Consumer;
import java.util.function.IntFunction;
import scion.io.ResourceException;

/**
 * The one tensor engine: a pool of worker threads and a chunk budget, shared by the operators that produce tensors in
 * row blocks ({@link BlockedTensor}) and by their statistics passes ({@link #inOrder}).
 *
 * <p>Determinism: work is split into blocks whose bounds depend only on the tensor's shape and the chunk budget, each
 * block is computed by one thread, and partial results are combined in block order; so the bytes an operator writes
 * never depend on the thread count. Operators whose statistics must not depend on the chunk budget either split them
 * by {@link #statRows} (a function of the shape alone) or keep them exact (integer histograms).
 *
 * <p>Memory: at most {@link #inFlight()} blocks are alive at once per tensor being produced, so peak memory is a number
 * of chunks, planned with {@link #checkFits} before the first byte is written.
 */
public final class TensorEngine implements AutoCloseable {
    /**
     * The largest default chunk budget: bytes of float32 working memory per block, all inputs and the output together.
     * The default is smaller when the heap is small ({@link #of(int)}).
     */
    public static final long MAX_CHUNK_BYTES = 64L << 20;

    /** Elements per statistics block (in whole rows): a constant, so statistics never depend on the settings. */
    public static final int STAT_ELEMENTS = 1 << 20;

    /** Heap kept free for everything that is not a chunk (models' headers, the writer's buffers, the JVM). */
    private static final long RESERVE_BYTES = 96L << 20;

    private final int threads;
    private final long chunkBytes;
    private final int statElements;
    private final ExecutorService pool;

    private TensorEngine(int threads, long chunkBytes, int statElements) {
        if (threads < 1) {
            throw new IllegalArgumentException("threads must be at least 1, found " + threads);
        }
        if (chunkBytes < 4096) {
            throw new IllegalArgumentException("chunk budget below 4 KiB: " + chunkBytes);
        }
        this.threads = threads;
        this.chunkBytes = chunkBytes;
        this.statElements = statElements;
        AtomicInteger n = new AtomicInteger();
        this.pool = Executors.newFixedThreadPool(threads, r -> {
            Thread t = new Thread(r, "scion-worker-" + n.incrementAndGet());
            t.setDaemon(true);
            return t;
        });
    }

    /** An engine with {@code threads} workers and a chunk budget of {@code chunkBytes}. */
    public static TensorEngine of(int threads, long chunkBytes) {
        return new TensorEngine(threads, chunkBytes, STAT_ELEMENTS);
    }

    /**
     * An engine with {@code threads} workers and the default chunk budget: a quarter of the heap budget shared by the
     * blocks in flight, between 4 MiB and {@link #MAX_CHUNK_BYTES}, so that a small heap still merges in blocks.
     */
    public static TensorEngine of(int threads) {
        long share = heapBudget() / 4 / (threads + 1);
        return new TensorEngine(threads, Math.max(4L << 20, Math.min(MAX_CHUNK_BYTES, share)), STAT_ELEMENTS);
    }

    /**
     * An engine whose statistics blocks hold {@code statElements} elements instead of {@link #STAT_ELEMENTS}: for tests
     * that need many statistics blocks in a small tensor. Float64 statistics (sums) then round differently.
     */
    public static TensorEngine withStatElements(int threads, long chunkBytes, int statElements) {
        if (statElements < 1) {
            throw new IllegalArgumentException("statistics block of " + statElements + " elements");
        }
        return new TensorEngine(threads, chunkBytes, statElements);
    }

    /** The worker count. */
    public int threads() {
        return threads;
    }

    /** The chunk budget in bytes. */
    public long chunkBytes() {
        return chunkBytes;
    }

    /** How many blocks of one tensor may be alive at once: one per worker plus one being written. */
    public int inFlight() {
        return threads + 1;
    }

    /**
     * Rows per block for rows of {@code rowLength} elements when a block holds {@code arrays} float32 arrays (inputs and
     * output): as many whole rows as fit the chunk budget, at least one.
     */
    public int blockRows(long rowLength, int arrays) {
        long perRow = Math.multiplyExact(Math.multiplyExact(Math.max(1, rowLength), 4L), Math.max(1, arrays));
        return (int) Math.max(1, Math.min(Integer.MAX_VALUE / 2, chunkBytes / perRow));
    }

    /** Rows per statistics block for rows of {@code rowLength} elements: {@link #STAT_ELEMENTS}, in whole rows. */
    public int statRows(long rowLength) {
        return (int) Math.max(1, statElements / Math.max(1, rowLength));
    }

    /** The heap this JVM may still use for chunks: its maximum heap less a fixed reserve. */
    public static long heapBudget() {
        return Runtime.getRuntime().maxMemory() - RESERVE_BYTES;
    }

    /**
     * Refuses, before anything is written, a plan whose peak does not fit the heap.
     *
     * @param what what needs the memory, e.g. {@code tensor 'model.embed_tokens.weight' (merge ties)}
     * @param peakBytes the planned peak
     * @param perThread whether the peak grows with the thread count (then fewer threads is a remedy too)
     * @throws ResourceException naming {@code what}, the peak, the heap and the remedies
     */
    public void checkFits(String what, long peakBytes, boolean perThread) {
        long budget = heapBudget();
        if (peakBytes > budget) {
            throw new ResourceException(what + ": needs " + mib(peakBytes) + " of memory at once; the heap allows "
                    + mib(Math.max(0, budget)) + " (maximum heap "
                    + mib(Runtime.getRuntime().maxMemory())
                    + "); give Java more with SCION_JAVA_OPTS=-Xmx" + suggestedHeapGiB(peakBytes) + "g"
                    + (perThread && threads > 1 ? " or use fewer workers with --threads 1" : ""));
        }
    }

    private static long suggestedHeapGiB(long peak) {
        return (peak + RESERVE_BYTES + (1L << 30) - 1) >> 30;
    }

    /** A byte count in MiB, for messages. */
    public static String mib(long bytes) {
        return (bytes + (1 << 19)) / (1 << 20) + " MiB";
    }

    /**
     * Runs {@code count} tasks on the workers and hands their results to {@code sink} in task order, on the calling
     * thread; at most {@link #inFlight()} results are alive at once. A task's exception is rethrown as it was thrown.
     */
    public <T> void inOrder(int count, IntFunction<T> task, Consumer<T> sink) {
        Deque<Future<T>> queue = new ArrayDeque<>();
        int next = 0;
        try {
            while (next < count || !queue.isEmpty()) {
                while (next < count && queue.size() < inFlight()) {
                    int i = next++;
                    queue.add(pool.submit(() -> task.apply(i)));
                }
                sink.accept(await(queue.poll()));
            }
        } finally {
            for (Future<T> f : queue) {
                f.cancel(true);
            }
        }
    }

    /** Runs {@code count} tasks on the workers and returns their results in task order. */
    public <T> List<T> all(int count, IntFunction<T> task) {
        List<T> out = new ArrayList<>(count);
        inOrder(count, task, out::add);
        return out;
    }

    /** Submits one task to the workers. */
    <T> Future<T> submit(java.util.concurrent.Callable<T> task) {
        return pool.submit(task);
    }

    /** The result of {@code f}, rethrowing the task's own exception (not wrapped). */
    static <T> T await(Future<T> f) {
        try {
            return f.get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while waiting for a worker", e);
        } catch (ExecutionException e) {
            Throwable c = e.getCause();
            if (c instanceof RuntimeException) {
                throw (RuntimeException) c;
            }
            if (c instanceof Error) {
                throw (Error) c;
            }
            throw new IllegalStateException("worker failed: " + c, c);
        }
    }

    @Override
    public void close() {
        pool.shutdownNow();
    }
}
