package scion.cli;

import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Font;
import java.awt.FontMetrics;
import java.awt.Graphics2D;
import java.awt.RenderingHints;
import java.awt.geom.AffineTransform;
import java.awt.geom.Path2D;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.List;
import java.util.Locale;
import javax.imageio.ImageIO;

/**
 * PNG figures for reports, drawn with Java2D (headless, no dependency): a heatmap of a matrix (layer-similarity
 * tables) and line charts (singular-value spectra). Both write to a temporary file beside the destination and rename
 * it, so a failed plot leaves nothing behind. Deterministic: the same data gives the same bytes.
 */
final class Plots {
    private Plots() {}

    static {
        System.setProperty("java.awt.headless", "true");
    }

    private static final Font FONT = new Font(Font.SANS_SERIF, Font.PLAIN, 12);
    private static final Font TITLE = new Font(Font.SANS_SERIF, Font.BOLD, 14);

    /** One line of a chart: {@code y[i]} at {@code x[i]}; NaN points are skipped. */
    record Series(String label, double[] x, double[] y) {
        Series {
            if (x.length != y.length) {
                throw new IllegalArgumentException(label + ": " + x.length + " x values but " + y.length + " y values");
            }
        }

        /** {@code y[i]} at {@code x = i + 1} (a rank axis). */
        static Series ofRanks(String label, double[] y) {
            double[] x = new double[y.length];
            for (int i = 0; i < x.length; i++) {
                x[i] = i + 1;
            }
            return new Series(label, x, y);
        }
    }

