package scion.io.runtime.export;

import static scion.io.runtime.export.GraphBuilder.attr;
import static scion.io.runtime.export.GraphBuilder.attrs;

import ai.onnx.proto.OnnxMl.GraphProto;
import ai.onnx.proto.OnnxMl.StringStringEntryProto;
import ai.onnx.proto.OnnxMl.TensorProto;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.arch.Dims;
import scion.io.arch.Role;
import scion.io.arch.WeightGraph;
import scion.io.arch.WeightGraph.Weight;
import scion.io.runtime.export.FamilySettings.Norm;
import scion.io.runtime.export.FamilySettings.Positions;
import scion.io.tensor.DType;
import scion.io.tensor.LowRankTensor;
import scion.io.tensor.Tensor;

/**
 * Builds the forward pass of one model as ONNX nodes over named weight initializers (see {@link OnnxExporter} for the
 * contract). The residual stream is kept flat, {@code [N = batch·seq, hidden]}, so every linear layer is one {@code
 * Gemm} ({@code transB = 1} on PyTorch's {@code [out, in]} weights, {@code transB = 0} on gpt2's Conv1D {@code [in,
 * out]}); attention reshapes to {@code [batch, kv_heads, group, seq, head_dim]} so that grouped-query attention
 * broadcasts each key/value head over its group of query heads without repeating it.
 */
final class TransformerGraph {
    /** transformers' masked score: {@code torch.finfo(float32).min}. */
    static final float MASKED = -Float.MAX_VALUE;

    /** The in-graph location of weight stubs; ONNX Runtime replaces them from memory, OnnxWriter from tensors. */
    static final String IN_MEMORY = "scion-in-memory";

    /** A float32 value holding rows {@code [start, start + rows)} of a weight. */
    private record Block(String value, long rows) {}

    private final WeightGraph wg;
    private final Dims d;
    private final FamilySettings s;
    private final long maxBytes;
    private final GraphBuilder g;
    private final Map<String, Tensor> initializers = new LinkedHashMap<>();
    private final Map<String, List<Block>> blocks = new HashMap<>();
    private final Map<String, Weight> byKey = new HashMap<>();
    /** The names of the weights the graph reads: every other weight (buffers aside) makes the export refuse. */
    private final Set<String> used = new HashSet<>();

    private final Map<String, String> shapes = new HashMap<>();
    private final Map<Integer, String> masks = new HashMap<>();
    private String shape2; // [batch, seq] int64
    private String positionRange; // 0 .. seq-1, int64 [seq]
    private String cos; // [seq, rotary]
    private String sin;

    private TransformerGraph(Model model, FamilySettings s, long maxBytes) {
        this.wg = model.graph();
        this.d = wg.dims();
        this.s = s;
        this.maxBytes = maxBytes;
        this.g = new GraphBuilder("scion_" + s.family);
        for (Weight w : wg.weights()) {
            byKey.put(key(w.layer(), w.role(), w.isBias()), w);
        }
    }

    /** The built graph and the weights its initializers name. */
    record Built(GraphProto graph, Map<String, Tensor> initializers) {}

    static Built build(Model model, FamilySettings s, boolean residualStream, long maxBytes) {
        TransformerGraph t = new TransformerGraph(model, s, maxBytes);
        return t.run(residualStream);
    }

    private static String key(int layer, Role role, boolean bias) {
        return layer + "/" + role + "/" + bias;
    }

    private Optional<Weight> find(int layer, Role role, boolean bias) {
        return Optional.ofNullable(byKey.get(key(layer, role, bias)));
    }

    private Weight require(int layer, Role role) {
        return find(layer, role, false)
                .orElseThrow(() -> new InvalidInputException(wg.config().source() + ": no " + role.id() + " weight"
                        + (layer >= 0 ? " in layer " + layer : "") + "; expected one for a " + s.family
                        + " model, found none"));
    }

