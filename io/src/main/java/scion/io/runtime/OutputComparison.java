package scion.io.runtime;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.apache.commons.math3.stat.correlation.SpearmansCorrelation;
import org.apache.commons.math3.stat.descriptive.rank.Percentile;
import scion.io.InvalidInputException;

/**
 * Compares one output of a reference and a candidate model over a stream of batches, without keeping the batches.
 *
 * <p>Per copy it tracks whether every value is bit-identical, the max and mean absolute difference {@code |Δ| =
 * |cand - ref|}, the relative error {@code max|Δ| / max|ref|} (the largest difference measured against the largest
 * reference magnitude of that output; 0 when both are 0), and the cosine similarity of the flattened outputs. A
 * uniform sample of |Δ| (up to {@value #SAMPLE} values, seeded) gives its percentiles, and a sample of value pairs the
 * Spearman rank correlation (both through Commons Math). A NaN on one side only counts as an infinite difference.
 *
 * <p>Copies: when the candidate's last axis is {@code n} times the reference's (a model grown {@code n}× wide, other
 * axes equal), each of the {@code n} slices is compared with the reference. Two layouts are recognised, decided on the
 * first batch by the smaller squared difference: {@code blocks} ({@code [x; x; …]}, HyperCloning's) and {@code
 * interleaved} ({@code x₀x₀…x₁x₁…}).
 */
public final class OutputComparison {
    static final int SAMPLE = 200_000;
    static final int PAIRS = 50_000;

    /**
     * The comparison of one copy.
     *
     * @param copy 0-based copy index (0 when the shapes are equal)
     * @param identical every value bit-identical
     * @param maxAbsDiff {@code max |Δ|}
     * @param meanAbsDiff mean |Δ|
     * @param maxAbsRef {@code max |ref|}
     * @param relativeError {@code max|Δ| / max|ref|}
     * @param cosine cosine similarity of the flattened outputs
     */
    public record CopyResult(
            int copy,
            boolean identical,
            double maxAbsDiff,
            double meanAbsDiff,
            double maxAbsRef,
            double relativeError,
            double cosine) {}

    /**
     * The comparison of one output over all batches.
     *
     * @param name output name
     * @param refShape reference shape of the first batch
     * @param candShape candidate shape of the first batch
     * @param copies 1, or the width factor of a grown candidate
     * @param layout {@code same}, {@code blocks} or {@code interleaved}
     * @param values values compared per copy
     * @param perCopy one entry per copy
     * @param absDiffP50 median |Δ| (sampled)
     * @param absDiffP90 90th percentile of |Δ|
     * @param absDiffP99 99th percentile of |Δ|
     * @param spearman Spearman rank correlation of reference and candidate values (sampled, finite values)
     */
    public record Result(
            String name,
            long[] refShape,
            long[] candShape,
            int copies,
            String layout,
            long values,
            List<CopyResult> perCopy,
            double absDiffP50,
            double absDiffP90,
            double absDiffP99,
            double spearman) {
        public Result {
            perCopy = List.copyOf(perCopy);
        }

        /** Every copy bit-identical. */
        public boolean identical() {
            return perCopy.stream().allMatch(CopyResult::identical);
        }

        /** The copy with the largest relative error. */
        public CopyResult worst() {
            CopyResult w = perCopy.get(0);
            for (CopyResult c : perCopy) {
                if (!(c.relativeError() <= w.relativeError())) {
                    w = c;
                }
            }
            return w;
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof Result r
                    && r.name.equals(name)
                    && Arrays.equals(r.refShape, refShape)
                    && Arrays.equals(r.candShape, candShape)
                    && r.perCopy.equals(perCopy);
        }

        @Override
        public int hashCode() {
            return name.hashCode() * 31 + perCopy.hashCode();
        }

        @Override
        public String toString() {
            return name + " " + perCopy;
        }
    }

    private final String name;
    private long[] refShape;
    private long[] candShape;
    private int copies;
    private boolean interleaved;
    private boolean[] identical;
    private double[] maxAbs;
    private double[] sumAbs;
    private double[] maxRef;
    private double[] dot;
    private double[] nr;
    private double[] nc;
    private long values;
    private final Reservoir absDiff = new Reservoir(SAMPLE, 1, 1);
    private final Reservoir pairs = new Reservoir(PAIRS, 2, 2);

    public OutputComparison(String name) {
        this.name = name;
    }

    /** The copies factor and layout once the first batch is in (1 and false before). */
    public int copies() {
        return copies == 0 ? 1 : copies;
    }

    /** Whether the copies are interleaved rather than blocks (decided on the first batch). */
    public boolean interleaved() {
        return interleaved;
    }

    /** How many copies a candidate shape holds of a reference shape, or 0 when it is neither equal nor a multiple. */
    public static int copiesOf(long[] ref, long[] cand) {
        if (ref.length != cand.length || ref.length == 0) {
            return 0;
        }
        for (int i = 0; i < ref.length - 1; i++) {
            if (ref[i] != cand[i]) {
                return 0;
            }
        }
        long r = ref[ref.length - 1];
        long c = cand[cand.length - 1];
        if (r <= 0 || c % r != 0) {
            return 0;
        }
        return Math.toIntExact(c / r);
    }

