package scion.prune;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import scion.io.InvalidInputException;
import scion.io.Json;
import scion.io.arch.Architecture;
import scion.io.arch.Axis;
import scion.io.arch.Dims;
import scion.io.arch.LayerRemap;
import scion.io.arch.Role;
import scion.io.arch.WeightGraph;
import scion.io.arch.WeightGraph.Weight;
import scion.io.config.ModelConfig;
import scion.io.config.ModelConfig.Field;
import scion.io.runtime.calibration.Calibration;
import scion.io.runtime.calibration.LinearInputStats;
import scion.io.runtime.calibration.ResidualStats;
import scion.io.tensor.Tensor;

/**
 * Weight subcloning: a smaller transformer initialised from a larger pretrained one (Samragh et al. 2023, "Weight
 * subcloning: direct initialization of transformers using larger pretrained ones"). The result has hidden size D',
 * L' blocks, FFN size F' and H' attention heads of the source's head_dim; every weight is a sub-matrix of the source's.
 *
 * <p>Neuron importance comes from calibration activations ({@link Importance}, one pass through ONNX Runtime):
 *
 * <ul>
 *   <li><b>residual stream</b>: one index set shared by every layer, as the paper requires (the residual connections
 *       tie every block's input and output axes together). Score of dimension j: {@code Σ_p mean|x^p_j| / mean_k
 *       mean|x^p_k|} over the stream positions p = 0..L (entering each block, and after the last before the final
 *       norm); each position is normalised so that no layer dominates by its scale. The D' highest are kept, in their
 *       source order, on every axis in the residual space: token/position/type embeddings, every norm, the input axis
 *       of q/k/v/gate/up/lm_head, the output axis of o/down and their biases;
 *   <li><b>FFN neurons</b>, per block: mean |activation| of the down projection's input (the neuron's output after
 *       its activation and gate); the F' highest are kept — rows of gate and up, columns of down, together;
 *   <li><b>attention heads</b>, per block, whole heads: mean |context| of the output projection's input summed over
 *       the head's head_dim columns. Grouped-query attention keeps its group size g = H / H_kv: the score of a
 *       key/value group is the sum of its g query heads, the H'/g best groups are kept with all their query heads
 *       (H' must be a multiple of g); multi-query attention (one key/value head) keeps it and the best H' query heads.
 * </ul>
 *
 * <p>Blocks are removed to reach L' by a {@link LayerDrop.Metric} (chosen by {@link LayerDrop#choose}), measured on the same calibration pass. The default is
 * {@link LayerDrop.Metric#BLOCK_INFLUENCE} (Men et al. 2024): the paper removes the blocks that change the residual stream
 * least; block influence 1 − cos(x^l, x^(l+1)) measures exactly that per block on this model's own text, and the L −
 * L' lowest need not be contiguous.
 *
 * <p><b>Rescaling</b> (the paper's weight scaling when the embedding dimension shrinks): every normalisation's scale
 * over the residual axis is multiplied by {@code s = √(D/D')} — {@code γ' = s·γ} (Gemma's {@code (1+γ)}: {@code γ' =
 * s·(1+γ) − 1}), LayerNorm shifts unchanged. Why: a norm divides by the RMS (or standard deviation) of its input
 * over its own width; the child's norm computes it over the D' kept dimensions S, {@code RMS_S(x) = r·RMS_D(x)}, so its
 * normalised outputs are 1/r of the parent's on S. The linear layer that reads them (q, k, v, gate, up, lm_head) then
 * sums D' terms instead of D; treating the terms as independent, its output variance keeps the energy share of S,
 * {@code Σ_S x² / Σ x² = r²·D'/D}. Together the output's standard deviation changes by {@code (1/r)·r·√(D'/D) =
 * √(D'/D)}, whatever r is: multiplying γ by {@code √(D/D')} restores the scale of every projection that reads a norm.
 * On the trained Rust-book llama (128 → 64) r is 1.06 on average (S holds 56 % of the energy, not nearly all), and the
 * rule still lowers held-out perplexity from 210 to 192; a sweep of the factor puts the optimum near 1.3 (189), with
 * 2.0 much worse (352): {@code test/bench/subclone_rescale_sweep.py}. It is applied at every norm (pre-LN inputs of
 * attention and MLP, the final norm, BERT's post-LN norms that produce the stream itself).
 *
 * <p>Shapes follow each weight's stored layout ({@code [out, in]} as PyTorch {@code Linear.weight}; {@code [in, out]}
 * for gpt2 Conv1D and ONNX MatMul initializers traced as transposed). Fused QKV projections are sliced per block
 * ({@code blocks}: q | k | v) or per head ({@code per_head}). Not preserved: the function (it is an initialisation for
 * training); Gemma's √hidden embedding multiplier becomes √D' (a note says so).
 */
