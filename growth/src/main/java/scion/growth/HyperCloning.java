package scion.growth;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import scion.io.InvalidInputException;
import scion.io.Json;
import scion.io.arch.Architecture;
import scion.io.arch.Axis;
import scion.io.arch.Dims;
import scion.io.arch.Role;
import scion.io.arch.WeightGraph;
import scion.io.arch.WeightGraph.Weight;
import scion.io.arch.WeightSpec;
import scion.io.config.ModelConfig;
import scion.io.config.ModelConfig.Field;
import scion.io.tensor.CounterRandom;
import scion.io.tensor.DType;
import scion.io.tensor.HalfPrecisionOps;
import scion.io.tensor.Tensor;
import scion.io.tensor.TensorOps;

/**
 * HyperCloning: function-preserving width growth of a transformer (Samragh et al. 2024, "Scaling Smart: Accelerating
 * Large Language Model Pre-training with Small Model Initialization").
 *
 * <p>The grown model's residual stream is {@code n} stacked copies {@code x' = [x; x; …; x]} of the source model's
 * (copy-major: grown index {@code c·h + i} holds source index {@code i}). Every weight is expanded so that each
 * layer maps copies to copies:
 *
 * <ul>
 *   <li>a linear weight {@code W [out, in]} becomes the block matrix of {@code (f_out × f_in)} blocks {@code W /
 *       f_in} (so {@code W'·[x; …; x] = [Wx; …; Wx]}); its bias is tiled {@code f_out} times, not scaled;
 *   <li>token, position and type embeddings are tiled along the residual axis, not scaled (Gemma's √hidden input
 *       scale becomes √(n·h): its embedding is divided by √n);
 *   <li>LayerNorm and RMSNorm weights and biases are tiled: mean and variance of {@code [x; x]} equal those of
 *       {@code x}, so the normalised copies are the copies of the normalised vector;
 *   <li>attention keeps {@code head_dim} and multiplies the number of query heads by {@code n}; key/value heads are
 *       multiplied too ({@link KvMode#GROW}) or kept ({@link KvMode#KEEP}, the default for multi-query attention), in
 *       which case the grown query heads are ordered so that each still reads its source key/value group;
 *   <li>fused QKV projections: gpt2's {@code c_attn} ({@code [in, out]}, q | k | v blocks) grows each block;
 *       gpt_neox's {@code query_key_value} ({@code [heads × (q, k, v) × head_dim, in]}) gains whole heads;
 *   <li>the MLP intermediate axis grows by its own factor {@code m}: up/gate rows tiled, down's input axis tiled and
 *       divided by {@code m};
 *   <li>the output head's input axis is tiled and divided by {@code n}; a head tied to the embedding stays tied and
 *       the {@code 1/n} is folded into the final norm ({@code γ/n}, {@code β/n}; Gemma's {@code (1+γ)}: {@code γ' =
 *       (1+γ)·F − 1} with {@code F = 1/√n}, since its embedding already carries {@code 1/√n}). Without a final norm
 *       the head is untied ({@link Plan#untiedHead()}).
 * </ul>
 *
 * <p>Symmetry breaking: for each linear weight with {@code f_in > 1}, noise blocks {@code N_ab} are added to the
 * (out-copy {@code a}, in-copy {@code b}) blocks with {@code Σ_b N_ab = 0} for every {@code a} (for {@code f_in = 2}:
 * {@code +N / −N}), noise power = block power / 10^(SNR/10). Because the input copies are equal, {@code W'·x'} is
 * unchanged in exact arithmetic; the copies' weights differ. The f noise values of an element are f unit-variance
 * uniforms minus their mean, scaled; each uniform is a pure function of (seed, tensor name, out-copy, element, in-copy)
 * ({@link CounterRandom}), so rows are computed in any order and by any number of threads ({@link RowWorkers}) with the
 * same bytes. The block power is the weight's mean square, summed in fixed chunks for the same reason.
 *
 * <p>Guarantee: function-preserving. Logits of a grown causal LM equal the source's, and every hidden state of the
 * grown model is {@code n} copies of the source's, within float32 rounding (1e-5 relative); bf16 with power-of-two
 * factors and no noise is exact. Shapes follow the stored layout of each weight ({@code [out, in]} as PyTorch
 * {@code Linear.weight}, {@code [in, out]} for gpt2 Conv1D and for ONNX MatMul initializers traced as transposed).
 */
public final class HyperCloning {
    private HyperCloning() {}

    /** The default symmetry-breaking noise: 20 dB below the weight block's power. */
    public static final double DEFAULT_NOISE_SNR_DB = 20.0;

    private static final String WORD_EMBED_PROJ_DIM = "word_embed_proj_dim";

    /** What happens to the key/value heads when the width grows. */
    public enum KvMode {
        /** Grow them with the query heads, except multi-query attention (one key/value head), which is kept. */
        AUTO,
        /** Multiply them by the width factor (each group and its query heads are copied together). */
        GROW,
        /** Keep them; each key/value group serves n times as many query heads. */
        KEEP;

        public String id() {
            return name().toLowerCase(Locale.ROOT);
        }
    }

    /**
     * The parameters of a width growth.
     *
     * @param width residual-stream factor {@code n} (≥ 1): hidden size and query heads are multiplied by it
     * @param ffn MLP intermediate factor {@code m} (≥ 1)
     * @param kv what happens to the key/value heads
     * @param noiseSnrDb symmetry-breaking noise, dB below the weight power; {@link Double#POSITIVE_INFINITY} for exact
     *     copies
     * @param seed seed of the noise
     */
    public record Params(int width, int ffn, KvMode kv, double noiseSnrDb, long seed) {
        public Params {
            if (kv == null) {
                throw new IllegalArgumentException("kv mode is null");
            }
            if (Double.isNaN(noiseSnrDb)) {
                throw new IllegalArgumentException("noise SNR is NaN");
            }
        }

        /** Exact copies, no noise. */
        public static Params exact(int width, int ffn) {
            return new Params(width, ffn, KvMode.AUTO, Double.POSITIVE_INFINITY, 0);
        }

        /** The default: noise at {@link #DEFAULT_NOISE_SNR_DB}. */
        public static Params withNoise(int width, int ffn, long seed) {
            return new Params(width, ffn, KvMode.AUTO, DEFAULT_NOISE_SNR_DB, seed);
        }

        public boolean noise() {
            return Double.isFinite(noiseSnrDb);
        }

        /** The parameters as provenance pairs. */
        public Map<String, String> describe() {
            Map<String, String> m = new LinkedHashMap<>();
            m.put("width", Integer.toString(width));
            m.put("ffn", Integer.toString(ffn));
            m.put("kv", kv.id());
            m.put("noise_snr_db", noise() ? Double.toString(noiseSnrDb) : "none");
            m.put("seed", Long.toString(seed));
            return m;
        }
    }

