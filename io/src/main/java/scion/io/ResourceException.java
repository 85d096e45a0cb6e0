package scion.io;

/**
 * The machine cannot give a run what it needs: memory, disk space, write access to the destination, or the
 * destination itself (another run is writing it). Not the user's input and not a bug; the CLI maps it to exit code 6.
 */
public final class ResourceException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public ResourceException(String message) {
        super(message);
    }

    public ResourceException(String message, Throwable cause) {
        super(message, cause);
    }
}
