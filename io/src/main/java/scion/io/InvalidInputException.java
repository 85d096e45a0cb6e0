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

    /**
     * Builds the standard message {@code <where>: <what>; expected <expected>, found <found>}, on one line: control
     * characters quoted from the input are escaped.
     */
    public static InvalidInputException of(String where, String what, Object expected, Object found) {
        return new InvalidInputException(oneLine(where + ": " + what + "; expected " + expected + ", found " + found));
    }

    /**
     * The message kept to one line: names and values quoted from a file (a tensor name, a shard path, a YAML scalar)
     * may hold line breaks or other control characters, which are written as Java escapes (a backslash and n,
     * a backslash, u and four hex digits).
     */
    static String oneLine(String message) {
        if (message == null || message.chars().noneMatch(Character::isISOControl)) {
            return message;
        }
        StringBuilder b = new StringBuilder(message.length() + 16);
        for (int i = 0; i < message.length(); i++) {
            char c = message.charAt(i);
            switch (c) {
                case '\n' -> b.append("\\n");
                case '\r' -> b.append("\\r");
                case '\t' -> b.append("\\t");
                default -> {
                    if (Character.isISOControl(c)) {
                        b.append(String.format("\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
                }
            }
        }
        return b.toString();
    }
}
