package scion.io;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.DirectoryStream;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.Objects;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;
import java.util.stream.Stream;

/**
 * A staging area next to a destination that becomes the destination atomically, or disappears.
 *
 * <p>Usage: {@code try (AtomicOutput out = AtomicOutput.begin(dest, force)) { write into out.staging(); ...;
 * out.commit(); }}. The staging path is a sibling of the destination ({@code .<name>.scion-staging-<pid>-<n>}), so the
 * final rename never crosses a file system. {@link #commit()} fsyncs every staged file and renames; closing without
 * a commit deletes the staging area and leaves the destination untouched. An existing destination is an error unless
 * {@code force}; with {@code force} it is replaced only at commit time: a file by one atomic rename over it; a folder
 * (which rename(2) cannot replace while it has content) is renamed aside to {@code .<name>.scion-old-<pid>}, the
 * staging folder renamed into place, and the old one deleted.
 *
 * <p>One writer per destination: from {@link #begin} to commit or close the output holds an exclusive lock ({@link
 * FileChannel#tryLock}) on {@code .<name>.scion-lock}; a second writer, in this process or another, gets a {@link
 * ResourceException}. The lock file is removed when the output ends; the kernel releases the lock of a killed
 * process, and the next run takes its file over. (File systems without POSIX locks, some network ones, give no
 * protection against a second writer; a file key that the kernel reuses within microseconds could in theory too.)
 *
 * <p>A run killed with {@code kill -9} cannot clean up. {@link #begin} therefore first looks for what such a run left
 * beside the same destination, judged by the process id in the name: staging areas whose process is gone are
 * removed (a live process's, a concurrent run of another tool version, is left alone), and a folder renamed aside by
 * a replace that died before the new one was in place is renamed back. Each such repair is told in one line to
 * {@link #notes}.
 *
 * <p>Test hook, for the crash tests only: the system property {@value #CRASH_PROPERTY} makes the JVM halt at once with
 * exit code 137, as {@code kill -9} would (no finally block, no shutdown hook, no cleanup), at a named point: {@code
 * bytes:N} once the writers have reported N or more bytes through {@link #wrote}, or a phase passed to {@link
 * #crashPoint}: {@code staged} (staging area created), {@code commit} (everything written and verified), {@code
 * fsynced} (before the rename), {@code moved-aside} (a replaced folder renamed aside, the new one not yet in place),
 * {@code renamed} (the new output in place, the old one not yet deleted); and for an ONNX model with external data
 * ({@code OnnxWriter}) {@code data-staged}, {@code switched}, {@code data-linked}. Without the property nothing
 * happens.
 */
public final class AtomicOutput implements AutoCloseable {
    /** The system property of the crash test hook (see the class comment). */
    public static final String CRASH_PROPERTY = "scion.test.crashAt";

    private static final String CRASH_AT = System.getProperty(CRASH_PROPERTY, "");
    private static final long CRASH_BYTES =
            CRASH_AT.startsWith("bytes:") ? Long.parseLong(CRASH_AT.substring("bytes:".length())) : -1;
    private static final AtomicLong WRITTEN = new AtomicLong();

    private static final String STAGING = ".scion-staging-";
    private static final String OLD = ".scion-old-";
    private static final String LOCK = ".scion-lock";
    private static final long PID = ProcessHandle.current().pid();

    private static long counter;
    private static volatile Consumer<String> notes = note -> System.err.println("scion: " + note);

    private final Path destination;
    private final Path staging;
    private final boolean force;
    private final Lock lock;
    private boolean committed;

    private AtomicOutput(Path destination, Path staging, boolean force, Lock lock) {
        this.destination = destination;
        this.staging = staging;
        this.force = force;
        this.lock = lock;
    }

    /**
     * Sets where notes about repairs go (one line each, e.g. a stale staging area removed) and returns the previous
     * receiver. The default prints {@code scion: <note>} on standard error.
     */
    public static Consumer<String> notes(Consumer<String> receiver) {
        Consumer<String> previous = notes;
        notes = Objects.requireNonNull(receiver);
        return previous;
    }