    /**
     * Checks {@code p} against the model (on specs only) and returns the plan; every problem is reported at once in
     * one {@link InvalidInputException}.
     */
    public static Plan plan(WeightGraph graph, Params p) {
        boolean hasFinalNorm = !graph.byRole(Role.FINAL_NORM).isEmpty();
        List<String> problems = new ArrayList<>();
        for (Weight w : graph.weights()) {
            if (w.role() == Role.EMBEDDING_PROJECTION || w.role() == Role.OUTPUT_PROJECTION) {
                problems.add(InvalidInputException.of(
                                "tensor '" + w.name() + "'",
                                "projects the embedding to another width ("
                                        + w.role().id() + "), which width" + " growth does not handle",
                                "an embedding as wide as the hidden size",
                                "a " + w.role().id())
                        .getMessage());
            } else if (w.role() != Role.BUFFER && !w.tensor().dtype().isFloatingPoint()) {
                problems.add(InvalidInputException.of(
                                "tensor '" + w.name() + "'",
                                "not a floating-point weight",
                                "F32, F16 or BF16",
                                w.tensor().dtype())
                        .getMessage());
            }
        }
        graph.config().get("word_embed_proj_dim").ifPresent(v -> {
            if (v.asInt() != graph.dims().hidden()) {
                problems.add(InvalidInputException.of(
                                graph.config().source(),
                                "word_embed_proj_dim differs from the hidden size (a projected embedding)",
                                graph.dims().hidden(),
                                v.asInt())
                        .getMessage());
            }
        });
        return plan(graph.architecture(), graph.dims(), p, hasFinalNorm, problems);
    }

    /**
     * The plan for an architecture and sizes (for tests and callers without a graph).
     *
     * @param hasFinalNorm whether the model stores a final norm (a tied head's 1/n is folded into it)
     */
    public static Plan plan(Architecture arch, Dims dims, Params p, boolean hasFinalNorm) {
        return plan(arch, dims, p, hasFinalNorm, new ArrayList<>());
    }

    private static Plan plan(Architecture arch, Dims dims, Params p, boolean hasFinalNorm, List<String> problems) {
        String family = arch.family();
        if (p.width() < 1) {
            problems.add(InvalidInputException.of(
                            "--width",
                            "not a growth factor (the grown hidden state is that many whole copies)",
                            "an integer ≥ 1",
                            p.width())
                    .getMessage());
        }
        if (p.ffn() < 1) {
            problems.add(InvalidInputException.of(
                            "--ffn",
                            "not a growth factor (each MLP neuron gets that many whole copies)",
                            "an integer ≥ 1",
                            p.ffn())
                    .getMessage());
        }
        boolean mqa = dims.kvHeads() == 1 && dims.heads() > 1;
        // Only a family whose attention reads its own key/value head count can keep them while the query heads grow.
        boolean grouped = arch.groupedKv();
        KvMode kv = p.kv();
        if (kv == KvMode.AUTO) {
            kv = mqa && grouped ? KvMode.KEEP : KvMode.GROW;
        }
        if (kv == KvMode.KEEP && !grouped && p.width() != 1) {
            problems.add(InvalidInputException.of(
                            "--kv keep",
                            family + " has no separate key/value head count (its attention uses as many key/value"
                                    + " heads as query heads)",
                            "--kv grow or auto",
                            "keep")
                    .getMessage());
        }
        if (p.noise() && !(p.noiseSnrDb() > -200 && p.noiseSnrDb() < 400)) {
            problems.add(InvalidInputException.of(
                            "--noise-snr-db", "out of range", "a value in (-200, 400) dB", p.noiseSnrDb())
                    .getMessage());
        }
        if (!problems.isEmpty()) {
            String rest = problems.size() > 1 ? "\n  " + String.join("\n  ", problems.subList(1, problems.size())) : "";
            throw new InvalidInputException(
                    (problems.size() > 1 ? problems.size() + " problems; " : "") + problems.get(0) + rest);
        }
        return new Plan(arch, dims, p, kv, hasFinalNorm);
    }

    /**
     * A checked width growth for one model: the grown sizes and the growth of each weight.
     *
     * <p>Use {@link #grow(Weight)} for each weight of the source graph (plus {@link #untiedHead()} when present), and
     * {@link WeightGrowth#tensor(Tensor, DType)} for a lazy grown tensor that a writer can stream.
     */
    public static final class Plan {
        private final Architecture arch;
        private final Dims source;
        private final Dims grown;
        private final Params params;
        private final KvMode kv;
        private final int n;
        private final int m;
        private final int kvFactor;
        private final boolean untie;
        private final float embeddingDivisor;
        private final float headFoldDivisor;
        private final AxisMap residual;
        private final AxisMap q;
        private final AxisMap kvMap;
        private final AxisMap ffnMap;

        Plan(Architecture arch, Dims dims, Params p, KvMode kv, boolean hasFinalNorm) {
            this.arch = arch;
            this.source = dims;
            this.params = p;
            this.kv = kv;
            this.n = p.width();
            this.m = p.ffn();
            this.kvFactor = kv == KvMode.GROW ? n : 1;
            boolean tied = dims.tied() && arch.isCausalLm();
            this.untie = tied && !hasFinalNorm && n > 1;
            // Gemma multiplies embeddings by √hidden: the grown model uses √(n·h), so the embedding carries 1/√n.
            boolean sqrtScale = "sqrt_hidden".equals(arch.embeddingScale());
            this.embeddingDivisor = sqrtScale ? (float) Math.sqrt(n) : 1f;
            // The tied head reads the (scaled) embedding: its input needs 1/n overall, the embedding gave
            // 1/embeddingDivisor, the final norm supplies the rest.
            this.headFoldDivisor = tied && !untie ? (sqrtScale ? (float) Math.sqrt(n) : n) : 1f;
            this.grown = new Dims(
                    Math.multiplyExact(dims.hidden(), n),
                    dims.layers(),
                    Math.multiplyExact(dims.heads(), n),
                    Math.multiplyExact(dims.kvHeads(), kvFactor),
                    dims.headDim(),
                    Math.multiplyExact(dims.ffn(), m),
                    dims.vocab(),
                    dims.positions(),
                    dims.typeVocab(),
                    dims.tied() && !untie);
            this.residual = AxisMap.tile(dims.hidden(), n);
            this.ffnMap = AxisMap.tile(dims.ffn(), m);
            this.kvMap = AxisMap.tile(Math.multiplyExact(dims.kvHeads(), dims.headDim()), kvFactor);
            this.q = kvFactor == n
                    ? AxisMap.tile(Math.multiplyExact(dims.heads(), dims.headDim()), n)
                    : AxisMap.grouped(dims.heads(), dims.kvHeads(), dims.headDim(), n);
        }

        public Architecture architecture() {
            return arch;
        }

        public Params params() {
            return params;
        }

        /** The source model's sizes. */
        public Dims source() {
            return source;
        }

        /** The grown model's sizes ({@code tied} false when the head had to be untied). */
        public Dims grown() {
            return grown;
        }

        /** The key/value mode after resolving {@link KvMode#AUTO}. */
        public KvMode kvMode() {
            return kv;
        }

        /** Factor of the key/value heads (n when grown, 1 when kept). */
        public int kvFactor() {
            return kvFactor;
        }

        /**
         * The divisor folded into the final norm for a tied head: n, √n for Gemma (its embedding carries the other
         * √n), 1 when nothing is folded.
         */
        public float headFoldDivisor() {
            return headFoldDivisor;
        }

