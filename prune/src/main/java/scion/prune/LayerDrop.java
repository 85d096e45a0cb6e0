package scion.prune;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeSet;
import scion.io.InvalidInputException;
import scion.io.arch.LayerRemap;
import scion.io.arch.WeightGraph;
import scion.io.config.ModelConfig;
import scion.io.runtime.calibration.Calibration;
import scion.io.runtime.calibration.ResidualStats;
import scion.io.tensor.Tensor;

/**
 * Layer pruning: a checkpoint with some transformer blocks removed and the rest renumbered.
 *
 * <p>Which blocks go is either given ({@code --drop 3,4}) or chosen by a {@link Metric} from the residual stream of
 * calibration text ({@link ResidualStats}; x^l is the stream entering block l, x^L the stream after the last block,
 * before the final norm):
 *
 * <ul>
 *   <li>{@link Metric#ANGULAR} — Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper Layers", eq. 7:
 *       d(l, n) = mean arccos(cos(x^l, x^(l+n))) / π, at the last token of each calibration sequence by default; the
 *       contiguous block {@code l..l+n-1} with the smallest d(l, n) is removed (ties: the earliest).
 *   <li>{@link Metric#BLOCK_INFLUENCE} — Men et al. 2024, "ShortGPT", eq. 1: BI_l = 1 − mean cos(x^l, x^(l+1)) over
 *       every token; the n blocks with the lowest BI are removed, not necessarily contiguous (ties: the earliest).
 *   <li>{@link Metric#LAST} — the baseline both papers compare against: the n blocks right before the final block
 *       ({@code L-1-n .. L-2}); needs no calibration.
 * </ul>
 *
 * <p>The result is a real smaller checkpoint (never zeroed weights left in place): {@link #tensors} lists the kept
 * blocks renumbered {@code 0..L-n-1} as lazy zero-copy views through {@link LayerRemap}, {@link #config} rewrites the
 * layer count and per-layer config lists. Not function-preserving: the removed blocks' contributions to the residual
 * stream are gone, and the papers' point is that for the right blocks this costs little (they heal the rest with a
 * short fine-tune, which this operator does not do). ONNX graphs go through {@code OnnxLayerDrop}.
 */
public final class LayerDrop {
    private LayerDrop() {}

    /** How the blocks to remove are chosen. */
    public enum Metric {
        /** The contiguous block with the smallest angular distance between its input and output (Gromov et al.). */
        ANGULAR("angular"),
        /** The blocks with the lowest block influence, 1 − cos(input, output) (ShortGPT). */
        BLOCK_INFLUENCE("block-influence"),
        /** The blocks right before the final one (baseline). */
        LAST("last");

        private final String id;

        Metric(String id) {
            this.id = id;
        }

        /** The command-line name ({@code angular}, {@code block-influence}, {@code last}). */
        public String id() {
            return id;
        }

        /** Whether the metric needs calibration activations. */
        public boolean calibrated() {
            return this != LAST;
        }

        /**
         * The residual rows the metric averages over by default: the last token of each sequence for {@code angular}
         * (the paper's choice for causal LMs), every token for {@code block-influence} (ShortGPT's).
         */
        public Calibration.Positions defaultPositions() {
            return this == ANGULAR ? Calibration.Positions.LAST_TOKEN : Calibration.Positions.ALL_TOKENS;
        }

        /**
         * The default rows for a model: {@link #defaultPositions()} for a causal LM; every token for an encoder, whose
         * last token is always the {@code [SEP]} marker rather than a summary of the sequence (bidirectional attention
         * gives no token that special role, so the paper's last-token choice does not carry over).
         */
        public Calibration.Positions defaultPositions(boolean causalLm) {
            return causalLm ? defaultPositions() : Calibration.Positions.ALL_TOKENS;
        }

        /** The calibration request for this metric: the residual stream at every position 0..L. */
        public Calibration.Request request(Calibration.Positions positions) {
            return Calibration.Request.of(positions).withResidualStream();
        }

