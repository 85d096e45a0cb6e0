package scion.test.cli;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Runs the real {@code scion} command line in a child JVM ({@code java -cp <test classpath> scion.cli.Scion ...}),
 * for tests that kill it or give it a heap of its own. Its stdout and stderr go to files in {@code logs}.
 */
public final class ScionProcess {
    private final Process process;
    private final Path stdout;
    private final Path stderr;

    private ScionProcess(Process process, Path stdout, Path stderr) {
        this.process = process;
        this.stdout = stdout;
        this.stderr = stderr;
    }

    /** Starts {@code scion args...} with extra JVM options ({@code -Dkey=value}, {@code -Xmx...}). */
    public static ScionProcess start(Path logs, List<String> jvmOptions, String... args) {
        List<String> cmd = new ArrayList<>();
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        cmd.add("-XX:TieredStopAtLevel=1"); // short runs: start fast
        cmd.addAll(jvmOptions);
        cmd.add("-cp");
        cmd.add(System.getProperty("java.class.path"));
        cmd.add("scion.cli.Scion");
        cmd.addAll(List.of(args));
        try {
            Files.createDirectories(logs);
            Path out = Files.createTempFile(logs, "stdout", ".txt");
            Path err = Files.createTempFile(logs, "stderr", ".txt");
            Process p = new ProcessBuilder(cmd)
                    .redirectOutput(out.toFile())
                    .redirectError(err.toFile())
                    .start();
            return new ScionProcess(p, out, err);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot start " + cmd, e);
        }
    }

    /** Runs to the end (at most five minutes) and returns its exit code and output. */
    public static CliRun run(Path logs, List<String> jvmOptions, String... args) {
        return start(logs, jvmOptions, args).await();
    }

    public Process process() {
        return process;
    }

    /** Waits for the end (at most five minutes; then kills it and fails). */
    public CliRun await() {
        try {
            if (!process.waitFor(5, TimeUnit.MINUTES)) {
                process.destroyForcibly().waitFor();
                throw new AssertionError("scion did not finish within five minutes");
            }
            return new CliRun(
                    process.exitValue(),
                    Files.readString(stdout, StandardCharsets.UTF_8),
                    Files.readString(stderr, StandardCharsets.UTF_8));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError("interrupted", e);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
