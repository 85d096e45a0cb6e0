package scion.cli;

import picocli.CommandLine.Option;
import scion.io.InvalidInputException;

/**
 * {@code --threads N}, shared by every command that computes tensors (mixed in with picocli's {@code @Mixin}): the
 * number of worker threads, all cores by default. Results never depend on it: the same inputs and seed give the same
 * bytes for any thread count.
 */
final class ThreadOptions {
    @Option(
            names = "--threads",
            paramLabel = "N",
            description = "Worker threads (default: all cores). Output bytes never depend on it.")
    Integer threads;

    /** The thread count: {@code --threads}, else the number of cores. */
    int threads() {
        if (threads == null) {
            return Runtime.getRuntime().availableProcessors();
        }
        if (threads < 1 || threads > 1024) {
            throw InvalidInputException.of("--threads", "out of range", "a count in [1, 1024]", threads);
        }
        return threads;
    }
}