    /**
     * A heatmap of {@code values[row][column]}: NaN cells are left blank (grey); colours run from the smallest value
     * (dark blue) to the largest (yellow), with a colour bar; every cell is labelled with its value when the grid is
     * small enough to read.
     *
     * @param rowLabels one label per row (drawn at the left, top to bottom)
     * @param columnLabels one label per column (drawn below)
     */
    static void heatmap(
            Path png,
            String title,
            double[][] values,
            List<String> rowLabels,
            List<String> columnLabels,
            String rowAxis,
            String columnAxis) {
        int rows = values.length;
        int cols = rows == 0 ? 0 : values[0].length;
        double min = Double.POSITIVE_INFINITY;
        double max = Double.NEGATIVE_INFINITY;
        for (double[] r : values) {
            for (double v : r) {
                if (!Double.isNaN(v)) {
                    min = Math.min(min, v);
                    max = Math.max(max, v);
                }
            }
        }
        if (min > max) {
            min = 0;
            max = 1;
        }
        int cell = Math.max(18, Math.min(56, 720 / Math.max(1, Math.max(rows, cols))));
        int left = 90;
        int top = 50;
        int width = left + cols * cell + 120;
        int height = top + rows * cell + 70;
        BufferedImage img = new BufferedImage(width, height, BufferedImage.TYPE_INT_RGB);
        Graphics2D g = canvas(img);
        g.setFont(TITLE);
        g.drawString(title, left, 25);
        g.setFont(FONT);
        FontMetrics fm = g.getFontMetrics();
        boolean labelCells = cell >= 34;
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < cols; c++) {
                double v = values[r][c];
                int x = left + c * cell;
                int y = top + r * cell;
                g.setColor(Double.isNaN(v) ? new Color(235, 235, 235) : colour((v - min) / (max - min + 1e-300)));
                g.fillRect(x, y, cell, cell);
                if (labelCells && !Double.isNaN(v)) {
                    String s = String.format(Locale.ROOT, cell >= 48 ? "%.3f" : "%.2f", v);
                    g.setColor((v - min) / (max - min + 1e-300) > 0.6 ? Color.BLACK : Color.WHITE);
                    g.drawString(s, x + (cell - fm.stringWidth(s)) / 2, y + (cell + fm.getAscent()) / 2 - 2);
                }
            }
        }
        g.setColor(Color.BLACK);
        int step = Math.max(1, (fm.getHeight() + 2) / cell + 1);
        for (int r = 0; r < rows && r < rowLabels.size(); r += step) {
            String s = rowLabels.get(r);
            g.drawString(s, left - 6 - fm.stringWidth(s), top + r * cell + (cell + fm.getAscent()) / 2 - 2);
        }
        for (int c = 0; c < cols && c < columnLabels.size(); c += step) {
            String s = columnLabels.get(c);
            g.drawString(s, left + c * cell + (cell - fm.stringWidth(s)) / 2, top + rows * cell + fm.getAscent() + 4);
        }
        g.drawString(columnAxis, left + (cols * cell - fm.stringWidth(columnAxis)) / 2, top + rows * cell + 40);
        verticalText(g, rowAxis, 18, top + (rows * cell + fm.stringWidth(rowAxis)) / 2);
        int barX = left + cols * cell + 30;
        int barH = Math.max(rows * cell, 100);
        for (int i = 0; i < barH; i++) {
            g.setColor(colour(1 - (double) i / (barH - 1)));
            g.fillRect(barX, top + i, 18, 1);
        }
        g.setColor(Color.BLACK);
        g.drawRect(barX, top, 18, barH);
        g.drawString(number(max), barX + 24, top + fm.getAscent());
        g.drawString(number(min), barX + 24, top + barH);
        g.dispose();
        write(img, png);
    }

    /**
     * A line chart of several series against a shared x axis, with a legend; {@code logY} draws the y axis on a
     * log10 scale (non-positive values are skipped there).
     */
    static void lines(Path png, String title, List<Series> series, String xAxis, String yAxis, boolean logY) {
        int width = 900;
        int height = 560;
        int left = 80;
        int right = 200;
        int top = 45;
        int bottom = 60;
        double xMin = Double.POSITIVE_INFINITY;
        double xMax = Double.NEGATIVE_INFINITY;
        double yMin = Double.POSITIVE_INFINITY;
        double yMax = Double.NEGATIVE_INFINITY;
        for (Series s : series) {
            for (int i = 0; i < s.x().length; i++) {
                double y = plotted(s.y()[i], logY);
                if (!Double.isNaN(y) && !Double.isNaN(s.x()[i])) {
                    xMin = Math.min(xMin, s.x()[i]);
                    xMax = Math.max(xMax, s.x()[i]);
                    yMin = Math.min(yMin, y);
                    yMax = Math.max(yMax, y);
                }
            }
        }
        if (xMin > xMax) {
            xMin = 0;
            xMax = 1;
            yMin = 0;
            yMax = 1;
        }
        if (xMax == xMin) {
            xMax = xMin + 1;
        }
        if (yMax == yMin) {
            yMax = yMin + 1;
        }
        int pw = width - left - right;
        int ph = height - top - bottom;
        BufferedImage img = new BufferedImage(width, height, BufferedImage.TYPE_INT_RGB);
        Graphics2D g = canvas(img);
        g.setFont(TITLE);
        g.drawString(title, left, 25);
        g.setFont(FONT);
        FontMetrics fm = g.getFontMetrics();
        g.setColor(new Color(225, 225, 225));
        for (int i = 0; i <= 5; i++) {
            int y = top + ph - i * ph / 5;
            g.drawLine(left, y, left + pw, y);
        }
        g.setColor(Color.BLACK);
        g.drawRect(left, top, pw, ph);
        for (int i = 0; i <= 5; i++) {
            double yv = yMin + i * (yMax - yMin) / 5;
            String s = logY ? "1e" + String.format(Locale.ROOT, "%.1f", yv) : number(yv);
            int y = top + ph - i * ph / 5;
            g.drawString(s, left - 6 - fm.stringWidth(s), y + fm.getAscent() / 2);
            double xv = xMin + i * (xMax - xMin) / 5;
            String xs = number(xv);
            int x = left + i * pw / 5;
            g.drawString(xs, x - fm.stringWidth(xs) / 2, top + ph + fm.getAscent() + 4);
        }
        g.drawString(xAxis, left + (pw - fm.stringWidth(xAxis)) / 2, height - 14);
        String yl = logY ? yAxis + " (log scale)" : yAxis;
        verticalText(g, yl, 18, top + (ph + fm.stringWidth(yl)) / 2);
        g.setStroke(new BasicStroke(1.6f));
        for (int k = 0; k < series.size(); k++) {
            Series s = series.get(k);
            g.setColor(palette(k, series.size()));
            Path2D.Double path = new Path2D.Double();
            boolean pen = false;
            for (int i = 0; i < s.x().length; i++) {
                double y = plotted(s.y()[i], logY);
                if (Double.isNaN(y) || Double.isNaN(s.x()[i])) {
                    pen = false;
                    continue;
                }
                double px = left + (s.x()[i] - xMin) / (xMax - xMin) * pw;
                double py = top + ph - (y - yMin) / (yMax - yMin) * ph;
                if (pen) {
                    path.lineTo(px, py);
                } else {
                    path.moveTo(px, py);
                    pen = true;
                }
            }
            g.draw(path);
            int ly = top + 10 + k * (fm.getHeight() + 2);
            if (ly < top + ph) {
                g.fillRect(left + pw + 12, ly - 4, 14, 3);
                g.setColor(Color.BLACK);
                g.drawString(s.label(), left + pw + 30, ly + fm.getAscent() / 2 - 2);
            }
        }
        g.dispose();
        write(img, png);
    }

    private static double plotted(double y, boolean log) {
        if (!log) {
            return y;
        }
        return y > 0 ? Math.log10(y) : Double.NaN;
    }

    private static Graphics2D canvas(BufferedImage img) {
        Graphics2D g = img.createGraphics();
        g.setRenderingHint(RenderingHints.KEY_ANTIALIASING, RenderingHints.VALUE_ANTIALIAS_ON);
        g.setRenderingHint(RenderingHints.KEY_TEXT_ANTIALIASING, RenderingHints.VALUE_TEXT_ANTIALIAS_ON);
        g.setColor(Color.WHITE);
        g.fillRect(0, 0, img.getWidth(), img.getHeight());
        g.setColor(Color.BLACK);
        return g;
    }

    private static void verticalText(Graphics2D g, String s, int x, int y) {
        AffineTransform saved = g.getTransform();
        g.rotate(-Math.PI / 2, x, y);
        g.drawString(s, x, y);
        g.setTransform(saved);
    }

    private static String number(double v) {
        double a = Math.abs(v);
        if (a != 0 && (a < 1e-3 || a >= 1e5)) {
            return String.format(Locale.ROOT, "%.2e", v);
        }
        return String.format(Locale.ROOT, a >= 100 ? "%.0f" : "%.3g", v);
    }

    /** A blue-green-yellow ramp (viridis-like), {@code t} in [0, 1]. */
    private static Color colour(double t) {
        double[][] stops = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
        double p = Math.max(0, Math.min(1, t)) * (stops.length - 1);
        int i = Math.min(stops.length - 2, (int) p);
        double f = p - i;
        return new Color(
                (int) Math.round(stops[i][0] + f * (stops[i + 1][0] - stops[i][0])),
                (int) Math.round(stops[i][1] + f * (stops[i + 1][1] - stops[i][1])),
                (int) Math.round(stops[i][2] + f * (stops[i + 1][2] - stops[i][2])));
    }

    private static Color palette(int k, int n) {
        Color[] base = {
            new Color(31, 119, 180), new Color(255, 127, 14), new Color(44, 160, 44), new Color(214, 39, 40),
            new Color(148, 103, 189), new Color(140, 86, 75), new Color(227, 119, 194), new Color(127, 127, 127)
        };
        return n <= base.length ? base[k] : colour((double) k / Math.max(1, n - 1));
    }

    private static void write(BufferedImage img, Path png) {
        Path abs = png.toAbsolutePath();
        try {
            Files.createDirectories(abs.getParent());
            Path tmp = Files.createTempFile(abs.getParent(), "." + abs.getFileName(), ".tmp");
            try {
                if (!ImageIO.write(img, "png", tmp.toFile())) {
                    throw new IllegalStateException("no PNG writer in this JDK");
                }
                Files.move(tmp, abs, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
            } finally {
                Files.deleteIfExists(tmp);
            }
        } catch (IOException e) {
            throw new UncheckedIOException(png + ": cannot write the plot", e);
        }
    }
}