        /** The divisor of the token embedding: √n for Gemma's √hidden input scale, else 1. */
        public float embeddingDivisor() {
            return embeddingDivisor;
        }

        /**
         * Whether the tied head had to be untied (no final norm to fold 1/n into): the output gains an {@code
         * lm_head} made by {@link #untiedHead(Weight)} from the embedding, and config.json sets {@code
         * tie_word_embeddings} to false.
         */
        public boolean untiedHead() {
            return untie;
        }

        /**
         * The grown model's config: hidden size, heads, intermediate size (explicit when it was, or when the family's
         * default factor no longer gives it), key/value heads (when the file had them or they now differ from the
         * heads), {@code tie_word_embeddings} when the head was untied, and OPT's {@code word_embed_proj_dim}. {@code
         * head_dim} is kept: explicit stays explicit, and an implicit hidden/heads stays equal since both grow by n.
         * Every other field is unchanged.
         */
        public ModelConfig config(ModelConfig cfg) {
            ModelConfig c = cfg.with(Field.HIDDEN, grown.hidden()).with(Field.HEADS, grown.heads());
            boolean ffnImplied = cfg.integer(Field.INTERMEDIATE).isEmpty()
                    && arch.ffnDefaultFactor() > 0
                    && (long) arch.ffnDefaultFactor() * grown.hidden() == grown.ffn();
            if (!ffnImplied) {
                c = c.with(Field.INTERMEDIATE, grown.ffn());
            }
            if (cfg.integer(Field.KV_HEADS).isPresent() || grown.kvHeads() != grown.heads()) {
                c = c.with(Field.KV_HEADS, grown.kvHeads());
            }
            if (untie) {
                c = c.with(Field.TIE_EMBEDDINGS, false);
            }
            if (cfg.get(WORD_EMBED_PROJ_DIM).isPresent()) {
                try {
                    ObjectNode json = (ObjectNode) Json.mapper().readTree(c.toJson());
                    json.put(WORD_EMBED_PROJ_DIM, grown.hidden());
                    ModelConfig re = ModelConfig.parse(Json.mapper().writeValueAsString(json), cfg.source());
                    for (Map.Entry<Field, Object> e : c.changes().entrySet()) {
                        re = re.with(e.getKey(), e.getValue()); // keep the record of changed fields
                    }
                    c = re;
                } catch (JsonProcessingException e) {
                    throw new IllegalStateException("config.json written by ModelConfig cannot be read back", e);
                }
            }
            return c;
        }

        /** What a report should tell the user, one sentence each. */
        public List<String> notes() {
            List<String> out = new ArrayList<>();
            out.add(String.format(
                    Locale.ROOT,
                    "width ×%d, ffn ×%d: hidden %d → %d, heads %d → %d, key/value heads %d → %d (%s), intermediate %d"
                            + " → %d, head_dim %d kept; function-preserving (every hidden state is %d copies of the"
                            + " source's)",
                    n,
                    m,
                    source.hidden(),
                    grown.hidden(),
                    source.heads(),
                    grown.heads(),
                    source.kvHeads(),
                    grown.kvHeads(),
                    kv.id(),
                    source.ffn(),
                    grown.ffn(),
                    source.headDim(),
                    n));
            if (untie) {
                out.add("tied head UNTIED: " + arch.family() + " without a final norm has no place to fold the head's"
                        + " 1/" + n + ", so the output stores lm_head (tiled embedding / " + n
                        + ") and sets tie_word_embeddings = false");
            } else if (headFoldDivisor != 1f) {
                out.add("tied head kept tied: its 1/" + n + " is folded into the final norm"
                        + ("rms_plus_one".equals(arch.norm())
                                ? " ((1+γ)/√" + n + " − 1, with the embedding ÷ √" + n + " for the √hidden input scale)"
                                : " (weight" + (arch.norm().startsWith("layer") ? " and bias" : "") + " / " + n + ")"));
            } else if (embeddingDivisor != 1f) {
                out.add("embedding ÷ √" + n + ": the √hidden input scale becomes √(" + n + "·hidden)");
            }
            if (params.noise() && (n > 1 || m > 1)) {
                out.add(String.format(
                        Locale.ROOT,
                        "symmetry-breaking noise %.1f dB below each linear block (seed %d), zero-sum over input"
                                + " copies: the copies' weights differ, the function does not",
                        params.noiseSnrDb(),
                        params.seed()));
            } else {
                out.add("no noise: the copies are exact");
            }
            return out;
        }

        /** The map of an axis space: grown index → (copy, source index). */
        AxisMap map(Axis a) {
            switch (a) {
                case RESIDUAL:
                    return residual;
                case Q:
                    return q;
                case KV:
                    return kvMap;
                case FFN:
                    return ffnMap;
                default:
                    return null; // not grown
            }
        }

        /** The growth of one weight of the source graph. */
        public WeightGrowth grow(Weight w) {
            return grow(w.spec(), w.transposed(), w.name(), w.tensor().shape());
        }

        /**
         * The growth of one weight, described by its spec.
         *
         * @param spec its architecture entry (role, axes, storage)
         * @param transposed stored transposed relative to {@code spec.axes()} (ONNX MatMul initializers)
         * @param name its name (seeds the noise)
         * @param storedShape its stored shape
         */
        public WeightGrowth grow(WeightSpec spec, boolean transposed, String name, long[] storedShape) {
            Role role = spec.role();
            if (role == Role.BUFFER) {
                return WeightGrowth.unchanged(name, storedShape);
            }
            List<Axis> axes = new ArrayList<>(spec.axes());
            if (role == Role.LM_HEAD && !spec.bias() && axes.size() == 2) {
                axes.set(1, Axis.RESIDUAL); // OPT names the head's input 'any': it is the residual stream
            }
            if (axes.size() != storedShape.length || axes.size() > 2) {
                throw new IllegalArgumentException("tensor '" + name + "': " + axes.size() + " axes " + axes
                        + " for stored shape " + Arrays.toString(storedShape));
            }
            AxisMap[] maps = new AxisMap[axes.size()];
            for (int i = 0; i < maps.length; i++) {
                maps[i] = axisMap(axes.get(i), spec, storedShape[transposed ? maps.length - 1 - i : i], name);
            }
            // The input axis of a linear weight, in spec order: [out, in], or [in, out] for Conv1D storage.
            int inAxis = -1;
            if (role.isLinear() && !spec.bias() && maps.length == 2) {
                inAxis = spec.inOut() ? 0 : 1;
            }
            if (transposed && maps.length == 2) {
                AxisMap t = maps[0];
                maps[0] = maps[1];
                maps[1] = t;
                inAxis = inAxis < 0 ? -1 : 1 - inAxis;
            }
            float divisor = 1f;
            float offset = 0f;
            int fIn = inAxis < 0 ? 1 : maps[inAxis].factor;
            if (inAxis >= 0) {
                divisor = fIn;
            }
            if (role == Role.EMBEDDING) {
                divisor = embeddingDivisor;
            }
            if (role == Role.FINAL_NORM && headFoldDivisor != 1f) {
                divisor = headFoldDivisor;
                if (!spec.bias() && "rms_plus_one".equals(arch.norm())) {
                    // (1 + γ') = (1 + γ) / d  ⇒  γ' = γ / d + (1/d − 1)
                    offset = (float) (1.0 / headFoldDivisor - 1.0);
                }
            }
            AxisMap rows = maps.length == 2 ? maps[0] : AxisMap.identity(1);
            AxisMap cols = maps.length == 2 ? maps[1] : maps.length == 1 ? maps[0] : AxisMap.identity(1);
            double snr = params.noise() && inAxis >= 0 && fIn > 1 ? params.noiseSnrDb() : Double.POSITIVE_INFINITY;
            long[] grownShape = new long[storedShape.length];
            for (int i = 0; i < storedShape.length; i++) {
                grownShape[i] = (maps.length == 2 ? (i == 0 ? rows : cols) : cols).grownLen;
            }
            if (storedShape.length == 0) {
                grownShape = new long[0];
            }
            int splitAxis = maps.length == 2 && inAxis >= 0 ? inAxis : -1;
            return new WeightGrowth(
                    name, storedShape, grownShape, rows, cols, divisor, offset, splitAxis, snr, params.seed());
        }