    private Built run(boolean residualStream) {
        g.input("input_ids", GraphBuilder.INT64, "batch", "sequence");
        g.input("attention_mask", GraphBuilder.INT64, "batch", "sequence");
        if (s.tokenTypes) {
            g.input("token_type_ids", GraphBuilder.INT64, "batch", "sequence");
        }
        shape2 = g.op("/shape", "Shape", List.of("input_ids"));
        String seq = g.op("/shape", "Gather", List.of(shape2, g.ints(true, 1)), attr("axis", 0));
        positionRange = g.op("/positions", "Range", List.of(g.ints(true, 0), seq, g.ints(true, 1)));

        String x = embeddings();
        for (int l = 0; l < d.layers(); l++) {
            if (residualStream) {
                residualOutput(l, x);
            }
            x = block(l, x);
        }
        if (residualStream) {
            residualOutput(d.layers(), x);
        }
        if (s.causal) {
            String h = x;
            if (find(-1, Role.FINAL_NORM, false).isPresent()) {
                h = norm("/final_norm", h, -1, Role.FINAL_NORM);
            }
            Optional<Weight> projectOut = find(-1, Role.OUTPUT_PROJECTION, false);
            if (projectOut.isPresent()) {
                h = linear("/project_out", h, projectOut.get(), null);
            }
            Optional<Weight> head = find(-1, Role.LM_HEAD, false);
            Weight w = head.isPresent() && !d.tied() ? head.get() : require(-1, Role.EMBEDDING);
            String logits = softcap("/lm_head/softcap", linear("/lm_head", h, w, null), s.logitSoftcap);
            g.opTo("logits", "/lm_head", "Reshape", List.of(logits, shapeBs(d.vocab())));
            g.output("logits", GraphBuilder.FLOAT, "batch", "sequence", (long) d.vocab());
        } else {
            String last = g.opTo("last_hidden_state", "/output", "Reshape", List.of(x, shapeBs(d.hidden())));
            g.output("last_hidden_state", GraphBuilder.FLOAT, "batch", "sequence", (long) d.hidden());
            Optional<Weight> pooler = find(-1, Role.POOLER, false);
            if (pooler.isPresent()) {
                // BertPooler: tanh(dense(last_hidden_state[:, 0])).
                String first = g.op("/pooler", "Gather", List.of(last, g.ints(true, 0)), attr("axis", 1));
                String dense = linear("/pooler/dense", first, pooler.get(), bias(-1, Role.POOLER));
                g.opTo("pooler_output", "/pooler", "Tanh", List.of(dense));
                g.output("pooler_output", GraphBuilder.FLOAT, "batch", (long) d.hidden());
            }
        }
        if (residualStream) {
            for (int l = 0; l <= d.layers(); l++) {
                g.output("hidden_states." + l, GraphBuilder.FLOAT, "batch", "sequence", (long) d.hidden());
            }
        }
        refuseUnused();
        return new Built(g.build(), initializers);
    }

    /**
     * Every weight must be read by the graph: a weight the export skips would make ONNX Runtime judge a different
     * model than the checkpoint (and {@code validate} compare two equally wrong graphs). Buffers (rotary inverse
     * frequencies, position ids, masks) are not parameters: the graph computes them from config.json, as transformers
     * does.
     */
    private void refuseUnused() {
        List<Weight> unused = new ArrayList<>();
        for (Weight w : wg.weights()) {
            if (w.role() != Role.BUFFER && !used.contains(w.name())) {
                unused.add(w);
            }
        }
        if (unused.isEmpty()) {
            return;
        }
        Weight first = unused.get(0);
        String file = first.tensor()
                .fileRegion()
                .map(r -> r.path().getFileName().toString())
                .orElse(wg.checkpoint().location().getFileName().toString());
        StringBuilder names = new StringBuilder();
        for (Weight w : unused) {
            names.append(names.length() > 0 ? ", " : "")
                    .append('\'')
                    .append(w.name())
                    .append("' (")
                    .append(w.role().id())
                    .append(w.isBias() ? " bias" : "")
                    .append(')');
        }
        boolean tiedHead = first.role() == Role.LM_HEAD && d.tied();
        throw new InvalidInputException(file + ": tensor '" + first.name() + "' is not used by the " + s.family
                + " export; expected only the family's declared weights that its graph computes with, found "
                + unused.size() + " unused: " + names
                + (tiedHead
                        ? "; hint: tie_word_embeddings is true, so the head is the embedding and this tensor would be"
                                + " ignored; set tie_word_embeddings to false or remove the tensor"
                        : ""));
    }

