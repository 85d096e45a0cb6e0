package scion.growth;

import java.util.concurrent.ExecutionException;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.ForkJoinTask;
import java.util.function.IntConsumer;

/**
 * The threads that compute grown tensors: the calling thread plus {@code threads − 1} workers of a {@link
 * ForkJoinPool} (daemon threads that end by themselves when idle, so nothing needs closing).
 *
 * <p>Work is handed out as numbered parts ({@link #run}); callers split it into parts whose results do not depend on
 * which thread computes them (contiguous row ranges, fixed chunks of a sum), so the output bytes are the same for any
 * thread count.
 */
public final class RowWorkers {
    /** Everything on the calling thread. */
    public static final RowWorkers CALLER = new RowWorkers(1);

    private final int threads;
    private final ForkJoinPool pool; // null for one thread

    private RowWorkers(int threads) {
        this.threads = threads;
        this.pool = threads > 1 ? new ForkJoinPool(threads - 1) : null;
    }

    /** Workers for {@code threads} threads in all (≥ 1; the caller is one of them). */
    public static RowWorkers of(int threads) {
        if (threads < 1) {
            throw new IllegalArgumentException("thread count " + threads + " < 1");
        }
        return threads == 1 ? CALLER : new RowWorkers(threads);
    }

    /** The number of threads, the caller included. */
    public int threads() {
        return threads;
    }

    /**
     * Runs {@code part.accept(p)} for every {@code p} in {@code [0, parts)} — part 0 on the calling thread, the others
     * on the pool — and returns when all have finished; the first failure is then rethrown.
     */
    void run(int parts, IntConsumer part) {
        if (pool == null || parts <= 1) {
            for (int p = 0; p < parts; p++) {
                part.accept(p);
            }
            return;
        }
        ForkJoinTask<?>[] others = new ForkJoinTask<?>[parts - 1];
        for (int p = 1; p < parts; p++) {
            int q = p;
            others[p - 1] = pool.submit(() -> part.accept(q));
        }
        Throwable failure = null;
        try {
            part.accept(0);
        } catch (RuntimeException | Error e) {
            failure = e;
        }
        boolean interrupted = false;
        for (ForkJoinTask<?> t : others) {
            while (true) {
                try {
                    t.get();
                    break;
                } catch (ExecutionException e) {
                    failure = failure == null ? e.getCause() : failure;
                    break;
                } catch (InterruptedException e) {
                    interrupted = true; // every part must finish before the caller reuses its buffers
                }
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
        if (failure instanceof RuntimeException) {
            throw (RuntimeException) failure;
        }
        if (failure instanceof Error) {
            throw (Error) failure;
        }
        if (failure != null) {
            throw new IllegalStateException("a worker thread failed: " + failure, failure);
        }
    }
}
