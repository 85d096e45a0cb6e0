package scion.test.crash;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;
import scion.io.AtomicOutput;
import scion.io.onnx.OnnxModel;
import scion.io.onnx.OnnxReader;
import scion.test.Fixtures;
import scion.test.cli.CliRun;
import scion.test.cli.ScionProcess;

/**
 * Kills every writer at many points and checks what a user would then find. Each kill is a child JVM halted by the
 * crash hook of {@link AtomicOutput} ({@value AtomicOutput#CRASH_PROPERTY}: exit 137 at once, no cleanup, as {@code
 * kill -9}) at a phase or after N bytes, writing either a fresh destination or, with {@code --force}, over an old
 * output. Then: the destination is exactly the old output (or absent when fresh), or exactly the complete new one; no
 * file under a final name is anything else; and the next run (in-process) removes what the killed run left, says so,
 * and writes the same bytes as an uninterrupted run.
 *
 * <p>By default the phases {@code commit} and {@code renamed} and the writer's own phases are killed over an old
 * output ({@code --force}, the stricter case), and two byte points, one fresh and one forced; {@code -Dscion.crash.full=true} ({@code test/bench/crash-consistency.sh}) adds every phase
 * on a fresh destination and 16 byte points ({@code -Dscion.crash.points=N} to change). The table of every kill goes
 * to {@code target/crash-consistency.md}.
 */
class CrashConsistencyTest {
    static final boolean FULL = Boolean.getBoolean("scion.crash.full");
    static final int BYTE_POINTS = Integer.getInteger("scion.crash.points", FULL ? 16 : 2);
    static final List<String> PHASES = List.of("staged", "commit", "fsynced", "renamed");
    static final List<String> TABLE = new ArrayList<>();

    @TempDir
    static Path work;

    /**
     * A writer to kill: the command writing the new output, and one writing a different old output at the same place.
     *
     * @param extraPhases phases of this writer only
     */
    record Writer(String name, String out, List<String> command, List<String> oldCommand, List<String> extraPhases) {
        String[] args(Path dir, boolean force) {
            List<String> a = new ArrayList<>(command);
            a.replaceAll(s -> s.equals("OUT") ? dir.resolve(out).toString() : s);
            if (force) {
                a.add("--force");
            }
            return a.toArray(new String[0]);
        }

        String[] oldArgs(Path dir) {
            List<String> a = new ArrayList<>(oldCommand);
            a.replaceAll(s -> s.equals("OUT") ? dir.resolve(out).toString() : s);
            return a.toArray(new String[0]);
        }
    }

    static List<Writer> writers() {
        String llama = Fixtures.hf("llama").toString();
        String onnx = Fixtures.resource("onnx/llama.onnx").toString();
        return List.of(
                new Writer(
                        "safetensors single file",
                        "model.safetensors",
                        List.of("convert", llama, "OUT", "--dtype", "f16"),
                        List.of("convert", llama, "OUT", "--dtype", "bf16"),
                        List.of()),
                new Writer(
                        "safetensors sharded",
                        "out",
                        List.of("convert", llama, "OUT", "--dtype", "f16", "--shard-size", "60KB"),
                        List.of("convert", llama, "OUT", "--dtype", "bf16", "--shard-size", "60KB"),
                        List.of("moved-aside")),
                new Writer(
                        "folder with config and recipe (grow)",
                        "out",
                        List.of("grow", llama, "OUT", "--width", "2", "--no-noise"),
                        List.of("convert", llama, "OUT"),
                        List.of("moved-aside")),
                new Writer(
                        "onnx inline",
                        "m.onnx",
                        List.of("convert", onnx, "OUT", "--external-data", "off", "--dtype", "f16"),
                        List.of("convert", onnx, "OUT", "--external-data", "off"),
                        List.of()),
                new Writer(
                        "onnx external data",
                        "m.onnx",
                        List.of("convert", onnx, "OUT", "--external-data", "on", "--dtype", "f16"),
                        List.of("convert", onnx, "OUT", "--external-data", "on"),
                        List.of("data-staged", "switched", "data-linked")));
    }