    private void residualOutput(int index, String x) {
        g.opTo("hidden_states." + index, "/hidden_states." + index, "Reshape", List.of(x, shapeBs(d.hidden())));
    }

    /** {@code [batch, seq, tail...]} as an int64 shape value. */
    private String shapeBs(long... tail) {
        StringBuilder k = new StringBuilder();
        for (long t : tail) {
            k.append(t).append(',');
        }
        return shapes.computeIfAbsent(
                k.toString(), key -> g.op("/shape", "Concat", List.of(shape2, g.ints(false, tail)), attr("axis", 0)));
    }

    // -------------------------------------------------------------------------------------------------------------
    // Weights

    private static void checkDType(Weight w) {
        checkDType(w.tensor(), w.name());
    }

    private static void checkDType(Tensor tensor, String name) {
        DType t = tensor.dtype();
        if (t != DType.F32 && t != DType.F16 && t != DType.BF16 && t != DType.F64) {
            throw InvalidInputException.of(
                    "tensor '" + name + "'",
                    "cannot export weights stored as " + t,
                    "F32, F16, BF16 or F64",
                    t + "; hint: convert the checkpoint to f32 or bf16 first");
        }
    }

    /** The weight as float32 row blocks of at most {@code maxBytes} each (one block when it fits). */
    private List<Block> blocks(Weight w) {
        used.add(w.name());
        List<Block> done = blocks.get(w.name());
        if (done != null) {
            return done;
        }
        checkDType(w);
        Tensor t = w.tensor();
        long rows = t.shape().length == 0 ? 1 : t.shape()[0];
        long bytes = t.byteSize();
        List<Block> out = new ArrayList<>();
        if (bytes <= maxBytes || t.shape().length < 2) {
            out.add(new Block(stub(w.name(), t), rows));
        } else {
            long rowBytes = bytes / rows;
            long per = maxBytes / rowBytes;
            if (per < 1) {
                throw InvalidInputException.of(
                        "tensor '" + w.name() + "'",
                        "one row is larger than the in-memory tensor limit",
                        "rows of at most " + maxBytes + " bytes",
                        rowBytes + " bytes");
            }
            for (long start = 0; start < rows; start += per) {
                long end = Math.min(rows, start + per);
                String name = w.name() + "/rows_" + start + "_" + end;
                out.add(new Block(stub(name, new RowBlock(t, name, start, end)), end - start));
            }
        }
        blocks.put(w.name(), out);
        return out;
    }

    /** A weight used whole (norms, biases): one float32 value. */
    private String single(Weight w) {
        List<Block> b = blocks(w);
        if (b.size() != 1) {
            throw InvalidInputException.of(
                    "tensor '" + w.name() + "'",
                    "too large to export as one in-memory tensor, and its use cannot be split by rows",
                    "at most " + maxBytes + " bytes",
                    w.tensor().byteSize() + " bytes");
        }
        return b.get(0).value();
    }

    /** Registers an initializer stub for {@code t}; returns its float32 value (behind a Cast for f16/bf16/f64). */
    private String stub(String name, Tensor t) {
        TensorProto.Builder p =
                TensorProto.newBuilder().setName(name).setDataType(t.dtype().onnxCode());
        for (long dim : t.shape()) {
            p.addDims(dim);
        }
        p.setDataLocation(TensorProto.DataLocation.EXTERNAL)
                .addExternalData(entry("location", IN_MEMORY))
                .addExternalData(entry("offset", "0"))
                .addExternalData(entry("length", Long.toString(t.byteSize())));
        g.initializer(p.build());
        initializers.put(name, t);
        if (t.dtype() == DType.F32) {
            return name;
        }
        return g.op("/weights/" + name, "Cast", List.of(name), attr("to", GraphBuilder.FLOAT));
    }

    private static StringStringEntryProto entry(String k, String v) {
        return StringStringEntryProto.newBuilder().setKey(k).setValue(v).build();
    }

    // -------------------------------------------------------------------------------------------------------------
    // Building blocks