public final class Subcloning {
    private Subcloning() {}

    /**
     * The target shape.
     *
     * @param hidden D', the residual width (1 ≤ D' ≤ D)
     * @param layers L' blocks (0: keep all)
     * @param ffn F' MLP neurons per block (0: F·D'/D rounded)
     * @param heads H' query heads (0: H·D'/D, which must be a whole number)
     * @param rescale multiply norm scales by √(D/D')
     * @param layerRule how blocks are removed when L' &lt; L
     */
    public record Params(int hidden, int layers, int ffn, int heads, boolean rescale, LayerDrop.Metric layerRule) {
        public Params {
            if (layerRule == null) {
                throw new IllegalArgumentException("layer rule is null");
            }
        }

        /** D' with everything else at its default (rescaled, block influence). */
        public static Params hidden(int hidden) {
            return new Params(hidden, 0, 0, 0, true, LayerDrop.Metric.BLOCK_INFLUENCE);
        }

        public Params withLayers(int l) {
            return new Params(hidden, l, ffn, heads, rescale, layerRule);
        }

        public Params withFfn(int f) {
            return new Params(hidden, layers, f, heads, rescale, layerRule);
        }

        public Params withHeads(int h) {
            return new Params(hidden, layers, ffn, h, rescale, layerRule);
        }

        public Params withRescale(boolean r) {
            return new Params(hidden, layers, ffn, heads, r, layerRule);
        }

        public Params withLayerRule(LayerDrop.Metric r) {
            return new Params(hidden, layers, ffn, heads, rescale, r);
        }
    }

    /**
     * The sizes of the result, checked against the model on specs only (before any calibration): every problem is
     * reported at once in one {@link InvalidInputException}.
     *
     * @param source the model's sizes
     * @param target the result's sizes
     * @param kvGroup query heads per key/value head kept together (1 for MHA, H for MQA)
     * @param explicitHeadDim whether config.json must carry {@code head_dim} (H'·head_dim ≠ D')
     */
    public record Shape(Dims source, Dims target, int kvGroup, boolean explicitHeadDim) {}

