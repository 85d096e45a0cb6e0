package scion.cli;

import java.io.PrintStream;
import java.util.Locale;

/**
 * A one-line progress bar on stderr for long reads and writes: {@code [=====>    ]  45%  1.2 / 2.6 GB  310 MB/s}.
 *
 * <p>Drawn only when stderr is a terminal (or when forced), at most ten times a second, so piped and {@code --json}
 * output stays clean.
 */
public final class Progress implements AutoCloseable {
    private final String label;
    private final long total;
    private final PrintStream out;
    private final boolean enabled;
    private final long start = System.nanoTime();
    private long done;
    private long lastDraw;

    public Progress(String label, long total, boolean enabled) {
        this.label = label;
        this.total = Math.max(1, total);
        this.out = System.err;
        this.enabled = enabled;
    }

    /** A bar that draws only when a terminal is attached. */
    public static Progress forTerminal(String label, long total) {
        return new Progress(label, total, System.console() != null);
    }

    /** Adds {@code n} units of work done. */
    public synchronized void advance(long n) {
        done += n;
        long now = System.nanoTime();
        if (enabled && (now - lastDraw > 100_000_000L || done >= total)) {
            lastDraw = now;
            draw(now);
        }
    }

    private void draw(long now) {
        double frac = Math.min(1.0, done / (double) total);
        int width = 30;
        int filled = (int) (frac * width);
        StringBuilder bar = new StringBuilder();
        for (int i = 0; i < width; i++) {
            bar.append(i < filled ? '=' : i == filled ? '>' : ' ');
        }
        double secs = Math.max(1e-9, (now - start) / 1e9);
        out.printf(
                Locale.ROOT,
                "\r%s [%s] %3d%%  %s / %s  %s/s ",
                label,
                bar,
                (int) (frac * 100),
                bytes(done),
                bytes(total),
                bytes((long) (done / secs)));
        out.flush();
    }

    /** Human-readable byte size: {@code 1.2 GB}. */
    public static String bytes(long n) {
        if (n < 1000) {
            return n + " B";
        }
        String[] units = {"kB", "MB", "GB", "TB"};
        double v = n;
        int u = -1;
        while (v >= 1000 && u < units.length - 1) {
            v /= 1000;
            u++;
        }
        return String.format(Locale.ROOT, "%.1f %s", v, units[u]);
    }

    @Override
    public void close() {
        if (enabled && lastDraw != 0) {
            out.print("\n");
            out.flush();
        }
    }
}