    /**
     * {@code x·Wᵀ + b} for {@code x} {@code [N, in]} and {@code W} {@code [out, in]} (or {@code x·W + b} for a
     * Conv1D {@code [in, out]}). A weight split by rows gives column blocks of the output, concatenated ({@code [out,
     * in]}), or partial products over slices of the input, summed ({@code [in, out]}).
     */
    private String linear(String scope, String x, Weight w, Weight bias) {
        boolean inOut = w.spec().inOut();
        String b = bias == null ? null : single(bias);
        if (w.tensor() instanceof LowRankTensor) {
            // A factorised weight (scion lowrank): two Gemms, x·Aᵀ·Bᵀ ([out, in] storage: W = B·A) or x·A·B.
            LowRankTensor f = (LowRankTensor) w.tensor();
            used.add(w.name());
            Tensor first = inOut ? f.left() : f.right();
            Tensor second = inOut ? f.right() : f.left();
            checkDType(first, w.name());
            checkDType(second, w.name());
            String h = g.op(scope, "Gemm", List.of(x, stub(first.name(), first)), attr("transB", inOut ? 0 : 1));
            String y2 = stub(second.name(), second);
            List<String> in = b == null ? List.of(h, y2) : List.of(h, y2, b);
            return g.op(scope, "Gemm", in, attr("transB", inOut ? 0 : 1));
        }
        List<Block> parts = blocks(w);
        if (parts.size() == 1) {
            List<String> in = b == null
                    ? List.of(x, parts.get(0).value())
                    : List.of(x, parts.get(0).value(), b);
            return g.op(scope, "Gemm", in, attr("transB", inOut ? 0 : 1));
        }
        List<String> outs = new ArrayList<>();
        long start = 0;
        for (Block p : parts) {
            if (inOut) {
                String xs = g.op(
                        scope,
                        "Slice",
                        List.of(x, g.ints(false, start), g.ints(false, start + p.rows()), g.ints(false, 1)));
                outs.add(g.op(scope, "Gemm", List.of(xs, p.value()), attr("transB", 0)));
            } else {
                outs.add(g.op(scope, "Gemm", List.of(x, p.value()), attr("transB", 1)));
            }
            start += p.rows();
        }
        String y = inOut ? g.op(scope, "Sum", outs) : g.op(scope, "Concat", outs, attr("axis", 1));
        return b == null ? y : g.op(scope, "Add", List.of(y, b));
    }

    private Weight bias(int layer, Role role) {
        return find(layer, role, true).orElse(null);
    }

    /** Rows of a table at int64 indices; a table split by rows is read block by block and selected with Where. */
    private String gather(String scope, Weight table, String ids) {
        List<Block> parts = blocks(table);
        if (parts.size() == 1) {
            return g.op(scope, "Gather", List.of(parts.get(0).value(), ids));
        }
        String acc = null;
        long start = 0;
        for (Block p : parts) {
            String local = g.op(scope, "Sub", List.of(ids, g.ints(true, start)));
            String idx = g.op(scope, "Clip", List.of(local, g.ints(true, 0), g.ints(true, p.rows() - 1)));
            String rows = g.op(scope, "Gather", List.of(p.value(), idx));
            if (acc == null) {
                acc = rows;
            } else {
                String lo = g.op(scope, "GreaterOrEqual", List.of(ids, g.ints(true, start)));
                String hi = g.op(scope, "Less", List.of(ids, g.ints(true, start + p.rows())));
                String in = g.op(scope, "And", List.of(lo, hi));
                String in3 = g.op(scope, "Unsqueeze", List.of(in, g.ints(false, -1)));
                acc = g.op(scope, "Where", List.of(in3, rows, acc));
            }
            start += p.rows();
        }
        return acc;
    }

    private String norm(String scope, String x, int layer, Role role) {
        Weight w = require(layer, role);
        String gamma = single(w);
        if (s.norm == Norm.LAYER) {
            Weight b = find(layer, role, true)
                    .orElseThrow(() -> new InvalidInputException(wg.config().source() + ": LayerNorm '" + w.name()
                            + "' has no bias; expected a bias beside the weight, found none"));
            return g.op(
                    scope,
                    "LayerNormalization",
                    List.of(x, gamma, single(b)),
                    attr("axis", -1),
                    attr("epsilon", s.eps));
        }
        // RMSNorm in float32: x / sqrt(mean(x²) + eps) · γ  (Gemma: · (1 + γ)).
        String sq = g.op(scope, "Pow", List.of(x, g.scalar(2f)));
        String mean = g.op(scope, "ReduceMean", List.of(sq), attrs("axes", -1), attr("keepdims", 1));
        String den = g.op(scope, "Sqrt", List.of(g.op(scope, "Add", List.of(mean, g.scalar(s.eps)))));
        String y = g.op(scope, "Div", List.of(x, den));
        if (s.norm == Norm.RMS_PLUS_ONE) {
            gamma = g.op(scope, "Add", List.of(g.scalar(1f), gamma));
        }
        return g.op(scope, "Mul", List.of(y, gamma));
    }

