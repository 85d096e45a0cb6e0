package scion.io;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.channels.FileChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.DirectoryStream;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.stream.Stream;

/**
 * A staging area next to a destination that becomes the destination atomically, or disappears.
 *
 * <p>Usage: {@code try (AtomicOutput out = AtomicOutput.begin(dest, force)) { write into out.staging(); ...;
 * out.commit(); }}. The staging path is a sibling of the destination ({@code .<name>.scion-staging-<pid>-<n>}), so the
 * final rename never crosses a file system. {@link #commit()} fsyncs every staged file and renames; closing without
 * a commit deletes the staging area and leaves the destination untouched. An existing destination is an error unless
 * {@code force}; with {@code force} it is replaced only at commit time.
 */
public final class AtomicOutput implements AutoCloseable {
    private static long counter;

    private final Path destination;
    private final Path staging;
    private final boolean force;
    private boolean committed;

    private AtomicOutput(Path destination, Path staging, boolean force) {
        this.destination = destination;
        this.staging = staging;
        this.force = force;
    }

    /**
     * Starts an output at {@code destination}; the staging area is a file path (not yet created) when {@code
     * directory} is false, else an empty directory.
     */
    public static AtomicOutput begin(Path destination, boolean force, boolean directory) {
        Path dest = destination.toAbsolutePath().normalize();
        if (Files.exists(dest, java.nio.file.LinkOption.NOFOLLOW_LINKS) && !force) {
            throw InvalidInputException.of(
                    dest.toString(), "output already exists", "a new path (or --force)", "an existing file or folder");
        }
        Path parent = dest.getParent();
        try {
            Files.createDirectories(parent);
            long n;
            synchronized (AtomicOutput.class) {
                n = ++counter;
            }
            Path staging = parent.resolve("." + dest.getFileName() + ".scion-staging-"
                    + ProcessHandle.current().pid() + "-" + n);
            if (directory) {
                Files.createDirectory(staging);
            }
            return new AtomicOutput(dest, staging, force);
        } catch (IOException e) {
            throw new UncheckedIOException(parent + ": cannot create the staging area for " + dest, e);
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
        try {
            fsyncTree(staging);
            if (force && Files.exists(destination)) {
                Path old = destination.resolveSibling("." + destination.getFileName() + ".scion-old-"
                        + ProcessHandle.current().pid());
                Files.move(destination, old, StandardCopyOption.ATOMIC_MOVE);
                moveAtomically(staging, destination);
                deleteTree(old);
            } else {
                moveAtomically(staging, destination);
            }
            fsyncDirectory(destination.getParent());
            committed = true;
        } catch (IOException e) {
            throw new UncheckedIOException(destination + ": cannot move the finished output into place", e);
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
            }
        }
    }

    /** Deletes a file or a directory tree if it exists. */
    public static void deleteTree(Path p) throws IOException {
        if (!Files.exists(p, java.nio.file.LinkOption.NOFOLLOW_LINKS)) {
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
}