        /** Parses {@code angular}, {@code block-influence} or {@code last} (the {@code --metric} values). */
        public static Metric parse(String s) {
            String v = s == null ? "" : s.trim().toLowerCase(Locale.ROOT);
            for (Metric m : values()) {
                if (m.id.equals(v) || m.name().toLowerCase(Locale.ROOT).equals(v)) {
                    return m;
                }
            }
            throw InvalidInputException.of(
                    "--metric", "unknown metric", "angular, block-influence or last", "'" + s + "'");
        }
    }

    /**
     * The blocks {@code metric} removes: {@code n} block indices in increasing order.
     *
     * @param stats residual statistics of the model on calibration text (for {@link Metric#LAST} only its layer count
     *     is used)
     * @throws InvalidInputException when {@code n} is not in {@code 1..L-1} (at least one block must stay)
     */
    public static int[] choose(Metric metric, int n, ResidualStats stats) {
        int layers = stats.layers();
        checkCount(n, layers);
        if (metric == Metric.LAST) {
            return last(layers, n);
        }
        if (stats.rows() == 0) {
            throw new IllegalArgumentException("no calibration rows in the residual statistics");
        }
        if (metric == Metric.ANGULAR) {
            int l = stats.mostRedundantBlock(n);
            int[] out = new int[n];
            for (int i = 0; i < n; i++) {
                out[i] = l + i;
            }
            return out;
        }
        return lowest(stats.blockInfluence(), n);
    }

    /** The {@code n} blocks right before the final block of {@code layers}: {@code L-1-n .. L-2}. */
    public static int[] last(int layers, int n) {
        checkCount(n, layers);
        int[] out = new int[n];
        for (int i = 0; i < n; i++) {
            out[i] = layers - 1 - n + i;
        }
        return out;
    }

    /** The indices of the {@code n} smallest values, in increasing index order (ties: the earlier index). */
    static int[] lowest(double[] scores, int n) {
        Integer[] idx = new Integer[scores.length];
        for (int i = 0; i < idx.length; i++) {
            idx[i] = i;
        }
        Arrays.sort(idx, (a, b) -> {
            int c = Double.compare(scores[a], scores[b]);
            return c != 0 ? c : Integer.compare(a, b);
        });
        int[] out = new int[n];
        for (int i = 0; i < n; i++) {
            out[i] = idx[i];
        }
        Arrays.sort(out);
        return out;
    }

    private static void checkCount(int n, int layers) {
        if (n < 1 || n >= layers) {
            throw InvalidInputException.of(
                    "--remove",
                    "number of blocks to remove out of range",
                    "1.." + (layers - 1) + " (the model has " + layers + " blocks; at least one must stay)",
                    n);
        }
    }

    /**
     * Parses a {@code --drop} list such as {@code 3,4} and checks it against a model of {@code layers} blocks: every
     * index in {@code 0..L-1}, none repeated, not every block. Every problem is reported in one exception.
     */
    public static int[] parseDrop(String list, int layers) {
        List<String> problems = new ArrayList<>();
        List<Integer> out = new ArrayList<>();
        if (list == null || list.isBlank()) {
            throw InvalidInputException.of("--drop", "empty list", "block indices such as 3,4", "''");
        }
        for (String p : list.split(",", -1)) {
            try {
                out.add(Integer.parseInt(p.trim()));
            } catch (NumberFormatException e) {
                throw InvalidInputException.of(
                        "--drop",
                        "not a list of block indices",
                        "comma-separated integers such as 3,4",
                        "'" + list + "'");
            }
        }
        int[] drop = out.stream().mapToInt(Integer::intValue).toArray();
        problems.addAll(dropProblems(drop, layers));
        if (!problems.isEmpty()) {
            throw combined(problems);
        }
        Arrays.sort(drop);
        return drop;
    }

    private static List<String> dropProblems(int[] drop, int layers) {
        List<String> problems = new ArrayList<>();
        TreeSet<Integer> seen = new TreeSet<>();
        for (int i : drop) {
            if (i < 0 || i >= layers) {
                problems.add(InvalidInputException.of("--drop", "block index out of range", "0.." + (layers - 1), i)
                        .getMessage());
            } else if (!seen.add(i)) {
                problems.add(InvalidInputException.of("--drop", "block listed twice", "each block once", i)
                        .getMessage());
            }
        }
        if (drop.length == 0 || seen.size() >= layers) {
            problems.add(InvalidInputException.of(
                            "--drop",
                            "would remove every block",
                            "at most " + (layers - 1) + " of the " + layers + " blocks",
                            drop.length == 0 ? "no block" : seen.size() + " blocks")
                    .getMessage());
        }
        return problems;
    }