    /**
     * Starts an output at {@code destination}; the staging area is a file path (not yet created) when {@code
     * directory} is false, else an empty directory.
     *
     * @throws InvalidInputException if the destination exists and {@code force} is false
     * @throws ResourceException if another writer holds the destination's lock
     */
    public static AtomicOutput begin(Path destination, boolean force, boolean directory) {
        Path dest = destination.toAbsolutePath().normalize();
        refuseExisting(dest, force);
        Path parent = dest.getParent();
        Lock lock = null;
        try {
            Files.createDirectories(parent);
            lock = Lock.take(dest);
            repair(dest);
            refuseExisting(dest, force);
            long n;
            synchronized (AtomicOutput.class) {
                n = ++counter;
            }
            Path staging = sibling(dest, STAGING + PID + "-" + n);
            if (directory) {
                Files.createDirectory(staging);
            }
            AtomicOutput out = new AtomicOutput(dest, staging, force, lock);
            lock = null;
            crashPoint("staged");
            return out;
        } catch (IOException e) {
            throw new UncheckedIOException(parent + ": cannot create the staging area for " + dest, e);
        } finally {
            if (lock != null) {
                lock.release();
            }
        }
    }

    private static void refuseExisting(Path dest, boolean force) {
        if (!force && Files.exists(dest, LinkOption.NOFOLLOW_LINKS)) {
            throw InvalidInputException.of(
                    dest.toString(), "output already exists", "a new path (or --force)", "an existing file or folder");
        }
    }

    /** Where to write: a file path or a directory, as chosen in {@link #begin}. */
    public Path staging() {
        return staging;
    }

    public Path destination() {
        return destination;
    }

    /** Fsyncs the staged files and renames the staging area onto the destination. */
    public void commit() {
        if (committed) {
            throw new IllegalStateException(destination + ": output already committed");
        }
        try {
            crashPoint("commit");
            fsyncTree(staging);
            crashPoint("fsynced");
            boolean replace = force && Files.exists(destination, LinkOption.NOFOLLOW_LINKS);
            if (replace
                    && !(Files.isRegularFile(staging, LinkOption.NOFOLLOW_LINKS)
                            && Files.isRegularFile(destination, LinkOption.NOFOLLOW_LINKS))) {
                Path old = sibling(destination, OLD + PID);
                Files.move(destination, old, StandardCopyOption.ATOMIC_MOVE);
                crashPoint("moved-aside");
                try {
                    moveAtomically(staging, destination);
                } catch (IOException e) {
                    Files.move(old, destination, StandardCopyOption.ATOMIC_MOVE); // put the old one back
                    throw e;
                }
                crashPoint("renamed");
                deleteTree(old);
            } else {
                moveAtomically(staging, destination); // rename(2) replaces a file atomically
                crashPoint("renamed");
            }
            fsyncDirectory(destination.getParent());
            committed = true;
        } catch (IOException e) {
            throw new UncheckedIOException(destination + ": cannot move the finished output into place", e);
        } finally {
            if (committed) {
                lock.release();
            }
        }
    }

    private static void moveAtomically(Path from, Path to) throws IOException {
        try {
            Files.move(from, to, StandardCopyOption.ATOMIC_MOVE);
        } catch (FileAlreadyExistsException | AtomicMoveNotSupportedException e) {
            throw new IOException("atomic rename of " + from + " to " + to + " failed", e);
        }
    }

    @Override
    public void close() {
        if (!committed) {
            try {
                deleteTree(staging);
            } catch (IOException e) {
                throw new UncheckedIOException(staging + ": cannot remove the staging area", e);
            } finally {
                lock.release();
            }
        }
    }

    /** Writers report the bytes they write here; only the crash test hook ({@code bytes:N}) looks at them. */
    public static void wrote(long bytes) {
        if (CRASH_BYTES >= 0 && WRITTEN.addAndGet(bytes) >= CRASH_BYTES) {
            Runtime.getRuntime().halt(137);
        }
    }