    /** Every regular file under {@code dir} by relative path, with its bytes. */
    static Map<String, byte[]> snapshot(Path dir) throws IOException {
        Map<String, byte[]> m = new TreeMap<>();
        try (Stream<Path> s = Files.walk(dir)) {
            for (Path p : (Iterable<Path>) s::iterator) {
                if (Files.isRegularFile(p)) {
                    m.put(dir.relativize(p).toString(), Files.readAllBytes(p));
                }
            }
        }
        return m;
    }

    /** Only the visible part (no name starting with a dot at the top level). */
    static Map<String, byte[]> visible(Map<String, byte[]> all) {
        Map<String, byte[]> m = new TreeMap<>(all);
        m.keySet().removeIf(k -> k.startsWith("."));
        return m;
    }

    static boolean same(Map<String, byte[]> a, Map<String, byte[]> b) {
        if (!a.keySet().equals(b.keySet())) {
            return false;
        }
        for (String k : a.keySet()) {
            if (!Arrays.equals(a.get(k), b.get(k))) {
                return false;
            }
        }
        return true;
    }

    static void check(CliRun r, String what) {
        assertEquals(0, r.code(), what + "\n" + r);
    }

    @TestFactory
    Stream<DynamicTest> everyWriterKilledAtEveryPoint() throws IOException {
        List<DynamicTest> tests = new ArrayList<>();
        for (Writer w : writers()) {
            Path root = Files.createDirectories(work.resolve(w.name().replaceAll("[^a-z]+", "-")));
            Path ref = Files.createDirectories(root.resolve("ref"));
            check(CliRun.of(w.args(ref, false)), "reference run");
            Path oldRef = Files.createDirectories(root.resolve("old"));
            check(CliRun.of(w.oldArgs(oldRef)), "old output");
            Map<String, byte[]> newBytes = snapshot(ref);
            Map<String, byte[]> oldBytes = snapshot(oldRef);
            long total = newBytes.entrySet().stream() // the bytes the writers report (AtomicOutput.wrote)
                    .filter(e -> e.getKey().matches(".*\\.(safetensors|onnx|data)"))
                    .mapToLong(e -> e.getValue().length)
                    .sum();
            List<String[]> points = new ArrayList<>(); // {point, "fresh"|"force"}
            List<String> phases = new ArrayList<>(FULL ? PHASES : List.of("commit", "renamed"));
            phases.addAll(w.extraPhases());
            for (String phase : phases) {
                if (FULL && !phase.equals("moved-aside")) {
                    points.add(new String[] {phase, "fresh"});
                }
                points.add(new String[] {phase, "force"});
            }
            for (int i = 0; i < BYTE_POINTS; i++) {
                long at = Math.max(1, total * (2L * i + 1) / (2L * BYTE_POINTS));
                points.add(new String[] {"bytes:" + at, i % 2 == 0 ? "fresh" : "force"});
            }
            int n = 0;
            for (String[] point : points) {
                Path dir = root.resolve("kill-" + n++);
                tests.add(DynamicTest.dynamicTest(
                        w.name() + " killed at " + point[0] + " (" + point[1] + ")",
                        () -> killAndRecover(w, dir, point[0], point[1].equals("force"), newBytes, oldBytes)));
            }
        }
        tests.add(DynamicTest.dynamicTest("crash table", CrashConsistencyTest::writeTable));
        return tests.stream();
    }