        /**
         * The output head for an untied model, made from the token embedding {@code [vocab, hidden]}: its input axis
         * tiled and divided by n ({@link #untiedHead()} must be true). Its lazy tensor is named {@code lm_head.weight}
         * (the family's head name), not after the embedding.
         */
        public WeightGrowth untiedHead(Weight embedding) {
            if (!untie) {
                throw new IllegalStateException("the head stays tied; nothing to untie");
            }
            String name = arch.global(Role.LM_HEAD)
                    .map(s -> s.name("", -1))
                    .orElseThrow(() -> new IllegalStateException(arch.family() + " has no lm_head entry"));
            long[] shape = embedding.tensor().shape();
            AxisMap vocab = AxisMap.identity(Math.toIntExact(shape[embedding.transposed() ? 1 : 0]));
            AxisMap res = residual.check(shape[embedding.transposed() ? 0 : 1], embedding.name());
            AxisMap rows = embedding.transposed() ? res : vocab;
            AxisMap cols = embedding.transposed() ? vocab : res;
            int splitAxis = embedding.transposed() ? 0 : 1;
            double snr = params.noise() && n > 1 ? params.noiseSnrDb() : Double.POSITIVE_INFINITY;
            WeightGrowth g = new WeightGrowth(
                    name,
                    shape,
                    new long[] {rows.grownLen, cols.grownLen},
                    rows,
                    cols,
                    n,
                    0f,
                    splitAxis,
                    snr,
                    params.seed());
            g.renamed = true;
            return g;
        }

        private AxisMap axisMap(Axis a, WeightSpec spec, long storedLen, String name) {
            if (a == Axis.QKV) {
                String layout = spec.qkvLayout().orElse("blocks");
                AxisMap map;
                if ("per_head".equals(layout)) {
                    if (source.kvHeads() != source.heads()) {
                        throw new IllegalArgumentException("tensor '" + name + "': per-head fused QKV with "
                                + source.kvHeads() + " key/value heads for " + source.heads() + " query heads");
                    }
                    map = AxisMap.perHead(q, source.heads(), source.headDim(), 3);
                } else {
                    map = AxisMap.concat(q, kvMap, kvMap);
                }
                return map.check(storedLen, name);
            }
            AxisMap map = map(a);
            if (map == null) {
                return AxisMap.identity(Math.toIntExact(storedLen));
            }
            return map.check(storedLen, name);
        }
    }

    /**
     * The map of one axis: grown index → (copy, source index). Grown length = factor × source length; every source
     * index appears exactly once in each copy.
     */
    static final class AxisMap {
        final int sourceLen;
        final int grownLen;
        final int factor;
        private final int[] src; // [grownLen] source index, null for a plain tile
        private final int[] copy; // [grownLen] copy index, null for a plain tile
        private final int[] inverse; // [factor × sourceLen] grown index of (copy, source), null for a plain tile

        private AxisMap(int sourceLen, int factor, int[] src, int[] copy) {
            this.sourceLen = sourceLen;
            this.factor = factor;
            this.grownLen = Math.multiplyExact(sourceLen, factor);
            this.src = src;
            this.copy = copy;
            if (src == null) {
                this.inverse = null;
            } else {
                // Built here, not on first use: worker threads share the map.
                this.inverse = new int[grownLen];
                for (int g = 0; g < grownLen; g++) {
                    inverse[copy[g] * sourceLen + src[g]] = g;
                }
            }
        }

        static AxisMap identity(int len) {
            return new AxisMap(len, 1, null, null);
        }

        /** Copy-major tiling: grown {@code c·len + i} ← source {@code i}, copy {@code c}. */
        static AxisMap tile(int len, int factor) {
            return new AxisMap(len, factor, null, null);
        }

        /**
         * Query heads when the key/value heads are kept: group {@code g}'s {@code r} query heads are followed by
         * their copies, so grown head {@code g·(n·r) + c·r + t} ← source head {@code g·r + t}, copy {@code c}; with
         * {@code r' = n·r} heads per group each grown head still reads key/value group {@code g}.
         */
        static AxisMap grouped(int heads, int kvHeads, int headDim, int n) {
            int r = heads / kvHeads;
            int len = Math.multiplyExact(heads, headDim);
            int[] src = new int[Math.multiplyExact(len, n)];
            int[] copy = new int[src.length];
            for (int g = 0; g < kvHeads; g++) {
                for (int c = 0; c < n; c++) {
                    for (int t = 0; t < r; t++) {
                        int grownHead = g * n * r + c * r + t;
                        int sourceHead = g * r + t;
                        for (int d = 0; d < headDim; d++) {
                            src[grownHead * headDim + d] = sourceHead * headDim + d;
                            copy[grownHead * headDim + d] = c;
                        }
                    }
                }
            }
            return new AxisMap(len, n, src, copy);
        }

        /**
         * A per-head interleaved fused axis ({@code [heads × parts × headDim]}, gpt_neox): grown head {@code h'}
         * holds the {@code parts} blocks of the source head {@code headMap} assigns to it.
         */
        static AxisMap perHead(AxisMap headMap, int heads, int headDim, int parts) {
            int block = Math.multiplyExact(parts, headDim);
            int n = headMap.factor;
            int[] src = new int[Math.multiplyExact(Math.multiplyExact(heads, block), n)];
            int[] copy = new int[src.length];
            for (int gh = 0; gh < heads * n; gh++) {
                int sh = headMap.source(gh * headDim) / headDim;
                int c = headMap.copy(gh * headDim);
                for (int k = 0; k < block; k++) {
                    src[gh * block + k] = sh * block + k;
                    copy[gh * block + k] = c;
                }
            }
            return new AxisMap(heads * block, n, src, copy);
        }