    private String activation(String scope, String x) {
        switch (s.activation) {
            case SILU:
                return g.op(scope, "Mul", List.of(x, g.op(scope, "Sigmoid", List.of(x))));
            case GELU_ERF: {
                // torch: x * 0.5 * (1 + erf(x * M_SQRT1_2))
                String erf = g.op(
                        scope, "Erf", List.of(g.op(scope, "Mul", List.of(x, g.scalar((float) (1 / Math.sqrt(2)))))));
                String half = g.op(scope, "Mul", List.of(x, g.scalar(0.5f)));
                return g.op(scope, "Mul", List.of(half, g.op(scope, "Add", List.of(g.scalar(1f), erf))));
            }
            case GELU_TANH: {
                // 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))
                String x3 = g.op(scope, "Mul", List.of(g.op(scope, "Mul", List.of(x, x)), x));
                String inner = g.op(scope, "Add", List.of(x, g.op(scope, "Mul", List.of(x3, g.scalar(0.044715f)))));
                String t = g.op(scope, "Tanh", List.of(g.op(scope, "Mul", List.of(inner, g.scalar((float)
                        Math.sqrt(2 / Math.PI))))));
                String half = g.op(scope, "Mul", List.of(x, g.scalar(0.5f)));
                return g.op(scope, "Mul", List.of(half, g.op(scope, "Add", List.of(g.scalar(1f), t))));
            }
            case QUICK_GELU:
                return g.op(
                        scope,
                        "Mul",
                        List.of(x, g.op(scope, "Sigmoid", List.of(g.op(scope, "Mul", List.of(x, g.scalar(1.702f)))))));
            case RELU:
                return g.op(scope, "Relu", List.of(x));
            default:
                throw new IllegalStateException("activation " + s.activation);
        }
    }

    // -------------------------------------------------------------------------------------------------------------
    // Embeddings

    private String embeddings() {
        Weight table = require(-1, Role.EMBEDDING);
        String e = gather("/embed_tokens", table, "input_ids"); // [B, S, E]
        if (s.embeddingScale != 0f) {
            e = g.op("/embed_tokens", "Mul", List.of(e, g.scalar(s.embeddingScale)));
        }
        Optional<Weight> projectIn = find(-1, Role.EMBEDDING_PROJECTION, false);
        if (projectIn.isPresent()) {
            long width = table.tensor().shape()[1];
            String flat = g.op("/project_in", "Reshape", List.of(e, g.ints(false, -1, width)));
            String p = linear("/project_in", flat, projectIn.get(), null);
            e = g.op("/project_in", "Reshape", List.of(p, shapeBs(d.hidden())));
        }
        if (s.tokenTypes) {
            String types = gather("/embed_token_types", require(-1, Role.TOKEN_TYPE_EMBEDDING), "token_type_ids");
            e = g.op("/embeddings", "Add", List.of(e, types));
        }
        if (s.positions == Positions.LEARNED) {
            String idx = positionRange;
            if (s.positionOffset != 0) {
                idx = g.op("/positions", "Add", List.of(idx, g.ints(true, s.positionOffset)));
            }
            String pe = gather("/embed_positions", require(-1, Role.POSITION_EMBEDDING), idx); // [S, H]
            e = g.op("/embeddings", "Add", List.of(e, pe));
        } else if (s.positions == Positions.LEARNED_FROM_MASK) {
            // OPT: position = cumsum(mask) * mask - 1, then + offset into the table.
            String cum = g.op("/positions", "CumSum", List.of("attention_mask", g.ints(true, 1)));
            String masked = g.op("/positions", "Mul", List.of(cum, "attention_mask"));
            String idx = g.op("/positions", "Add", List.of(masked, g.ints(true, s.positionOffset - 1L)));
            String pe = gather("/embed_positions", require(-1, Role.POSITION_EMBEDDING), idx); // [B, S, H]
            e = g.op("/embeddings", "Add", List.of(e, pe));
        } else {
            ropeTables();
        }
        String x = g.op("/embeddings", "Reshape", List.of(e, g.ints(false, -1, d.hidden())));
        if (find(-1, Role.EMBEDDING_NORM, false).isPresent()) {
            x = norm("/embeddings/norm", x, -1, Role.EMBEDDING_NORM);
        }
        return x;
    }