    /** Halts the JVM (exit code 137) if the crash test hook names this phase; nothing otherwise. */
    public static void crashPoint(String phase) {
        if (CRASH_AT.equals(phase)) {
            Runtime.getRuntime().halt(137);
        }
    }

    /**
     * Removes what killed runs left beside {@code dest}: staging areas of processes that are gone, and a folder renamed
     * aside by an unfinished replace (renamed back when the destination is missing, else deleted).
     */
    static void repair(Path dest) throws IOException {
        String name = "." + dest.getFileName();
        List<Path> stale = new ArrayList<>();
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(dest.getParent(), name + ".scion-*")) {
            for (Path p : ds) {
                String f = p.getFileName().toString();
                long pid = f.startsWith(name + STAGING)
                        ? pidOf(f.substring((name + STAGING).length()))
                        : f.startsWith(name + OLD) ? pidOf(f.substring((name + OLD).length())) : -1;
                if (pid >= 0 && pid != PID && ProcessHandle.of(pid).isEmpty()) {
                    stale.add(p);
                }
            }
        }
        stale.sort(Comparator.naturalOrder());
        List<String> removed = new ArrayList<>();
        long bytes = 0;
        for (Path p : stale) {
            if (p.getFileName().toString().startsWith(name + OLD) && !Files.exists(dest, LinkOption.NOFOLLOW_LINKS)) {
                Files.move(p, dest, StandardCopyOption.ATOMIC_MOVE);
                notes.accept(dest + ": restored the previous output from " + p.getFileName()
                        + ", left by a replace that was killed before the new output was in place");
                continue;
            }
            bytes += sizeOf(p);
            deleteTree(p);
            removed.add(p.getFileName().toString());
        }
        if (!removed.isEmpty()) {
            notes.accept(String.format(
                    Locale.ROOT,
                    "%s: removed %s left by a killed run (%s): %s",
                    dest,
                    removed.size() == 1 ? "a staging area" : removed.size() + " staging areas",
                    humanBytes(bytes),
                    String.join(", ", removed)));
        }
    }

    /** The process id at the start of {@code <pid>-<n>} or {@code <pid>}, or -1. */
    private static long pidOf(String rest) {
        int end = rest.indexOf('-');
        String digits = end < 0 ? rest : rest.substring(0, end);
        if (digits.isEmpty() || digits.length() > 18 || !digits.chars().allMatch(Character::isDigit)) {
            return -1;
        }
        return Long.parseLong(digits);
    }

    private static long sizeOf(Path p) throws IOException {
        try (Stream<Path> s = Files.walk(p)) {
            long total = 0;
            for (Path q : (Iterable<Path>) s::iterator) {
                if (Files.isRegularFile(q, LinkOption.NOFOLLOW_LINKS)) {
                    total += Files.size(q);
                }
            }
            return total;
        }
    }

    private static String humanBytes(long b) {
        if (b < 1024) {
            return b + " B";
        }
        String[] units = {"KiB", "MiB", "GiB", "TiB"};
        double v = b;
        int u = -1;
        while (v >= 1024 && u < units.length - 1) {
            v /= 1024;
            u++;
        }
        return String.format(Locale.ROOT, "%.1f %s", v, units[u]);
    }

    private static Path sibling(Path dest, String suffix) {
        return dest.resolveSibling("." + dest.getFileName() + suffix);
    }

    /** Deletes a file or a directory tree if it exists. */
    public static void deleteTree(Path p) throws IOException {
        if (!Files.exists(p, LinkOption.NOFOLLOW_LINKS)) {
            return;
        }
        try (Stream<Path> s = Files.walk(p)) {
            List<Path> all = new ArrayList<>();
            s.forEach(all::add);
            all.sort(Comparator.reverseOrder());
            for (Path q : all) {
                Files.deleteIfExists(q);
            }
        }
    }

    /** Forces a staged file (or folder tree) to disk, as {@link #commit()} does before its rename. */
    public static void fsync(Path p) throws IOException {
        fsyncTree(p);
    }

    private static void fsyncTree(Path p) throws IOException {
        if (Files.isDirectory(p)) {
            try (DirectoryStream<Path> ds = Files.newDirectoryStream(p)) {
                for (Path q : ds) {
                    fsyncTree(q);
                }
            }
            fsyncDirectory(p);
        } else if (Files.exists(p)) {
            try (FileChannel ch = FileChannel.open(p, StandardOpenOption.WRITE)) {
                ch.force(true);
            }
        }
    }

    private static void fsyncDirectory(Path dir) {
        try (FileChannel ch = FileChannel.open(dir, StandardOpenOption.READ)) {
            ch.force(true);
        } catch (IOException e) {
            // Some file systems cannot fsync a directory; the rename itself is still atomic.
        }
    }

    /**
     * The exclusive lock on {@code .<name>.scion-lock}. POSIX record locks belong to a process and a file, and closing
     * any descriptor of the file releases them, so this process never opens a lock file it holds a second time (a
     * lock held here is refused from the table {@code HELD}), and the holder's identity is checked by the file's key
     * (device and inode, from {@code stat}, which opens nothing): the key before opening and after locking must be the
     * same, else the previous holder removed the file in between and the lock is taken again.
     */
    private static final class Lock {
        private static final java.util.Set<Path> HELD =
                java.util.Collections.synchronizedSet(new java.util.HashSet<>());

        private final Path file;
        private final FileChannel channel;
        private boolean released;

        private Lock(Path file, FileChannel channel) {
            this.file = file;
            this.channel = channel;
        }

        static Lock take(Path dest) throws IOException {
            Path file = sibling(dest, LOCK);
            if (!HELD.add(file)) {
                throw busy(dest, file, Long.toString(PID));
            }
            boolean taken = false;
            try {
                for (int attempt = 0; attempt < 100; attempt++) {
                    Object before = fileKey(file);
                    FileChannel ch = FileChannel.open(
                            file, StandardOpenOption.CREATE, StandardOpenOption.READ, StandardOpenOption.WRITE);
                    FileLock held;
                    try {
                        held = ch.tryLock();
                    } catch (OverlappingFileLockException e) {
                        held = null;
                    }
                    if (held == null) {
                        String holder = read(ch).trim();
                        ch.close();
                        throw busy(dest, file, holder);
                    }
                    if (before != null && before.equals(fileKey(file))) {
                        ch.truncate(0);
                        ch.write(ByteBuffer.wrap(Long.toString(PID).getBytes(StandardCharsets.UTF_8)), 0);
                        taken = true;
                        return new Lock(file, ch);
                    }
                    ch.close(); // created just now, or replaced since: look again
                }
                throw new ResourceException(dest + ": cannot take the lock " + file.getFileName()
                        + "; expected it to settle, found it removed and re-created 100 times");
            } finally {
                if (!taken) {
                    HELD.remove(file);
                }
            }
        }

        private static ResourceException busy(Path dest, Path file, String holder) {
            return new ResourceException(dest + ": another run is writing this output"
                    + (holder.matches("[0-9]+") ? " (pid " + holder + ")" : "")
                    + "; expected one writer at a time, found " + file.getFileName() + " locked");
        }

        private static Object fileKey(Path file) throws IOException {
            try {
                return Files.readAttributes(
                                file, java.nio.file.attribute.BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS)
                        .fileKey();
            } catch (NoSuchFileException e) {
                return null;
            }
        }

        private static String read(FileChannel ch) throws IOException {
            ByteBuffer b = ByteBuffer.allocate(64);
            while (b.hasRemaining() && ch.read(b, b.position()) > 0) {
                // read up to 64 bytes
            }
            return new String(b.array(), 0, b.position(), StandardCharsets.UTF_8);
        }

        /** Removes the lock file while still holding the lock, then releases it. */
        void release() {
            if (released) {
                return;
            }
            released = true;
            try (FileChannel ch = channel) {
                Files.deleteIfExists(file);
            } catch (IOException e) {
                throw new UncheckedIOException(file + ": cannot remove the lock file", e);
            } finally {
                HELD.remove(file);
            }
        }
    }
}