        /** Consecutive sections (gpt2's q | k | v), each grown by its own map; all must share one factor. */
        static AxisMap concat(AxisMap... parts) {
            int len = 0;
            int grownLen = 0;
            for (AxisMap p : parts) {
                len = Math.addExact(len, p.sourceLen);
                grownLen = Math.addExact(grownLen, p.grownLen);
            }
            int[] src = new int[grownLen];
            int[] copy = new int[grownLen];
            int so = 0;
            int go = 0;
            int factor = -1;
            for (AxisMap p : parts) {
                for (int i = 0; i < p.grownLen; i++) {
                    src[go + i] = so + p.source(i);
                    copy[go + i] = p.copy(i);
                }
                so += p.sourceLen;
                go += p.grownLen;
                if (factor < 0 || p.factor == factor) {
                    factor = p.factor;
                } else {
                    factor = 0; // mixed (q grown, kv kept): not a uniform factor
                }
            }
            if (factor <= 0) {
                throw new IllegalArgumentException("fused sections grow by different factors");
            }
            return new AxisMap(len, factor, src, copy);
        }

        int source(int grownIndex) {
            return src == null ? grownIndex % sourceLen : src[grownIndex];
        }

        /** Whether grown index {@code c·len + i} holds source {@code i} (a tile, or the identity). */
        boolean isPlainTile() {
            return src == null;
        }

        /** The grown index of copy {@code c} of source index {@code i}. */
        int grownIndex(int c, int i) {
            if (src == null) {
                return c * sourceLen + i;
            }
            return inverse[c * sourceLen + i];
        }

        int copy(int grownIndex) {
            return copy == null ? grownIndex / sourceLen : copy[grownIndex];
        }

        AxisMap check(long storedLen, String name) {
            if (storedLen != sourceLen) {
                throw new IllegalArgumentException(
                        "tensor '" + name + "': axis of length " + storedLen + " where the plan expects " + sourceLen);
            }
            return this;
        }
    }

    /**
     * The growth of one weight, as stored ({@code [rows, cols]}; a 1-D tensor is one row): grown element {@code (i',
     * j')} = {@code W[src(i'), src(j')] / divisor + offset + noise}, where noise follows the class comment for a
     * linear weight's input axis.
     */
    public static final class WeightGrowth {
        private final String name;
        private final long[] sourceShape;
        private final long[] grownShape;
        private final AxisMap rows;
        private final AxisMap cols;
        private final float divisor;
        private final float reciprocal; // 1 / divisor when that is exact (a power of two), else 0
        private final float offset;
        private final int splitAxis; // the input-copy axis of a linear weight grown along it: 0 rows, 1 cols, -1 none
        private final boolean noise;
        private final double snrDb;
        private final long seed;
        private final boolean unchanged;
        private boolean renamed; // the output tensor takes this growth's name (an untied head), not its source's

        WeightGrowth(
                String name,
                long[] sourceShape,
                long[] grownShape,
                AxisMap rows,
                AxisMap cols,
                float divisor,
                float offset,
                int inAxis,
                double snrDb,
                long seed) {
            this.name = name;
            this.sourceShape = sourceShape.clone();
            this.grownShape = grownShape;
            this.rows = rows;
            this.cols = cols;
            this.divisor = divisor;
            this.reciprocal = isPowerOfTwo(divisor) ? 1f / divisor : 0f;
            this.offset = offset;
            int f = inAxis == 0 ? rows.factor : inAxis == 1 ? cols.factor : 1;
            this.splitAxis = f > 1 ? inAxis : -1;
            this.noise = splitAxis >= 0 && Double.isFinite(snrDb);
            this.snrDb = snrDb;
            this.seed = seed;
            this.unchanged = rows.factor == 1 && cols.factor == 1 && divisor == 1f && offset == 0f;
        }

        static WeightGrowth unchanged(String name, long[] shape) {
            return new WeightGrowth(
                    name,
                    shape,
                    shape.clone(),
                    AxisMap.identity(1),
                    AxisMap.identity(1),
                    1f,
                    0f,
                    -1,
                    Double.POSITIVE_INFINITY,
                    0);
        }

        public String name() {
            return name;
        }

        /** The grown stored shape. */
        public long[] grownShape() {
            return grownShape.clone();
        }

        /** Whether the weight is written as it is (buffers, vocabulary-only axes, factor 1 everywhere). */
        public boolean isUnchanged() {
            return unchanged;
        }

        /** Whether this weight receives symmetry-breaking noise. */
        public boolean hasNoise() {
            return noise;
        }

        /** Grows a whole weight held in memory ({@code source} in stored layout, row-major). */
        public float[] apply(float[] source) {
            long n = 1;
            for (long d : sourceShape) {
                n = Math.multiplyExact(n, d);
            }
            if (source.length != n) {
                throw new IllegalArgumentException("tensor '" + name + "': " + source.length + " values for shape "
                        + Arrays.toString(sourceShape));
            }
            if (unchanged) {
                return source.clone();
            }
            double power = noise
                    ? noisePower(sumOfSquares(
                            source.length,
                            RowWorkers.CALLER,
                            (start, dst, len) -> System.arraycopy(source, (int) start, dst, 0, len)))
                    : 0;
            Rows r = new Rows(power, DType.F32);
            float[] out = new float[Math.multiplyExact(rows.grownLen, cols.grownLen)];
            float[] row = new float[cols.grownLen];
            for (int i = 0; i < rows.grownLen; i++) {
                r.row(i, row, source, sourceRowOffset(i));
                System.arraycopy(row, 0, out, i * cols.grownLen, cols.grownLen);
            }
            return out;
        }

        /**
         * A lazy grown tensor of dtype {@code dtype} over {@code source}: each read computes the grown rows it covers
         * from the source rows, so a writer streams it with memory of a few rows. The source tensor is returned as it
         * is when nothing changes and the dtype matches.
         */
        public Tensor tensor(Tensor source, DType dtype) {
            return tensor(source, dtype, RowWorkers.CALLER);
        }

        /**
         * Like {@link #tensor(Tensor, DType)}, with the rows of each read (and the noise power pass) computed by
         * {@code workers}: a block of at most {@value #BLOCK_BYTES} output bytes is split into contiguous row ranges,
         * one per thread. Every value is a function of its row and the seed, so the bytes do not depend on the thread
         * count.
         */
        public Tensor tensor(Tensor source, DType dtype, RowWorkers workers) {
            if (!Arrays.equals(source.shape(), sourceShape)) {
                throw new IllegalArgumentException("tensor '" + source.name() + "' has shape "
                        + Arrays.toString(source.shape()) + "; the plan was made for " + Arrays.toString(sourceShape));
            }
            if (unchanged) {
                return source.as(dtype);
            }
            return new GrownTensor(source, dtype, workers);
        }

        /** Offset of source row {@code src(i)} in a flat source array. */
        private int sourceRowOffset(int grownRow) {
            return rows.source(grownRow) * cols.sourceLen;
        }

        /** Mean square of a noise block: the source block's power (W / f_in)² over 10^(SNR/10). */
        private double noisePowerFromMeanSquare(double meanSquare) {
            if (!noise) {
                return 0;
            }
            double block = meanSquare / ((double) divisor * divisor);
            return block / Math.pow(10, snrDb / 10);
        }

        /** The noise power of a weight whose elements' squares sum to {@code sumOfSquares}. */
        private double noisePower(double sumOfSquares) {
            long total = 1;
            for (long d : sourceShape) {
                total = Math.multiplyExact(total, d);
            }
            return noisePowerFromMeanSquare(total == 0 ? 0 : sumOfSquares / total);
        }

