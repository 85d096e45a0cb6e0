package scion.cli;

/** The exit codes of every {@code scion} command, documented in the README. */
public final class ExitCodes {
    private ExitCodes() {}

    /** The command did what was asked. */
    public static final int OK = 0;
    /** An unexpected failure: a bug or an I/O error the user did not cause (the message says which). */
    public static final int INTERNAL = 1;
    /** The command line is wrong: unknown option, missing argument (picocli's usage error). */
    public static final int USAGE = 2;
    /** The input is wrong: a malformed or inconsistent file, a bad parameter, an unsupported architecture. */
    public static final int INVALID_INPUT = 3;
    /** A check ran and failed (a validation gate such as {@code --expect}). */
    public static final int CHECK_FAILED = 4;
    /** A requested device or runtime is not available (e.g. {@code --device cuda} without CUDA). */
    public static final int UNAVAILABLE = 5;
    /**
     * The machine cannot give the run what it needs: memory (an {@code OutOfMemoryError}), disk space, write access
     * to the destination (permission denied, read-only file system), or the destination itself (another run is
     * writing it). Nothing is left behind.
     */
    public static final int RESOURCE = 6;
}