    /** Checks {@code p} against {@code graph} and returns the target sizes. */
    public static Shape check(WeightGraph graph, Params p) {
        Dims d = graph.dims();
        Architecture arch = graph.architecture();
        List<String> problems = new ArrayList<>();
        for (Weight w : graph.weights()) {
            if (w.role() == Role.EMBEDDING_PROJECTION || w.role() == Role.OUTPUT_PROJECTION) {
                problems.add("tensor '" + w.name() + "' projects the embedding to another width ("
                        + w.role().id() + "); subcloning keeps embeddings as wide as the hidden size");
            } else if (w.role() != Role.BUFFER && !w.tensor().dtype().isFloatingPoint()) {
                problems.add("tensor '" + w.name() + "' is not a floating-point weight ("
                        + w.tensor().dtype() + ")");
            } else if (w.role() != Role.BUFFER && w.tensor().shape().length > 2) {
                problems.add("tensor '" + w.name() + "' has " + w.tensor().shape().length + " axes; expected ≤ 2");
            }
        }
        graph.config().get("word_embed_proj_dim").ifPresent(v -> {
            if (v.asInt() != d.hidden()) {
                problems.add("config word_embed_proj_dim " + v.asInt() + " differs from the hidden size " + d.hidden()
                        + " (a projected embedding, which subcloning does not handle)");
            }
        });
        int hidden = p.hidden();
        if (hidden < 1 || hidden > d.hidden()) {
            problems.add("--hidden " + hidden + ": expected 1 ≤ D' ≤ " + d.hidden() + " (the source's hidden size;"
                    + " subcloning only shrinks)");
        }
        int layers = p.layers() == 0 ? d.layers() : p.layers();
        if (layers < 1 || layers > d.layers()) {
            problems.add("--layers " + p.layers() + ": expected 1 ≤ L' ≤ " + d.layers());
        }
        int ffn = p.ffn() == 0 ? (int) Math.max(1, Math.round((double) d.ffn() * hidden / d.hidden())) : p.ffn();
        if (ffn < 1 || ffn > d.ffn()) {
            problems.add("--ffn " + p.ffn() + ": expected 1 ≤ F' ≤ " + d.ffn());
        }
        int g = d.kvHeads() == 1 ? d.heads() : d.heads() / d.kvHeads();
        int heads = p.heads();
        if (heads == 0) {
            long num = (long) d.heads() * Math.max(hidden, 0);
            if (num % d.hidden() != 0 || num == 0) {
                problems.add("--heads not given and H·D'/D = " + d.heads() + "·" + hidden + "/" + d.hidden()
                        + " is not a whole number of heads; give --heads H' (head_dim " + d.headDim() + " is kept)");
                heads = d.heads();
            } else {
                heads = (int) (num / d.hidden());
            }
        }
        int kvHeads = d.kvHeads();
        if (heads < 1 || heads > d.heads()) {
            problems.add("--heads " + heads + ": expected 1 ≤ H' ≤ " + d.heads());
        } else if (d.kvHeads() == 1) {
            kvHeads = 1;
        } else if (heads % g != 0) {
            problems.add("--heads " + heads + ": grouped-query attention keeps whole groups of " + g
                    + " query heads per key/value head (" + d.heads() + " heads / " + d.kvHeads()
                    + " kv heads); expected a multiple of " + g);
        } else {
            kvHeads = heads / g;
        }
        boolean explicitHeadDim = false;
        long attnWidth = (long) heads * d.headDim();
        boolean sourceHasHeadDim = graph.config().integer(Field.HEAD_DIM).isPresent();
        if (attnWidth != hidden || sourceHasHeadDim) {
            explicitHeadDim = true;
            if (!sourceHasHeadDim && !arch.configHeadDim()) {
                problems.add("--heads " + heads + ": " + arch.family() + " has no head_dim setting, so H'·head_dim"
                        + " must equal D'; found " + heads + "·" + d.headDim() + " = " + attnWidth + " ≠ " + hidden
                        + (hidden % d.headDim() == 0 ? "; hint: --heads " + hidden / d.headDim() : ""));
            }
        }
        if (!problems.isEmpty()) {
            throw InvalidInputException.of(
                    graph.checkpoint().location().getFileName().toString(),
                    "cannot subclone to hidden " + hidden + ": " + String.join("; ", problems),
                    "a smaller shape the model can take",
                    problems.size() + " problem(s)");
        }
        Dims target = new Dims(
                hidden, layers, heads, kvHeads, d.headDim(), ffn, d.vocab(), d.positions(), d.typeVocab(), d.tied());
        return new Shape(d, target, g, explicitHeadDim);
    }

    /** What the calibration must capture: the residual stream at every position, and the o/down inputs. */
    public static Calibration.Request request() {
        return Calibration.Request.of(Calibration.Positions.ALL_TOKENS)
                .withResidualStream()
                .withLinearInputs(Role.MLP_DOWN, Role.ATTN_O);
    }

    /**
     * The calibration consumer: residual-stream statistics (importance of residual dimensions, block similarity) and
     * the mean |input| of every down and output projection. Give it to {@code Calibration.run} with {@link #request()}.
     */
    public static final class Importance implements Consumer<Calibration.Batch> {
        private final ResidualStats residual;
        private final LinearInputStats linear;
        private final Map<Integer, String> down = new LinkedHashMap<>();
        private final Map<Integer, String> out = new LinkedHashMap<>();

        public Importance(WeightGraph graph) {
            this.residual = new ResidualStats(graph.dims().layers());
            for (Weight w : graph.weights()) {
                if (!w.isBias() && w.role() == Role.MLP_DOWN) {
                    down.put(w.layer(), w.name());
                } else if (!w.isBias() && w.role() == Role.ATTN_O) {
                    out.put(w.layer(), w.name());
                }
            }
            List<String> names = new ArrayList<>(down.values());
            names.addAll(out.values());
            this.linear = LinearInputStats.meanAbs(names);
        }