    private static InvalidInputException combined(List<String> problems) {
        String rest = problems.size() > 1 ? "\n  " + String.join("\n  ", problems.subList(1, problems.size())) : "";
        return new InvalidInputException(
                (problems.size() > 1 ? problems.size() + " problems; " : "") + problems.get(0) + rest);
    }

    /**
     * The blocks that stay when {@code drop} goes, in order: the source index of each block of the result (the
     * {@code sources} of {@link LayerRemap}).
     *
     * @throws InvalidInputException when {@code drop} has an index out of range, a repeat, or every block
     */
    public static int[] keep(int layers, int[] drop) {
        List<String> problems = dropProblems(drop, layers);
        if (!problems.isEmpty()) {
            throw combined(problems);
        }
        boolean[] gone = new boolean[layers];
        for (int i : drop) {
            gone[i] = true;
        }
        int[] keep = new int[layers - drop.length];
        int k = 0;
        for (int l = 0; l < layers; l++) {
            if (!gone[l]) {
                keep[k++] = l;
            }
        }
        return keep;
    }

    /**
     * A checked removal.
     *
     * @param family the architecture family
     * @param sourceLayers blocks of the source
     * @param dropped removed source blocks, increasing
     * @param kept the source block of each block of the result
     * @param metric how they were chosen, or null when given by the user
     */
    public record Plan(String family, int sourceLayers, int[] dropped, int[] kept, Metric metric) {
        public Plan {
            dropped = dropped.clone();
            kept = kept.clone();
        }

        @Override
        public int[] dropped() {
            return dropped.clone();
        }

        @Override
        public int[] kept() {
            return kept.clone();
        }

        /** Blocks of the result. */
        public int layers() {
            return kept.length;
        }

        /** The parameters as provenance entries. */
        public Map<String, String> parameters() {
            Map<String, String> m = new LinkedHashMap<>();
            m.put("dropped_layers", join(dropped));
            m.put("metric", metric == null ? "given" : metric.id());
            m.put("layers", sourceLayers + " -> " + kept.length);
            return m;
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof Plan p
                    && family.equals(p.family)
                    && sourceLayers == p.sourceLayers
                    && Arrays.equals(dropped, p.dropped)
                    && metric == p.metric;
        }

        @Override
        public int hashCode() {
            return family.hashCode() * 31 + Arrays.hashCode(dropped);
        }

        @Override
        public String toString() {
            return "LayerDrop.Plan[" + family + ", " + sourceLayers + " -> " + kept.length + " blocks, dropped "
                    + join(dropped) + "]";
        }
    }

    /** Checks that {@code drop} can be removed from {@code graph}'s model; every problem in one exception. */
    public static Plan plan(WeightGraph graph, int[] drop, Metric metric) {
        int layers = graph.dims().layers();
        int[] sorted = drop.clone();
        Arrays.sort(sorted);
        int[] keep = keep(layers, sorted);
        return new Plan(graph.architecture().family(), layers, sorted, keep, metric);
    }

    /** The result's tensors, lazily: globals, then the kept blocks renumbered (stored tensors renamed, zero-copy). */
    public static List<Tensor> tensors(Plan plan, WeightGraph graph) {
        return LayerRemap.tensors(graph, plan.kept());
    }

    /** The result's config: the layer count under the file's key and per-layer lists of the kept blocks. */
    public static ModelConfig config(Plan plan, ModelConfig cfg) {
        return LayerRemap.config(cfg, plan.family(), plan.kept());
    }

    /** {@code 3,4}: block indices joined by commas. */
    public static String join(int[] blocks) {
        StringBuilder b = new StringBuilder();
        for (int i : blocks) {
            b.append(b.length() > 0 ? "," : "").append(i);
        }
        return b.toString();
    }
}