        /**
         * Computes grown rows from source rows.
         *
         * <p>Along the input copies of a linear weight the f blocks are split so that they sum to the source weight in
         * the output dtype: copies {@code b < f−1} get {@code round(W/f + N_b)}, the last one {@code round(W − Σ
         * others)} (exact whenever representable). With power-of-two f and no noise every block is {@code W/f}
         * exactly; otherwise (noise, f = 3, bf16) the rounding of one block does not leak into the function. Blocks
         * are kept on the grid of w's last bit in the output dtype (or of its last non-zero bit): where the noise would
         * take a block or the remainder beyond 2^p grid steps (p the dtype's significant bits), out of what that grid
         * can represent, that element's noise is halved until they fit (at most 8 times, then none).
         *
         * <p>One instance per thread: it holds scratch arrays.
         */
        private final class Rows {
            private final double amplitude; // per-copy noise scale: σ / sqrt(1 − 1/f) × (1/σ_u)
            private final long key; // the noise stream of this weight: CounterRandom.key(seed, name)
            private final DType dtype;
            private final double significand; // 2^p: whole multiples of w's grid below it are representable
            private final int gridShift; // w's grid in the output dtype is 2^(exponent bits − 150 + gridShift)
            private final double recipF; // 1/f when exact (f a power of two), else 0
            private final boolean split;
            private final double[] u = new double[Math.max(rows.factor, cols.factor) + 1];
            private final float[] v = new float[Math.max(rows.factor, cols.factor)];
            private long[] columnKeys;

            Rows(double noisePower, DType dtype) {
                int f = splitAxis == 0 ? rows.factor : splitAxis == 1 ? cols.factor : 1;
                this.amplitude = noise && f > 1 ? Math.sqrt(noisePower / (1.0 - 1.0 / f)) : 0;
                this.key = CounterRandom.key(seed, name);
                this.dtype = dtype;
                this.significand = dtype == DType.BF16
                        ? 0x1p8
                        : dtype == DType.F16 ? 0x1p11 : dtype == DType.F32 ? 0x1p24 : 0; // 0: no fast path
                this.gridShift = dtype == DType.BF16 ? 16 : dtype == DType.F16 ? 13 : 0;
                this.recipF = isPowerOfTwo(f) ? 1.0 / f : 0;
                this.split = splitAxis >= 0 && (amplitude > 0 || !isPowerOfTwo(f));
            }

            /**
             * Fills {@code out[0 .. cols.grownLen)} with grown row {@code i}, whose source row starts at {@code
             * src[base]}.
             */
            void row(int i, float[] out, float[] src, int base) {
                if (!split) {
                    values(src, base, out);
                    return;
                }
                int sr = rows.source(i);
                int cr = rows.copy(i);
                if (splitAxis == 1) {
                    // [out, in]: row = (out copy a, source out index o); columns = (in copy b, source in index):
                    // the f blocks of each source element are made together.
                    int f = cols.factor;
                    long rowKey = CounterRandom.bits(key, (long) cr << 32 | sr);
                    int len = cols.sourceLen;
                    boolean tile = cols.isPlainTile();
                    if (f == 2 && tile && amplitude > 0 && significand > 0) {
                        halves(src, base, len, rowKey, out);
                        return;
                    }
                    for (int in = 0; in < len; in++) {
                        split(src[base + in], f, rowKey, in);
                        for (int b = 0; b < f; b++) {
                            out[tile ? b * len + in : cols.grownIndex(b, in)] = v[b];
                        }
                    }
                } else {
                    // [in, out]: row = (in copy b, source in index); columns = (out copy a, source out index o).
                    int f = rows.factor;
                    long[] keys = amplitude > 0 ? columnKeys() : null;
                    for (int j = 0; j < cols.grownLen; j++) {
                        split(src[base + cols.source(j)], f, keys == null ? 0 : keys[j], sr);
                        out[j] = v[cr];
                    }
                }
            }

            /**
             * {@link #split} for f = 2 and a plainly tiled input axis, the common case, with the first attempt inlined:
             * source element {@code in} of the row goes to {@code out[in]} and {@code out[len + in]}.
             */
            private void halves(float[] src, int base, int len, long rowKey, float[] out) {
                double a = amplitude;
                for (int in = 0; in < len; in++) {
                    float w = src[base + in];
                    long bits = CounterRandom.bits(rowKey, in);
                    double u0 = CounterRandom.uniform(bits);
                    double u1 = CounterRandom.uniformLow(bits);
                    double mean = (u0 + u1) * 0.5;
                    int exponent = (Float.floatToRawIntBits(w) >>> 23) & 0xff;
                    if (exponent != 0 && exponent != 0xff) {
                        double share = reciprocal != 0f ? (double) w * reciprocal : (double) w / divisor;
                        int e = exponent - 150 + gridShift;
                        if (dtype == DType.F16) {
                            e = Math.max(e, -24);
                        }
                        double grid = Double.longBitsToDouble((long) (e + 1023) << 52);
                        double inv = Double.longBitsToDouble((long) (1023 - e) << 52);
                        double k = Math.rint((share + a * (u0 - mean)) * inv);
                        double rest = w * inv - k;
                        if (Math.abs(k) < significand && Math.abs(rest) < significand && rest == Math.rint(rest)) {
                            out[in] = (float) (k * grid);
                            out[len + in] = (float) (rest * grid);
                            continue;
                        }
                    }
                    u[0] = u0;
                    u[1] = u1;
                    split(w, 2, mean);
                    out[in] = v[0];
                    out[len + in] = v[1];
                }
            }

            /** The f blocks of source element {@code w} (keyed by its row key and input index) into {@code v}. */
            private void split(float w, int f, long rowKey, int in) {
                split(w, f, amplitude > 0 ? draw(rowKey, in, f, u) : 0);
            }