        @Override
        public void accept(Calibration.Batch batch) {
            residual.accept(batch);
            linear.accept(batch);
        }

        /** Tokens seen. */
        public long tokens() {
            return residual.rows();
        }

        /** The residual-stream statistics (per-position mean |x|, block influence, angular distances). */
        public ResidualStats residualStats() {
            return residual;
        }

        /** Score of each residual dimension: Σ over positions 0..L of mean|x_j| normalised by the position's mean. */
        public double[] residualScores() {
            double[] s = null;
            for (int p = 0; p <= residual.layers(); p++) {
                double[] m = residual.meanAbs(p);
                if (m.length == 0) {
                    throw new IllegalStateException("no calibration tokens seen");
                }
                if (s == null) {
                    s = new double[m.length];
                }
                double mean = Arrays.stream(m).average().orElse(0);
                for (int j = 0; j < m.length; j++) {
                    s[j] += mean > 0 ? m[j] / mean : 0;
                }
            }
            return s;
        }

        /** Mean |activation| of each FFN neuron of block {@code layer}. */
        public double[] ffnScores(int layer) {
            String w = down.get(layer);
            if (w == null) {
                throw new IllegalArgumentException("block " + layer + " has no MLP down projection");
            }
            return linear.meanAbs(w);
        }

        /** Mean |context| of each query head of block {@code layer}, summed over its head_dim columns. */
        public double[] headScores(int layer, int heads, int headDim) {
            String w = out.get(layer);
            if (w == null) {
                throw new IllegalArgumentException("block " + layer + " has no attention output projection");
            }
            double[] m = linear.meanAbs(w);
            if (m.length != (long) heads * headDim) {
                throw new IllegalStateException(
                        "input of '" + w + "' has width " + m.length + "; expected " + heads + " × " + headDim);
            }
            double[] h = new double[heads];
            for (int i = 0; i < m.length; i++) {
                h[i / headDim] += m[i];
            }
            return h;
        }
    }

