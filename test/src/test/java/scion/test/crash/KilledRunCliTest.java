package scion.test.crash;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Optional;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.test.Fixtures;
import scion.test.cli.CliRun;
import scion.test.cli.ScionProcess;

/**
 * A real {@code kill -9} ({@link Process#destroyForcibly()}) of a {@code scion convert} child process in the middle of
 * writing: the destination does not appear, the staging file stays (nothing can remove it then), and the next run to
 * the same destination removes it, says so in one line, and writes the same bytes as an uninterrupted run.
 */
class KilledRunCliTest {
    @TempDir
    Path dir;

    @TempDir
    Path logs;

    static List<String> listing(Path d) throws IOException {
        try (Stream<Path> s = Files.list(d)) {
            return s.map(p -> p.getFileName().toString()).sorted().collect(Collectors.toList());
        }
    }

    static Optional<Path> staging(Path d, String name) throws IOException {
        try (Stream<Path> s = Files.list(d)) {
            return s.filter(p -> p.getFileName().toString().startsWith("." + name + ".scion-staging-"))
                    .findFirst();
        }
    }

    @Test
    void aConvertKilledMidWriteLeavesNoOutputAndTheNextRunRemovesItsStaging() throws Exception {
        Path in = Fixtures.miniLmOnnx(); // 90 MB of float32: the f16 conversion takes long enough to be caught
        Path out = dir.resolve("m.onnx");
        String[] args = {"convert", in.toString(), out.toString(), "--dtype", "f16"};
        Path stale = null;
        for (int attempt = 0; attempt < 3 && stale == null; attempt++) {
            ScionProcess p = ScionProcess.start(logs, List.of(), args);
            Optional<Path> s = Optional.empty();
            while (p.process().isAlive()) {
                s = staging(dir, "m.onnx");
                if (s.isPresent() && Files.size(s.get()) > 0) {
                    p.process().destroyForcibly();
                    break;
                }
                Thread.sleep(0, 200_000);
            }
            CliRun r = p.await();
            if (r.code() == 137) {
                stale = s.orElseThrow();
            } else {
                assertEquals(0, r.code(), r.toString()); // finished before the kill landed: try again
                Files.delete(out);
            }
        }
        assertTrue(stale != null, "the child was never caught mid-write in three attempts");
        assertFalse(Files.exists(out), "a killed run must not leave its destination");
        assertEquals(
                List.of(stale.getFileName().toString()),
                listing(dir).stream().filter(n -> !n.endsWith(".scion-lock")).collect(Collectors.toList()));

        CliRun again = CliRun.of(args);
        assertEquals(0, again.code(), again.toString());
        List<String> notes =
                again.err().lines().filter(l -> l.contains("killed run")).collect(Collectors.toList());
        assertEquals(1, notes.size(), again.toString());
        assertTrue(
                notes.get(0).startsWith("scion: " + out + ": removed a staging area left by a killed run ("),
                notes.get(0));
        assertTrue(notes.get(0).endsWith(stale.getFileName().toString()), notes.get(0));
        assertEquals(List.of("m.onnx"), listing(dir));

        Path reference = logs.resolve("m.onnx");
        CliRun ref = CliRun.of("convert", in.toString(), reference.toString(), "--dtype", "f16");
        assertEquals(0, ref.code(), ref.toString());
        assertArrayEquals(Files.readAllBytes(reference), Files.readAllBytes(out));
    }
}