    static void killAndRecover(
            Writer w, Path dir, String point, boolean force, Map<String, byte[]> newBytes, Map<String, byte[]> oldBytes)
            throws IOException {
        Files.createDirectories(dir);
        if (force) {
            check(CliRun.of(w.oldArgs(dir)), "old output");
        }
        CliRun killed = ScionProcess.run(
                dir.resolveSibling(dir.getFileName() + "-logs"),
                List.of("-D" + AtomicOutput.CRASH_PROPERTY + "=" + point),
                w.args(dir, force));
        assertEquals(137, killed.code(), "the crash hook did not fire at " + point + "\n" + killed);

        Map<String, byte[]> after = snapshot(dir);
        Map<String, byte[]> shown = visible(after);
        String state;
        if (shown.isEmpty()) {
            state = force ? "absent (old set aside)" : "absent";
            assertTrue(!force || point.equals("moved-aside"), "the old output vanished at " + point);
        } else if (same(shown, oldBytes)) {
            state = "old";
            assertTrue(force, "a fresh run left an output it did not write");
        } else if (same(shown, newBytes)) {
            state = "new";
        } else {
            state = switchedOnnx(dir, w, after, newBytes);
        }
        List<String> hidden; // what the killed run left beside the destination
        try (Stream<Path> ls = Files.list(dir)) {
            hidden = ls.map(p -> p.getFileName().toString())
                    .filter(k -> k.startsWith("."))
                    .sorted()
                    .collect(Collectors.toList());
        }
        List<String> left = hidden.stream()
                .map(k -> k.replaceAll("-[0-9]+", "-PID"))
                .distinct()
                .collect(Collectors.toList());

        CliRun next = CliRun.of(w.args(dir, true));
        check(next, "the next run");
        Map<String, byte[]> done = snapshot(dir);
        assertTrue(same(done, newBytes), "the next run's output differs from an uninterrupted run's: " + done.keySet());
        boolean staged = hidden.stream().anyMatch(k -> k.contains(".scion-staging-") || k.contains(".scion-old-"));
        assertEquals(
                staged,
                next.err().contains("left by a killed run") || next.err().contains("restored the previous output"),
                "the next run must say what it removed\n" + next);
        synchronized (TABLE) {
            TABLE.add(String.format(
                    Locale.ROOT,
                    "| %s | %s | %s | %s | %s | clean, same bytes as an uninterrupted run |",
                    w.name(),
                    point,
                    force ? "--force over old" : "fresh",
                    state,
                    left.isEmpty() ? "nothing" : String.join(", ", left)));
        }
    }

    /**
     * The one allowed in-between state of an ONNX model with external data: killed after the switch, the model at the
     * destination is the new one naming the swap data file, which holds exactly the new data.
     */
    static String switchedOnnx(Path dir, Writer w, Map<String, byte[]> after, Map<String, byte[]> newBytes)
            throws IOException {
        String data = w.out() + ".data";
        String swap = after.keySet().stream()
                .filter(k -> k.startsWith("." + data + ".scion-swap-"))
                .findFirst()
                .orElseThrow(() -> new AssertionError("half-written output: " + after.keySet()));
        assertTrue(Arrays.equals(after.get(swap), newBytes.get(data)), "the swap data file is not the new data");
        String model = new String(after.get(w.out()), StandardCharsets.ISO_8859_1);
        assertTrue(model.contains(swap), "the model does not name the swap file");
        try (OnnxModel m = OnnxReader.open(dir.resolve(w.out()))) { // checks every external data reference
            assertTrue(m.proto().getGraph().getInitializerCount() > 0, "the switched model has no initializers");
        }
        return "new model naming the new data under its swap name";
    }

    static void writeTable() throws IOException {
        List<String> lines = new ArrayList<>();
        lines.add("| writer | kill point | mode | destination after the kill | left beside it | after the next run |");
        lines.add("|---|---|---|---|---|---|");
        lines.addAll(TABLE);
        Path out = Path.of("target", "crash-consistency.md");
        Files.createDirectories(out.getParent());
        Files.write(out, lines);
        System.out.println(String.join("\n", lines));
        System.out.println(TABLE.size() + " kills");
    }
}