    /**
     * A subcloning ready to stream: the kept indices of every space and the source block of each result block.
     *
     * @param shape source and target sizes
     * @param params the parameters
     * @param residual kept residual dimensions (ascending), shared by every layer
     * @param blocks result block i is source block {@code blocks[i]}
     * @param ffn per source block: kept FFN neurons (ascending); null for removed blocks
     * @param qHeads per source block: kept query heads (ascending)
     * @param kvHeads per source block: kept key/value heads (ascending)
     * @param scale the norm-scale factor s (1 without rescaling)
     * @param residualScores the score of every residual dimension
     * @param norm the family's norm style ({@code rms_plus_one}: Gemma's {@code (1+γ)})
     * @param notes what the user should know
     */
    public record Plan(
            Shape shape,
            Params params,
            int[] residual,
            int[] blocks,
            int[][] ffn,
            int[][] qHeads,
            int[][] kvHeads,
            double scale,
            double[] residualScores,
            String norm,
            List<String> notes) {

        /** The parameters as provenance pairs. */
        public Map<String, String> describe() {
            Map<String, String> m = new LinkedHashMap<>();
            Dims t = shape.target();
            m.put("hidden", Integer.toString(t.hidden()));
            m.put("layers", Integer.toString(t.layers()));
            m.put("ffn", Integer.toString(t.ffn()));
            m.put("heads", Integer.toString(t.heads()));
            m.put("kv_heads", Integer.toString(t.kvHeads()));
            m.put("rescale", params.rescale() ? "sqrt(D/D')" : "none");
            m.put("layer_rule", params.layerRule().id());
            m.put("blocks", Arrays.toString(blocks));
            return m;
        }

        /** The share of the total residual score the kept dimensions hold. */
        public double keptResidualShare() {
            double all = 0;
            double kept = 0;
            for (double v : residualScores) {
                all += v;
            }
            for (int j : residual) {
                kept += residualScores[j];
            }
            return all > 0 ? kept / all : 0;
        }

        /** The index set of an axis space for a weight of source block {@code layer} (null: keep whole). */
        int[] indices(Axis a, int layer, Weight w) {
            Dims s = shape.source();
            int hd = s.headDim();
            switch (a) {
                case RESIDUAL:
                    return residual;
                case FFN:
                    return ffn[layer];
                case Q:
                    return expand(qHeads[layer], hd, 0);
                case KV:
                    return expand(kvHeads[layer], hd, 0);
                case QKV: {
                    if ("per_head".equals(w.spec().qkvLayout().orElse("blocks"))) {
                        return expand(qHeads[layer], 3 * hd, 0); // gpt_neox: [heads × (q, k, v) × head_dim]
                    }
                    int[] q = expand(qHeads[layer], hd, 0);
                    int[] k = expand(kvHeads[layer], hd, s.heads() * hd);
                    int[] v = expand(kvHeads[layer], hd, (s.heads() + s.kvHeads()) * hd);
                    int[] all = new int[q.length + k.length + v.length];
                    System.arraycopy(q, 0, all, 0, q.length);
                    System.arraycopy(k, 0, all, q.length, k.length);
                    System.arraycopy(v, 0, all, q.length + k.length, v.length);
                    return all;
                }
                default:
                    return null;
            }
        }

        /** The sliced (and for norms, rescaled) tensor of source weight {@code w}, under its source name. */
        public Tensor slice(Weight w) {
            List<Axis> axes = w.spec().axes();
            long[] stored = w.tensor().shape();
            if (w.role() == Role.BUFFER || stored.length != axes.size()) {
                return w.tensor(); // buffers (rotary frequencies, position ids) depend on head_dim only
            }
            int[][] keep = new int[stored.length][];
            boolean changed = false;
            for (int i = 0; i < stored.length; i++) {
                Axis a = axes.get(w.transposed() ? stored.length - 1 - i : i);
                keep[i] = indices(a, Math.max(w.layer(), 0), w);
                if (keep[i] != null && keep[i].length == stored[i] && isIdentity(keep[i])) {
                    keep[i] = null;
                }
                changed |= keep[i] != null;
            }
            float sc = 1f;
            float sh = 0f;
            if (scale != 1.0 && w.role().isNorm() && !w.isBias() && axes.equals(List.of(Axis.RESIDUAL))) {
                if ("rms_plus_one".equals(norm)) {
                    sc = (float) scale; // (1+γ)·s − 1 = s·γ + (s − 1)
                    sh = (float) (scale - 1);
                } else {
                    sc = (float) scale;
                }
                changed = true;
            }
            if (!changed) {
                return w.tensor();
            }
            return new SlicedTensor(w.tensor().name(), w.tensor(), keep, sc, sh);
        }
    }

    private static int[] expand(int[] heads, int width, int offset) {
        int[] out = new int[heads.length * width];
        for (int i = 0; i < heads.length; i++) {
            for (int k = 0; k < width; k++) {
                out[i * width + k] = offset + heads[i] * width + k;
            }
        }
        return out;
    }

    private static boolean isIdentity(int[] idx) {
        for (int i = 0; i < idx.length; i++) {
            if (idx[i] != i) {
                return false;
            }
        }
        return true;
    }

    /** The indices of the {@code k} highest scores, ascending; ties go to the lower index. */
    public static int[] top(double[] scores, int k) {
        Integer[] order = new Integer[scores.length];
        for (int i = 0; i < order.length; i++) {
            order[i] = i;
        }
        Arrays.sort(order, Comparator.<Integer>comparingDouble(i -> -scores[i]).thenComparingInt(i -> i));
        int[] out = new int[k];
        for (int i = 0; i < k; i++) {
            out[i] = order[i];
        }
        Arrays.sort(out);
        return out;
    }

