package scion.io;

/**
 * A user's mistake: a bad file, a bad parameter or an unsupported architecture.
 *
 * <p>The message reads {@code <where>: <what>; expected <x>, found <y>[; hint]} so that one line tells the user which
 * file or tensor is wrong, what was expected and what was found. Commands map it to exit code 2 and print only the
 * message (no stack trace unless {@code --verbose}).
 */
public class InvalidInputException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public InvalidInputException(String message) {
        super(message);
    }

    public InvalidInputException(String message, Throwable cause) {
        super(message, cause);
    }

    /** Builds the standard message {@code <where>: <what>; expected <expected>, found <found>}. */
    public static InvalidInputException of(String where, String what, Object expected, Object found) {
        return new InvalidInputException(where + ": " + what + "; expected " + expected + ", found " + found);
    }
}