    /** cos and sin of {@code position · inv_freq}, concatenated twice (rotate-half convention): {@code [S, rot]}. */
    private void ropeTables() {
        String pos = g.op("/rope", "Cast", List.of(positionRange), attr("to", GraphBuilder.FLOAT));
        String col = g.op("/rope", "Unsqueeze", List.of(pos, g.ints(false, 1)));
        String freqs = g.op("/rope", "Mul", List.of(col, g.floats("/rope", s.invFreq)));
        String emb = g.op("/rope", "Concat", List.of(freqs, freqs), attr("axis", 1));
        cos = g.op("/rope", "Cos", List.of(emb));
        sin = g.op("/rope", "Sin", List.of(emb));
    }

    /** {@code x·cos + rotate_half(x)·sin} on the first {@code rot} dims of each head of {@code x} {@code [B,n,S,hd]}. */
    private String rope(String scope, String x) {
        int rot = s.rotaryDim;
        int hd = d.headDim();
        String axes = g.ints(false, 3);
        String xr = x;
        String pass = null;
        if (rot < hd) {
            xr = g.op(scope, "Slice", List.of(x, g.ints(false, 0), g.ints(false, rot), axes));
            pass = g.op(scope, "Slice", List.of(x, g.ints(false, rot), g.ints(false, hd), axes));
        }
        String x1 = g.op(scope, "Slice", List.of(xr, g.ints(false, 0), g.ints(false, rot / 2), axes));
        String x2 = g.op(scope, "Slice", List.of(xr, g.ints(false, rot / 2), g.ints(false, rot), axes));
        String rotated = g.op(scope, "Concat", List.of(g.op(scope, "Neg", List.of(x2)), x1), attr("axis", 3));
        String out = g.op(
                scope, "Add", List.of(g.op(scope, "Mul", List.of(xr, cos)), g.op(scope, "Mul", List.of(rotated, sin))));
        return pass == null ? out : g.op(scope, "Concat", List.of(out, pass), attr("axis", 3));
    }

    // -------------------------------------------------------------------------------------------------------------
    // Blocks

    private String block(int l, String x) {
        String sc = "/layers." + l;
        if (s.postLn) {
            // A family that declares post-norm roles (bert) uses them; a switchable one (OPT) its usual norms.
            boolean declared = wg.architecture().weights().stream().anyMatch(w -> w.role() == Role.ATTN_POST_NORM);
            Role attnNorm = declared ? Role.ATTN_POST_NORM : Role.ATTN_NORM;
            Role mlpNorm = declared ? Role.MLP_POST_NORM : Role.MLP_NORM;
            String a = attention(l, x);
            x = norm(sc + "/attn_norm", g.op(sc, "Add", List.of(a, x)), l, attnNorm);
            String m = mlp(l, x);
            return norm(sc + "/mlp_norm", g.op(sc, "Add", List.of(m, x)), l, mlpNorm);
        }
        if (s.parallelResidual) {
            String a = attention(l, norm(sc + "/attn_norm", x, l, Role.ATTN_NORM));
            String m = mlp(l, norm(sc + "/mlp_norm", x, l, Role.MLP_NORM));
            return g.op(sc, "Add", List.of(g.op(sc, "Add", List.of(m, a)), x));
        }
        String a = attention(l, norm(sc + "/attn_norm", x, l, Role.ATTN_NORM));
        a = outNorm(sc + "/attn_out_norm", a, l, Role.ATTN_OUT_NORM);
        x = g.op(sc, "Add", List.of(x, a));
        String m = mlp(l, norm(sc + "/mlp_norm", x, l, Role.MLP_NORM));
        m = outNorm(sc + "/mlp_out_norm", m, l, Role.MLP_OUT_NORM);
        return g.op(sc, "Add", List.of(x, m));
    }

