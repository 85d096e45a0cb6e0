package scion.io.runtime.calibration;

/**
 * One batch's activations at one tap, as a matrix of token rows: padding removed, one row per counted token.
 *
 * <p>{@code data} is row-major {@code [rows, width]}; row {@code r} is token {@link #position(int) position(r)} of
 * sequence {@link #sequence(int) sequence(r)} of the batch, rows in (sequence, position) order. Which tokens are rows
 * depends on the request: every real token, or the last real token of each sequence. Valid only inside the consumer
 * call that received its batch: afterwards every accessor throws {@link IllegalStateException}, so a consumer cannot
 * keep activations by accident (copy what you need).
 */
public final class Rows {
    private final Calibration.Batch batch;
    private final String name;
    private final float[] data; // [rows, width]
    private final int rows;
    private final int width;
    private final int[] sequence; // [rows]
    private final int[] position; // [rows]

    Rows(Calibration.Batch batch, String name, float[] data, int rows, int width, int[] sequence, int[] position) {
        this.batch = batch;
        this.name = name;
        this.data = data;
        this.rows = rows;
        this.width = width;
        this.sequence = sequence;
        this.position = position;
    }

    /** The tap: {@code residual.<i>} or the linear weight's Hugging Face name. */
    public String name() {
        return name;
    }

    public int rows() {
        batch.checkOpen();
        return rows;
    }

    /** Features per row: the hidden size for the residual stream, the input size for a linear input. */
    public int width() {
        batch.checkOpen();
        return width;
    }

    /** The values, {@code [rows, width]} row-major; not a copy: do not modify. */
    public float[] data() {
        batch.checkOpen();
        return data;
    }

    public float get(int row, int col) {
        batch.checkOpen();
        return data[row * width + col];
    }

    /** The batch-local sequence index of a row. */
    public int sequence(int row) {
        batch.checkOpen();
        return sequence[row];
    }

    /** The token position of a row within its sequence. */
    public int position(int row) {
        batch.checkOpen();
        return position[row];
    }
}