    /** Adds one batch: the two outputs of the same inputs. */
    public void accept(RuntimeModel.Output ref, RuntimeModel.Output cand) {
        int n = copiesOf(ref.shape(), cand.shape());
        if (n == 0) {
            throw InvalidInputException.of(
                    "CAND output '" + name + "'",
                    "shape does not match the reference",
                    "REF's " + Arrays.toString(ref.shape()) + " or an integer multiple of it in the last axis",
                    Arrays.toString(cand.shape()));
        }
        if (copies == 0) {
            copies = n;
            refShape = ref.shape().clone();
            candShape = cand.shape().clone();
            identical = new boolean[n];
            Arrays.fill(identical, true);
            maxAbs = new double[n];
            sumAbs = new double[n];
            maxRef = new double[n];
            dot = new double[n];
            nr = new double[n];
            nc = new double[n];
            interleaved = n > 1 && squaredDiff(ref, cand, n, true) < squaredDiff(ref, cand, n, false);
        } else if (n != copies) {
            throw InvalidInputException.of(
                    "CAND output '" + name + "'", "width factor changed between batches", copies + "×", n + "×");
        }
        float[] a = ref.data();
        float[] b = cand.data();
        int w = ref.last();
        int rows = a.length / w;
        for (int k = 0; k < n; k++) {
            for (int r = 0; r < rows; r++) {
                for (int j = 0; j < w; j++) {
                    float x = a[r * w + j];
                    float y = b[index(r, j, k, w, n)];
                    add(k, x, y);
                }
            }
        }
        values += (long) rows * w;
    }

    private int index(int r, int j, int k, int w, int n) {
        return interleaved ? r * w * n + j * n + k : r * w * n + k * w + j;
    }

    private static double squaredDiff(RuntimeModel.Output ref, RuntimeModel.Output cand, int n, boolean inter) {
        float[] a = ref.data();
        float[] b = cand.data();
        int w = ref.last();
        int rows = a.length / w;
        double s = 0;
        for (int k = 0; k < n; k++) {
            for (int r = 0; r < rows; r++) {
                for (int j = 0; j < w; j++) {
                    int i = inter ? r * w * n + j * n + k : r * w * n + k * w + j;
                    double d = (double) b[i] - a[r * w + j];
                    s += Double.isNaN(d) ? Double.MAX_VALUE / 4 : Math.min(d * d, Double.MAX_VALUE / 4);
                }
            }
        }
        return s;
    }

    private void add(int k, float x, float y) {
        if (Float.floatToRawIntBits(x) != Float.floatToRawIntBits(y)) {
            identical[k] = false;
        }
        double d;
        if (Float.isNaN(x) || Float.isNaN(y)) {
            d = Float.isNaN(x) && Float.isNaN(y) ? 0 : Double.POSITIVE_INFINITY;
        } else {
            d = Math.abs((double) y - x);
        }
        maxAbs[k] = Math.max(maxAbs[k], d);
        sumAbs[k] += d;
        if (!Float.isNaN(x)) {
            maxRef[k] = Math.max(maxRef[k], Math.abs(x));
        }
        if (Float.isFinite(x) && Float.isFinite(y)) {
            dot[k] += (double) x * y;
            nr[k] += (double) x * x;
            nc[k] += (double) y * y;
            pairs.add(x, y);
        }
        absDiff.add(d);
    }

    /** The result so far (after at least one batch). */
    public Result result() {
        if (copies == 0) {
            throw new IllegalStateException("no batch compared for output " + name);
        }
        List<CopyResult> per = new ArrayList<>();
        for (int k = 0; k < copies; k++) {
            double rel = maxAbs[k] == 0 ? 0 : maxRef[k] == 0 ? Double.POSITIVE_INFINITY : maxAbs[k] / maxRef[k];
            double cos = nr[k] == 0 || nc[k] == 0 ? (nr[k] == nc[k] ? 1 : 0) : dot[k] / Math.sqrt(nr[k] * nc[k]);
            per.add(new CopyResult(k, identical[k], maxAbs[k], sumAbs[k] / values, maxRef[k], rel, cos));
        }
        double[] d = absDiff.column(0);
        Percentile p = new Percentile();
        p.setData(d);
        double spearman = Double.NaN;
        if (pairs.size() >= 2) {
            spearman = new SpearmansCorrelation().correlation(pairs.column(0), pairs.column(1));
        }
        return new Result(
                name,
                refShape,
                candShape,
                copies,
                copies == 1 ? "same" : interleaved ? "interleaved" : "blocks",
                values,
                per,
                p.evaluate(50),
                p.evaluate(90),
                p.evaluate(99),
                spearman);
    }
}