            /** {@link #split(float, int, long, int)} with the draws in {@code u} and their {@code mean}. */
            private void split(float w, int f, double mean) {
                double share = reciprocal != 0f ? (double) w * reciprocal : (double) w / divisor; // same value
                // Blocks on w's own grid (its ulp in the output dtype) stay representable while they are smaller
                // than w's binade, and so does the remainder: the f blocks then sum to w exactly.
                int exponent = (Float.floatToRawIntBits(w) >>> 23) & 0xff;
                if (significand > 0 && exponent != 0 && exponent != 0xff) {
                    // ulp(w) of a normal w from its exponent bits, without Math.ulp and divisions
                    int e = exponent - 150 + gridShift;
                    // Trailing zero bits of w in the output dtype: w is also on the coarser grid 2^(e + zeros),
                    // whose blocks may be larger (a second try when the fine grid cannot hold the noise).
                    int zeros = Math.min(
                            Integer.numberOfTrailingZeros(Float.floatToRawIntBits(w) >>> gridShift), 23 - gridShift);
                    if (dtype == DType.F16 && e < -24) {
                        e = -24;
                        zeros = 0;
                    }
                    double grid = Double.longBitsToDouble((long) (e + 1023) << 52);
                    double inv = Double.longBitsToDouble((long) (1023 - e) << 52);
                    double coarse = Double.longBitsToDouble((long) (e + zeros + 1023) << 52);
                    double coarseInv = Double.longBitsToDouble((long) (1023 - e - zeros) << 52);
                    // Noise larger than about |w| pushes a block out of w's binade, where the remainder cannot hold
                    // w's low bits: halve it for this element (at most 8 times, then none), so weights much smaller
                    // than the noise get less of it. Without noise the blocks are on the grid (w/f rounded).
                    // Attempts whose largest noise is ≥ 2^(p+1) steps of the coarser grid fail on both grids (that
                    // block has |k| ≥ 2^(p+1) − 2^(p−1) > 2^p): skip them (the same result as trying them).
                    double largest = 0;
                    for (int b = 0; b < f - 1; b++) {
                        largest = Math.max(largest, Math.abs(amplitude * (u[b] - mean)));
                    }
                    double steps = largest * (zeros > 0 ? coarseInv : inv);
                    int p = Math.getExponent(significand);
                    int skip = steps >= 2 * significand ? Math.min(8, Math.getExponent(steps) - p) : 0;
                    double scale = skip < 8 ? Math.scalb(amplitude, -skip) : 0;
                    for (int attempt = skip + 1; attempt <= 9; attempt++) {
                        if (onGrid(w, f, share, grid, inv, mean, scale)
                                || (zeros > 0 && onGrid(w, f, share, coarse, coarseInv, mean, scale))) {
                            return;
                        }
                        scale = attempt < 8 ? scale * 0.5 : 0;
                    }
                }
                // Zero, subnormal or non-finite weights, F64 output: round each block, the remainder last.
                double grid = ulp(w);
                double scale = amplitude;
                for (int attempt = 1; ; attempt++) {
                    double acc = 0;
                    for (int b = 0; b < f - 1; b++) {
                        double x = scale > 0 ? share + scale * (u[b] - mean) : share;
                        v[b] = grid > 0 ? round(Math.rint(x * (1 / grid)) * grid) : round(x); // grid: 2^k
                        acc += v[b];
                    }
                    v[f - 1] = round(w - acc);
                    // Sums of a few floats are exact in double; halve the noise while they miss w, as above.
                    if (acc + v[f - 1] == w || scale == 0) {
                        return;
                    }
                    scale = attempt < 8 ? scale * 0.5 : 0;
                }
            }

            /**
             * One attempt of {@link #split} at noise scale {@code scale}: accepted when every block is {@code k·grid}
             * with a whole {@code |k| < 2^p} (p the dtype's significant bits) and so is the remainder; such values are
             * representable, so nothing is rounded and the blocks sum to {@code w}. Returns false otherwise.
             */
            private boolean onGrid(float w, int f, double share, double grid, double inv, double mean, double scale) {
                double sum = 0;
                for (int b = 0; b < f - 1; b++) {
                    double x = scale > 0 ? share + scale * (u[b] - mean) : share;
                    double k = Math.rint(x * inv);
                    if (!(Math.abs(k) < significand)) {
                        return false;
                    }
                    v[b] = (float) (k * grid);
                    sum += k;
                }
                double rest = w * inv - sum; // exact: both are whole numbers below 2^53, or w is off the grid
                if (!(Math.abs(rest) < significand) || rest != Math.rint(rest)) {
                    return false;
                }
                v[f - 1] = (float) (rest * grid);
                return true;
            }

            /** The spacing of the output dtype's values around {@code w} (0 for zero and non-finite values). */
            private double ulp(float w) {
                if (w == 0 || !Float.isFinite(w)) {
                    return 0;
                }
                double u32 = Math.ulp(w);
                switch (dtype) {
                    case BF16:
                        return u32 * 65536; // 8 significant bits instead of 24
                    case F16:
                        // 11 significant bits; below 2^-14 the f16 subnormal spacing 2^-24
                        return Math.max(u32 * 8192, 0x1.0p-24);
                    case F64:
                        return 0; // no useful grid: round only
                    default:
                        return u32;
                }
            }

            /** {@code x} rounded to the output dtype (as a float). */
            private float round(double x) {
                float f = (float) x;
                switch (dtype) {
                    case BF16:
                        return HalfPrecisionOps.bf16ToF32(HalfPrecisionOps.f32ToBf16(f) & 0xffff);
                    case F16:
                        return HalfPrecisionOps.f16ToF32(HalfPrecisionOps.f32ToF16(f) & 0xffff);
                    default:
                        return f;
                }
            }

            /**
             * The f unit-variance uniforms of element {@code in} of the row keyed {@code rowKey} (one hash gives two),
             * into {@code u}; returns their mean.
             */
            private double draw(long rowKey, int in, int f, double[] u) {
                int hashes = (f + 1) / 2;
                long k = (long) in * hashes;
                double mean = 0;
                for (int h = 0; h < hashes; h++) {
                    long bits = CounterRandom.bits(rowKey, k + h);
                    u[2 * h] = CounterRandom.uniform(bits);
                    mean += u[2 * h];
                    if (2 * h + 1 < f) {
                        u[2 * h + 1] = CounterRandom.uniformLow(bits);
                        mean += u[2 * h + 1];
                    }
                }
                return recipF != 0 ? mean * recipF : mean / f; // the same value
            }

            /** The grown row without noise: {@code W[src(j)] / divisor + offset}. */
            private void values(float[] src, int base, float[] out) {
                int len = cols.sourceLen;
                boolean plain = divisor == 1f && offset == 0f;
                if (cols.isPlainTile()) {
                    if (plain) {
                        System.arraycopy(src, base, out, 0, len);
                    } else if (reciprocal != 0f) {
                        for (int j = 0; j < len; j++) {
                            out[j] = src[base + j] * reciprocal + offset;
                        }
                    } else {
                        for (int j = 0; j < len; j++) {
                            out[j] = src[base + j] / divisor + offset;
                        }
                    }
                    for (int c = 1; c < cols.factor; c++) {
                        System.arraycopy(out, 0, out, c * len, len);
                    }
                    return;
                }
                for (int j = 0; j < cols.grownLen; j++) {
                    out[j] = src[base + cols.source(j)] / divisor + offset;
                }
            }

            /** Per grown column of an {@code [in, out]} weight: the key of its (out copy, out index). */
            private long[] columnKeys() {
                if (columnKeys == null) {
                    columnKeys = new long[cols.grownLen];
                    for (int j = 0; j < cols.grownLen; j++) {
                        columnKeys[j] = CounterRandom.bits(key, (long) cols.copy(j) << 32 | cols.source(j));
                    }
                }
                return columnKeys;
            }
        }

        /** One thread's share of a grown tensor: its {@link Rows}, a window of decoded source rows, one grown row. */
        private final class Worker {
            private final Tensor source;
            private final Rows rows;
            private final float[] window; // source rows [windowStart, windowStart + windowRows), decoded
            private final float[] grown;
            private int windowStart = -1;
            private int windowRows;