    /** Chooses every index set from the calibration statistics. */
    public static Plan plan(WeightGraph graph, Params p, Importance imp) {
        Shape shape = check(graph, p);
        Dims s = shape.source();
        Dims t = shape.target();
        if (imp.tokens() == 0) {
            throw new InvalidInputException("subcloning: no calibration tokens were seen; expected a non-empty text");
        }
        List<String> notes = new ArrayList<>();
        double[] rs = imp.residualScores();
        int[] residual = top(rs, t.hidden());
        int[] blocks = chooseBlocks(imp.residualStats(), s.layers(), t.layers(), p.layerRule());
        int[][] ffn = new int[s.layers()][];
        int[][] q = new int[s.layers()][];
        int[][] kv = new int[s.layers()][];
        for (int l : blocks) {
            ffn[l] = top(imp.ffnScores(l), t.ffn());
            double[] hs = imp.headScores(l, s.heads(), s.headDim());
            if (s.kvHeads() == 1) {
                q[l] = top(hs, t.heads());
                kv[l] = new int[] {0};
            } else {
                int g = shape.kvGroup();
                double[] groups = new double[s.kvHeads()];
                for (int h = 0; h < s.heads(); h++) {
                    groups[h / g] += hs[h];
                }
                kv[l] = top(groups, t.kvHeads());
                q[l] = new int[t.heads()];
                int i = 0;
                for (int grp : kv[l]) {
                    for (int k = 0; k < g; k++) {
                        q[l][i++] = grp * g + k;
                    }
                }
            }
        }
        double scale = p.rescale() ? Math.sqrt((double) s.hidden() / t.hidden()) : 1.0;
        if ("sqrt_hidden".equals(graph.architecture().embeddingScale()) && t.hidden() != s.hidden()) {
            notes.add("the embedding multiplier √hidden becomes √" + t.hidden() + " (was √" + s.hidden() + ")");
        }
        return new Plan(
                shape,
                p,
                residual,
                blocks,
                ffn,
                q,
                kv,
                scale,
                rs,
                graph.architecture().norm(),
                notes);
    }

    /** The source blocks kept, in order: all, or those {@link LayerDrop#choose} leaves. */
    static int[] chooseBlocks(ResidualStats st, int layers, int keep, LayerDrop.Metric metric) {
        if (keep == layers) {
            int[] all = new int[layers];
            for (int i = 0; i < layers; i++) {
                all[i] = i;
            }
            return all;
        }
        return LayerDrop.keep(layers, LayerDrop.choose(metric, layers - keep, st));
    }

    /** The result's tensors, lazily, in output order (removed blocks left out, the others renumbered). */
    public static List<Tensor> tensors(WeightGraph graph, Plan plan) {
        return LayerRemap.tensors(graph, plan.blocks(), plan::slice);
    }

    /** The result's config.json: sizes, layer count and per-layer lists. */
    public static ModelConfig config(WeightGraph graph, Plan plan) {
        ModelConfig cfg = graph.config();
        Dims s = plan.shape().source();
        Dims t = plan.shape().target();
        cfg = cfg.with(Field.HIDDEN, t.hidden()).with(Field.HEADS, t.heads());
        int factor = graph.architecture().ffnDefaultFactor();
        if (cfg.integer(Field.INTERMEDIATE).isPresent() || factor <= 0 || t.ffn() != factor * t.hidden()) {
            cfg = cfg.with(Field.INTERMEDIATE, t.ffn());
        }
        if (cfg.integer(Field.KV_HEADS).isPresent() || t.kvHeads() != t.heads()) {
            cfg = cfg.with(Field.KV_HEADS, t.kvHeads());
        }
        if (plan.shape().explicitHeadDim()) {
            cfg = cfg.with(Field.HEAD_DIM, s.headDim());
        }
        if (cfg.get("word_embed_proj_dim").isPresent()) { // OPT: equal to the hidden size (checked in check())
            try {
                ObjectNode json = (ObjectNode) Json.mapper().readTree(cfg.toJson());
                json.put("word_embed_proj_dim", t.hidden());
                ModelConfig re = ModelConfig.parse(Json.mapper().writeValueAsString(json), cfg.source());
                for (Map.Entry<Field, Object> e : cfg.changes().entrySet()) {
                    re = re.with(e.getKey(), e.getValue()); // keep the record of changed fields
                }
                cfg = re;
            } catch (JsonProcessingException e) {
                throw new IllegalStateException("config.json written by ModelConfig cannot be read back", e);
            }
        }
        return LayerRemap.config(cfg, graph.architecture().family(), plan.blocks());
    }
}
