package scion.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Staging areas left by killed runs, the one-writer lock, and replacing files and folders. */
class AtomicOutputTest {
    /** Above Linux's largest pid_max (2^22): no process has it. */
    static final long DEAD_PID = 999_999_999L;

    @TempDir
    Path dir;

    final List<String> notes = new ArrayList<>();
    Consumer<String> previous;

    @BeforeEach
    void captureNotes() {
        previous = AtomicOutput.notes(notes::add);
    }

    @AfterEach
    void restoreNotes() {
        AtomicOutput.notes(previous);
    }

    List<String> listing() throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).sorted().collect(Collectors.toList());
        }
    }

    @Test
    void staleStagingOfAGoneProcessIsRemovedWithOneNote() throws IOException {
        assertTrue(ProcessHandle.of(DEAD_PID).isEmpty());
        Path stale = Files.createDirectory(dir.resolve(".out.scion-staging-" + DEAD_PID + "-1"));
        Files.write(stale.resolve("model.safetensors"), new byte[3000]);
        Path staleFile = Files.write(dir.resolve(".out.scion-staging-" + DEAD_PID + "-2"), new byte[10]);
        long live = ProcessHandle.current().parent().orElseThrow().pid();
        Path concurrent = Files.createDirectory(dir.resolve(".out.scion-staging-" + live + "-1"));
        Path otherDestination = Files.createDirectory(dir.resolve(".other.scion-staging-" + DEAD_PID + "-1"));
        Path userFile = Files.createDirectory(dir.resolve(".out.scion-staging-notapid"));

        try (AtomicOutput out = AtomicOutput.begin(dir.resolve("out"), false, true)) {
            assertFalse(Files.exists(stale));
            assertFalse(Files.exists(staleFile));
            assertTrue(Files.exists(concurrent), "a live process's staging is left alone");
            assertTrue(Files.exists(otherDestination), "another destination's staging is not this run's business");
            assertTrue(Files.exists(userFile));
            assertEquals(1, notes.size(), notes.toString());
            String note = notes.get(0);
            assertTrue(note.contains("removed 2 staging areas left by a killed run (2.9 KiB)"), note);
            assertTrue(note.contains(stale.getFileName().toString()), note);
            assertTrue(note.contains(staleFile.getFileName().toString()), note);
            Files.writeString(out.staging().resolve("a.txt"), "new");
            out.commit();
        }
        assertEquals("new", Files.readString(dir.resolve("out/a.txt")));
    }

    @Test
    void nothingStaleMeansNoNote() throws IOException {
        try (AtomicOutput out = AtomicOutput.begin(dir.resolve("x.bin"), false, false)) {
            Files.writeString(out.staging(), "x");
            out.commit();
        }
        assertEquals(List.of(), notes);
        assertEquals(List.of("x.bin"), listing());
    }

    @Test
    void aSecondWriterOfTheSameDestinationIsRefusedUntilTheFirstEnds() throws IOException {
        Path dest = dir.resolve("out");
        try (AtomicOutput first = AtomicOutput.begin(dest, false, true)) {
            ResourceException e = assertThrows(ResourceException.class, () -> AtomicOutput.begin(dest, true, true));
            assertTrue(
                    e.getMessage()
                            .startsWith(dest + ": another run is writing this output (pid "
                                    + ProcessHandle.current().pid() + ")"),
                    e.getMessage());
            assertTrue(Files.exists(dir.resolve(".out.scion-lock")));
            try (AtomicOutput other = AtomicOutput.begin(dir.resolve("other"), false, true)) {
                assertTrue(Files.isDirectory(other.staging()), "other destinations are not locked");
            }
            assertTrue(Files.isDirectory(first.staging()));
        }
        assertEquals(List.of(), listing(), "closing removes the staging area and the lock file");
        try (AtomicOutput again = AtomicOutput.begin(dest, false, true)) {
            again.commit();
        }
        assertEquals(List.of("out"), listing());
    }

    @Test
    void aLockFileLeftByAKilledRunIsTakenOverAndRemoved() throws IOException {
        Files.writeString(dir.resolve(".out.scion-lock"), Long.toString(DEAD_PID));
        try (AtomicOutput out = AtomicOutput.begin(dir.resolve("out"), false, true)) {
            out.commit();
        }
        assertEquals(List.of("out"), listing());
    }

    @Test
    void forceReplacesAFileAndAFolderOnlyAtCommit() throws IOException {
        Path file = Files.writeString(dir.resolve("f.bin"), "old");
        Path folder = Files.createDirectory(dir.resolve("d"));
        Files.writeString(folder.resolve("a"), "old");
        try (AtomicOutput f = AtomicOutput.begin(file, true, false);
                AtomicOutput d = AtomicOutput.begin(folder, true, true)) {
            Files.writeString(f.staging(), "new");
            Files.writeString(d.staging().resolve("b"), "new");
            assertEquals("old", Files.readString(file));
            assertEquals("old", Files.readString(folder.resolve("a")));
            f.commit();
            d.commit();
        }
        assertEquals("new", Files.readString(file));
        assertEquals(List.of("b"), List.of(folder.toFile().list()));
        assertEquals(List.of("d", "f.bin"), listing());
    }

    @Test
    void aFolderMovedAsideByAKilledReplaceIsRestoredWhenTheDestinationIsMissing() throws IOException {
        Path aside = Files.createDirectory(dir.resolve(".out.scion-old-" + DEAD_PID));
        Files.writeString(aside.resolve("a"), "old");
        InvalidInputException e =
                assertThrows(InvalidInputException.class, () -> AtomicOutput.begin(dir.resolve("out"), false, true));
        assertTrue(e.getMessage().contains("output already exists"), e.getMessage());
        assertEquals("old", Files.readString(dir.resolve("out/a")));
        assertEquals(1, notes.size(), notes.toString());
        assertTrue(notes.get(0).contains("restored the previous output from .out.scion-old-" + DEAD_PID), notes.get(0));
        assertEquals(List.of("out"), listing());
    }

    @Test
    void aFolderMovedAsideIsDeletedWhenTheNewOneIsInPlace() throws IOException {
        Files.createDirectory(dir.resolve("out"));
        Path aside = Files.createDirectory(dir.resolve(".out.scion-old-" + DEAD_PID));
        Files.writeString(aside.resolve("a"), "old");
        try (AtomicOutput out = AtomicOutput.begin(dir.resolve("out"), true, true)) {
            out.commit();
        }
        assertEquals(List.of("out"), listing());
        assertEquals(1, notes.size(), notes.toString());
    }
}
