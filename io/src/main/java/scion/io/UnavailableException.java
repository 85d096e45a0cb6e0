package scion.io;

/** A requested device or runtime is not available on this machine; the CLI maps it to exit code 5. */
public final class UnavailableException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public UnavailableException(String message) {
        super(message);
    }
}