    /** A branch's output norm before the residual add (Gemma 2's sandwich norms); the branch as is without one. */
    private String outNorm(String scope, String branch, int l, Role role) {
        return find(l, role, false).isPresent() ? norm(scope, branch, l, role) : branch;
    }

    /** {@code c·tanh(x/c)}, Gemma 2's soft-cap; {@code x} for {@code c = 0}. */
    private String softcap(String scope, String x, float c) {
        if (c == 0f) {
            return x;
        }
        String t = g.op(scope, "Tanh", List.of(g.op(scope, "Div", List.of(x, g.scalar(c)))));
        return g.op(scope, "Mul", List.of(t, g.scalar(c)));
    }

    private String mlp(int l, String h) {
        String sc = "/layers." + l + "/mlp";
        String a;
        if (s.gated) {
            String gate = linear(sc + "/gate_proj", h, require(l, Role.MLP_GATE), bias(l, Role.MLP_GATE));
            String up = linear(sc + "/up_proj", h, require(l, Role.MLP_UP), bias(l, Role.MLP_UP));
            a = g.op(sc, "Mul", List.of(activation(sc + "/act", gate), up));
        } else {
            a = activation(sc + "/act", linear(sc + "/up_proj", h, require(l, Role.MLP_UP), bias(l, Role.MLP_UP)));
        }
        return linear(sc + "/down_proj", a, require(l, Role.MLP_DOWN), bias(l, Role.MLP_DOWN));
    }

    /** {@code [N, n·hd]} → {@code [B, n, S, hd]}. */
    private String heads(String scope, String x2, int n) {
        String r = g.op(scope, "Reshape", List.of(x2, shapeBs(n, d.headDim())));
        return g.op(scope, "Transpose", List.of(r), attrs("perm", 0, 2, 1, 3));
    }

    private String attention(int l, String h) {
        String sc = "/layers." + l + "/attn";
        int heads = d.heads();
        int kv = d.kvHeads();
        int hd = d.headDim();
        String q;
        String k;
        String v;
        Optional<Weight> fused = find(l, Role.ATTN_QKV, false);
        if (fused.isPresent()) {
            String qkv = linear(sc + "/qkv", h, fused.get(), bias(l, Role.ATTN_QKV));
            if ("per_head".equals(fused.get().spec().qkvLayout().orElse("blocks"))) {
                // GPT-NeoX: [N, heads·3·hd] with (q, k, v) of each head side by side.
                if (kv != heads) {
                    throw InvalidInputException.of(
                            "tensor '" + fused.get().name() + "'",
                            "a per-head fused q/k/v projection needs as many key/value heads as query heads",
                            heads + " key/value heads",
                            kv);
                }
                String r = g.op(sc, "Reshape", List.of(qkv, shapeBs(heads, 3L * hd)));
                String tr = g.op(sc, "Transpose", List.of(r), attrs("perm", 0, 2, 1, 3));
                String[] parts = g.ops(sc, "Split", 3, List.of(tr, g.ints(false, hd, hd, hd)), attr("axis", 3));
                q = parts[0];
                k = parts[1];
                v = parts[2];
            } else {
                String[] parts = g.ops(
                        sc,
                        "Split",
                        3,
                        List.of(qkv, g.ints(false, (long) heads * hd, (long) kv * hd, (long) kv * hd)),
                        attr("axis", 1));
                q = heads(sc + "/q", scaleQuery(sc, parts[0], l), heads);
                k = heads(sc + "/k", parts[1], kv);
                v = heads(sc + "/v", parts[2], kv);
            }
        } else {
            String q2 = linear(sc + "/q_proj", h, require(l, Role.ATTN_Q), bias(l, Role.ATTN_Q));
            q = heads(sc + "/q", scaleQuery(sc, q2, l), heads);
            k = heads(sc + "/k", linear(sc + "/k_proj", h, require(l, Role.ATTN_K), bias(l, Role.ATTN_K)), kv);
            v = heads(sc + "/v", linear(sc + "/v_proj", h, require(l, Role.ATTN_V), bias(l, Role.ATTN_V)), kv);
        }
        q = headNorm(sc + "/q_norm", q, l, Role.ATTN_Q_NORM);
        k = headNorm(sc + "/k_norm", k, l, Role.ATTN_K_NORM);
        if (s.positions == Positions.ROPE) {
            q = rope(sc + "/rope_q", q);
            k = rope(sc + "/rope_k", k);
        }
        int group = heads / kv;
        String q5 = g.op(sc, "Reshape", List.of(q, g.ints(false, 0, kv, group, -1, hd))); // [B, kv, group, S, hd]
        String k5 = g.op(sc, "Unsqueeze", List.of(k, g.ints(false, 2))); // [B, kv, 1, S, hd]
        String v5 = g.op(sc, "Unsqueeze", List.of(v, g.ints(false, 2)));
        String kt = g.op(sc, "Transpose", List.of(k5), attrs("perm", 0, 1, 2, 4, 3));
        String scores = g.op(sc, "MatMul", List.of(q5, kt)); // [B, kv, group, S, S]
        if (!s.scaleQuery) {
            scores = g.op(sc, "Mul", List.of(scores, g.scalar(s.attentionScale[l])));
        }
        scores = softcap(sc + "/softcap", scores, s.attentionSoftcap);
        scores = g.op(sc, "Where", List.of(mask(s.window[l]), scores, g.scalar(MASKED)));
        String p = g.op(sc, "Softmax", List.of(scores), attr("axis", -1));
        String ctx = g.op(sc, "MatMul", List.of(p, v5)); // [B, kv, group, S, hd]
        ctx = g.op(sc, "Reshape", List.of(ctx, g.ints(false, 0, heads, -1, hd)));
        ctx = g.op(sc, "Transpose", List.of(ctx), attrs("perm", 0, 2, 1, 3)); // [B, S, heads, hd]
        ctx = g.op(sc, "Reshape", List.of(ctx, g.ints(false, -1, (long) heads * hd)));
        return linear(sc + "/o_proj", ctx, require(l, Role.ATTN_O), bias(l, Role.ATTN_O));
    }