            Worker(Tensor source, double power, DType dtype) {
                this.source = source;
                this.rows = new Rows(power, dtype);
                int perWindow = Math.max(
                        1,
                        Math.min(
                                HyperCloning.WeightGrowth.this.rows.sourceLen,
                                WINDOW_FLOATS / Math.max(1, cols.sourceLen)));
                this.window = new float[Math.multiplyExact(perWindow, cols.sourceLen)];
                this.grown = new float[cols.grownLen];
            }

            /** Encodes grown rows {@code [from, to)} into {@code out} at its position. */
            void encode(int from, int to, DType dtype, ByteBuffer out) {
                int sourceRows = HyperCloning.WeightGrowth.this.rows.sourceLen;
                int perWindow = window.length / Math.max(1, cols.sourceLen);
                for (int i = from; i < to; i++) {
                    int sr = HyperCloning.WeightGrowth.this.rows.source(i);
                    if (sr < windowStart || sr >= windowStart + windowRows) {
                        windowStart = sr;
                        windowRows = Math.min(perWindow, sourceRows - sr);
                        source.readFloats((long) sr * cols.sourceLen, window, 0, windowRows * cols.sourceLen);
                    }
                    rows.row(i, grown, window, (sr - windowStart) * cols.sourceLen);
                    TensorOps.encode(dtype, grown, 0, grown.length, out);
                }
            }
        }

        /** The lazy grown tensor. */
        private final class GrownTensor implements Tensor {
            private final Tensor source;
            private final DType dtype;
            private final RowWorkers workers;
            private final long rowBytes;
            private Worker[] parts; // one per thread, made on the first read
            private ByteBuffer block; // encoded grown rows [blockStart, blockEnd)
            private int blockStart = -1;
            private int blockEnd = -1;
            private double power = Double.NaN; // noise power, kept across releases

            GrownTensor(Tensor source, DType dtype, RowWorkers workers) {
                this.source = source;
                this.dtype = dtype;
                this.workers = workers;
                this.rowBytes = Math.multiplyExact((long) cols.grownLen, dtype.size());
            }

            @Override
            public String name() {
                return renamed ? name : source.name(); // the stored name (an ONNX initializer's may differ)
            }

            @Override
            public DType dtype() {
                return dtype;
            }

            @Override
            public long[] shape() {
                return grownShape;
            }

            private void init() {
                if (parts != null) {
                    return;
                }
                if (Double.isNaN(power)) {
                    power = noise
                            ? noisePower(sumOfSquares(source.numel(), workers, (start, dst, len) -> {
                                source.readFloats(start, dst, 0, len);
                            }))
                            : 0;
                }
                parts = new Worker[workers.threads()];
                int blockRows = (int) Math.max(1, Math.min(rows.grownLen, BLOCK_BYTES / Math.max(1, rowBytes)));
                block = ByteBuffer.allocate(Math.toIntExact(blockRows * rowBytes))
                        .order(ByteOrder.LITTLE_ENDIAN);
            }

            @Override
            public synchronized void readBytes(long byteOffset, ByteBuffer dst) {
                init();
                long total = rowBytes * rows.grownLen;
                int blockRows = (int) (block.capacity() / rowBytes);
                long at = byteOffset;
                while (dst.hasRemaining() && at < total) {
                    int r = Math.toIntExact(at / rowBytes);
                    if (r < blockStart || r >= blockEnd) {
                        long end = Math.min(total, at + dst.remaining());
                        int last = Math.toIntExact((end + rowBytes - 1) / rowBytes);
                        compute(r, Math.max(1, Math.min(blockRows, last - r)));
                    }
                    long inBlock = at - blockStart * rowBytes;
                    int len = (int) Math.min(dst.remaining(), (blockEnd - blockStart) * rowBytes - inBlock);
                    ByteBuffer slice = block.duplicate();
                    slice.position((int) inBlock).limit((int) inBlock + len);
                    dst.put(slice);
                    at += len;
                }
                if (at >= total) {
                    release(); // read to the end: a writer holding every output tensor keeps only its shape
                }
            }

            /** Computes grown rows {@code [r0, r0 + count)} into {@link #block}, split among the workers. */
            private void compute(int r0, int count) {
                int n = Math.min(parts.length, count);
                workers.run(n, p -> {
                    int from = r0 + (int) ((long) count * p / n);
                    int to = r0 + (int) ((long) count * (p + 1) / n);
                    if (parts[p] == null) {
                        parts[p] = new Worker(source, power, dtype);
                    }
                    ByteBuffer out = block.duplicate().order(ByteOrder.LITTLE_ENDIAN);
                    out.position((int) ((from - r0) * rowBytes));
                    parts[p].encode(from, to, dtype, out);
                });
                blockStart = r0;
                blockEnd = r0 + count;
            }

            /** Drops the row buffers; a later read recomputes them. */
            private void release() {
                parts = null;
                block = null;
                blockStart = -1;
                blockEnd = -1;
            }
        }
    }

    /** Output bytes computed per block of a grown tensor's rows (split among the threads). */
    static final int BLOCK_BYTES = 4 << 20;

    /** Source elements decoded per read of a worker's window of source rows. */
    private static final int WINDOW_FLOATS = 1 << 16;

    /** Elements per partial sum of the noise power pass: the order of the sum does not depend on the threads. */
    private static final int POWER_CHUNK = 1 << 16;

    /** Reads elements {@code [start, start + len)} of a weight as float32 into {@code dst[0 .. len)}. */
    private interface FloatReader {
        void read(long start, float[] dst, int len);
    }

    /**
     * Σ v² over {@code total} elements, as fixed chunks of {@value #POWER_CHUNK} (each with four interleaved partial
     * sums) added in order: the same double for any thread count.
     */
    static double sumOfSquares(long total, RowWorkers workers, FloatReader reader) {
        int chunks = Math.toIntExact((total + POWER_CHUNK - 1) / POWER_CHUNK);
        double[] partial = new double[chunks];
        int n = Math.max(1, Math.min(workers.threads(), chunks));
        workers.run(n, p -> {
            float[] buf = new float[(int) Math.min(POWER_CHUNK, total)];
            int from = (int) ((long) chunks * p / n);
            int to = (int) ((long) chunks * (p + 1) / n);
            for (int c = from; c < to; c++) {
                long start = (long) c * POWER_CHUNK;
                int len = (int) Math.min(POWER_CHUNK, total - start);
                reader.read(start, buf, len);
                double s0 = 0;
                double s1 = 0;
                double s2 = 0;
                double s3 = 0;
                int i = 0;
                for (; i + 3 < len; i += 4) {
                    s0 += (double) buf[i] * buf[i];
                    s1 += (double) buf[i + 1] * buf[i + 1];
                    s2 += (double) buf[i + 2] * buf[i + 2];
                    s3 += (double) buf[i + 3] * buf[i + 3];
                }
                for (; i < len; i++) {
                    s0 += (double) buf[i] * buf[i];
                }
                partial[c] = (s0 + s1) + (s2 + s3);
            }
        });
        double s = 0;
        for (double v : partial) {
            s += v;
        }
        return s;
    }

    static boolean isPowerOfTwo(float f) {
        int bits = Float.floatToRawIntBits(f);
        return f > 0 && Float.isFinite(f) && (bits & 0x007fffff) == 0 && (bits & 0x7f800000) != 0;
    }
}
