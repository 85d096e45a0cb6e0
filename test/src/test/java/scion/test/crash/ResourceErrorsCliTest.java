package scion.test.crash;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.AtomicOutput;
import scion.test.Fixtures;
import scion.test.cli.CliRun;
import scion.test.cli.ScionProcess;

/**
 * What the machine refuses: memory, disk space, write access, the destination itself (another run writing it). Each
 * is one line on stderr and exit code 6 ({@code ExitCodes.RESOURCE}), with nothing left behind. Disk full and the
 * read-only destination use a real tmpfs and a read-only bind mount (skipped where mounting is not permitted);
 * permission denied uses {@code chmod 555}, or {@code chattr +i} as root, whom permission bits do not stop.
 */
class ResourceErrorsCliTest {
    static final int RESOURCE = 6;

    @TempDir
    Path dir;

    @TempDir
    Path logs;

    static List<String> listing(Path d) throws IOException {
        try (Stream<Path> s = Files.list(d)) {
            return s.map(p -> p.getFileName().toString()).sorted().collect(Collectors.toList());
        }
    }

    static boolean staging(Path d) throws IOException {
        try (Stream<Path> s = Files.list(d)) {
            return s.anyMatch(p -> p.getFileName().toString().startsWith(".m.onnx.scion-staging-"));
        }
    }

    static boolean sh(String... cmd) {
        try {
            Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
            p.getInputStream().readAllBytes();
            return p.waitFor(30, TimeUnit.SECONDS) && p.exitValue() == 0;
        } catch (IOException e) {
            return false;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        }
    }

    static void oneLine(CliRun r, String... fragments) {
        assertEquals(RESOURCE, r.code(), r.toString());
        List<String> lines = r.err().lines().collect(Collectors.toList());
        assertEquals(1, lines.size(), r.toString());
        for (String f : fragments) {
            assertTrue(lines.get(0).contains(f), "'" + f + "' missing in: " + lines.get(0));
        }
    }

    String[] convertLlamaTo(Path out) {
        return new String[] {"convert", Fixtures.hf("llama").toString(), out.toString()};
    }

    @Test
    void aSecondWriterOfTheSameDestinationIsRefused() throws IOException {
        Path out = dir.resolve("out");
        try (AtomicOutput first = AtomicOutput.begin(out, false, true)) {
            CliRun r = CliRun.of(convertLlamaTo(out));
            oneLine(
                    r,
                    out + ": another run is writing this output (pid "
                            + ProcessHandle.current().pid() + ")");
            assertEquals(
                    List.of(".out.scion-lock", first.staging().getFileName().toString()), listing(dir));
        }
        assertEquals(List.of(), listing(dir));
    }

    @Test
    void aSecondRunIsRefusedWhileAnotherProcessWritesTheSameDestination() throws Exception {
        Path out = dir.resolve("m.onnx");
        String[] second = {"convert", Fixtures.resource("onnx/llama.onnx").toString(), out.toString(), "--force"};
        CliRun refused = null;
        for (int attempt = 0; attempt < 3 && refused == null; attempt++) {
            ScionProcess first = ScionProcess.start( // a f16 conversion of 90 MB: a second or more of writing
                    logs,
                    List.of(),
                    "convert",
                    Fixtures.miniLmOnnx().toString(),
                    out.toString(),
                    "--dtype",
                    "f16",
                    "--force");
            boolean writing = false;
            while (first.process().isAlive() && !writing) {
                writing = staging(dir);
                Thread.sleep(0, 200_000);
            }
            CliRun r = writing ? CliRun.of(second) : null;
            boolean stillWriting = staging(dir); // not yet committed: it held the lock all along
            first.process().destroyForcibly();
            first.await();
            if (r != null && stillWriting) {
                refused = r;
            }
        }
        assertTrue(refused != null, "the first run was never caught writing in three attempts");
        oneLine(refused, out + ": another run is writing this output (pid ");
        CliRun next = CliRun.of(second); // the killed first run's staging and lock are taken over
        assertEquals(0, next.code(), next.toString());
        assertEquals(List.of("m.onnx"), listing(dir));
    }

    @Test
    void diskFullIsOneLineAndLeavesNothing() throws IOException {
        Path mnt = Files.createDirectory(dir.resolve("small"));
        assumeTrue(sh("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", mnt.toString()), "cannot mount a tmpfs here");
        try {
            CliRun r = CliRun.of(convertLlamaTo(mnt.resolve("out"))); // 420 kB of weights into 256 kB
            oneLine(r, "no space left on device");
            assertEquals(List.of(), listing(mnt));
        } finally {
            assertTrue(sh("umount", mnt.toString()));
        }
    }

    @Test
    void aReadOnlyDestinationIsOneLineAndLeavesNothing() throws IOException {
        Path ro = Files.createDirectory(dir.resolve("ro"));
        assumeTrue(sh("mount", "--bind", ro.toString(), ro.toString()), "cannot bind-mount here");
        try {
            assumeTrue(sh("mount", "-o", "remount,ro,bind", ro.toString()), "cannot remount read-only here");
            CliRun r = CliRun.of(convertLlamaTo(ro.resolve("out")));
            oneLine(r, "read-only file system");
            assertEquals(List.of(), listing(ro));
        } finally {
            assertTrue(sh("umount", ro.toString()));
        }
    }

    @Test
    void permissionDeniedIsOneLineAndLeavesNothing() throws IOException {
        Path locked = Files.createDirectory(dir.resolve("locked"));
        boolean root = "root".equals(System.getProperty("user.name"));
        if (root) {
            assumeTrue(sh("chattr", "+i", locked.toString()), "chattr +i is not available here");
        } else {
            assertTrue(locked.toFile().setWritable(false, false));
        }
        try {
            CliRun r = CliRun.of(convertLlamaTo(locked.resolve("out")));
            oneLine(r, root ? "operation not permitted" : "permission denied");
            assertEquals(List.of(), listing(locked));
        } finally {
            if (root) {
                assertTrue(sh("chattr", "-i", locked.toString()));
            } else {
                assertTrue(locked.toFile().setWritable(true, false));
            }
        }
    }

    @Test
    void outOfMemoryIsOneLineWithTheHintAndLeavesNothing() throws IOException {
        Path out = dir.resolve("m.onnx");
        CliRun r = ScionProcess.run(
                logs,
                List.of("-Xmx8m"), // the 90 MB model's protobuf does not fit
                "convert",
                Fixtures.miniLmOnnx().toString(),
                out.toString(),
                "--dtype",
                "f16");
        oneLine(r, "scion convert: out of memory (", "hint: SCION_JAVA_OPTS=-Xmx", "or --threads 1");
        assertFalse(r.err().contains("Exception in thread"), r.toString());
        assertEquals(List.of(), listing(dir));
    }
}