    /**
     * Qwen3's per-head query/key norm, before RoPE: the family's norm over the last axis of {@code x} {@code [B, n, S,
     * hd]} with one {@code [head_dim]} weight shared by every head; {@code x} unchanged when the layer has none.
     */
    private String headNorm(String scope, String x, int l, Role role) {
        Optional<Weight> w = find(l, role, false);
        if (w.isEmpty()) {
            return x;
        }
        if (!w.get().spec().axes().equals(List.of(scion.io.arch.Axis.HEAD_DIM))) {
            throw InvalidInputException.of(
                    "tensor '" + w.get().name() + "'",
                    "the export applies " + role.id() + " per head",
                    "axes [head_dim]",
                    w.get().spec().axes());
        }
        return norm(scope, x, l, role);
    }

    private String scaleQuery(String scope, String q2, int l) {
        return s.scaleQuery ? g.op(scope, "Mul", List.of(q2, g.scalar(s.attentionScale[l]))) : q2;
    }

    /**
     * Which keys each query sees, {@code [B, 1, 1, S, S]} bool (or {@code [B, 1, 1, 1, S]} for encoders): not padding
     * ({@code attention_mask} = 1) and, for causal models, not later than the query and within the sliding window.
     */
    private String mask(int window) {
        return masks.computeIfAbsent(window, w -> {
            String sc = "/mask";
            String pad = g.op(sc, "Cast", List.of("attention_mask"), attr("to", GraphBuilder.BOOL));
            pad = g.op(sc, "Unsqueeze", List.of(pad, g.ints(false, 1, 2, 3))); // [B, 1, 1, 1, S]
            if (!s.causal) {
                return pad;
            }
            String row = g.op(sc, "Unsqueeze", List.of(positionRange, g.ints(false, 1))); // query i: [S, 1]
            String col = g.op(sc, "Unsqueeze", List.of(positionRange, g.ints(false, 0))); // key j: [1, S]
            String causal = g.op(sc, "LessOrEqual", List.of(col, row));
            if (w > 0) {
                String lo = g.op(sc, "Sub", List.of(row, g.ints(true, w)));
                causal = g.op(sc, "And", List.of(causal, g.op(sc, "Greater", List.of(col, lo))));
            }
            return g.op(sc, "And", List.of(causal, pad));
        });
    }
}
