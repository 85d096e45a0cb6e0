package scion.merge.fisher;

import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.arch.Dims;
import scion.io.arch.Role;
import scion.io.arch.WeightGraph.Weight;
import scion.io.tensor.DType;
import scion.io.tensor.Tensor;

/**
 * A float32 forward and backward pass of one transformer, in Java, for per-parameter gradients (ONNX Runtime runs
 * only the forward). It computes what {@code scion.io.runtime.export.OnnxExporter} builds as ONNX for the same model,
 * one sequence at a time without padding:
 *
 * <ul>
 *   <li>BERT (post-LN): {@code x₀ = LN(E[id] + P[pos] + T[0])}; per block {@code x' = LN(x + Attn(x))}, {@code x'' =
 *       LN(x' + W₂·gelu(W₁x' + b₁) + b₂)}; output {@code last_hidden_state [T, hidden]}.
 *   <li>llama, mistral, qwen2 (pre-RMSNorm): {@code x₀ = E[id]}; per block {@code x' = x + Attn(rms(x))} with RoPE
 *       (rotate-half) on q and k, grouped-query heads, causal mask and optional sliding window; {@code x'' = x' +
 *       W_d·(silu(W_g h) ⊙ W_u h)}, {@code h = rms(x')}; output {@code logits = rms(x_L)·W_headᵀ [T, vocab]} (the
 *       embedding when tied).
 * </ul>
 *
 * <p>Weights are read once into float32 arrays in the architecture's axis order ({@code [out, in]}, as PyTorch's
 * {@code Linear.weight}); ONNX weights stored {@code [in, out]} are transposed on load, and gradients are reported in
 * the same {@code [out, in]} order. Activations are kept for one sequence at a time ({@link Pass}); gradients
 * accumulate into one float32 array per weight until {@link Param#grad} is read and cleared by the caller.
 *
 * <p>Memory: the weights in float32 plus one gradient array of the same size, plus one sequence's activations
 * (about {@code layers · T · (8·hidden + 3·ffn) + layers · heads · T²} floats).
 */
public final class GradientNet {

    /** One trainable tensor: its value and its gradient, both float32 in the architecture's axis order. */
    public static final class Param {
        final Weight weight;
        final float[] value;
        final float[] grad;

        Param(Weight weight, float[] value) {
            this.weight = weight;
            this.value = value;
            this.grad = new float[value.length];
        }

        /** The weight this is (name, role, stored layout). */
        public Weight weight() {
            return weight;
        }

        /** The gradient accumulated since it was last cleared, in {@code spec.axes()} order. */
        public float[] grad() {
            return grad;
        }

        /** The value, in {@code spec.axes()} order. */
        public float[] value() {
            return value;
        }
    }

    private final NetSettings s;
    private final Dims d;
    private final List<Param> params;
    private final Map<String, Param> byKey = new HashMap<>();
    private final String where;

    private GradientNet(NetSettings s, Dims d, List<Param> params, String where) {
        this.s = s;
        this.d = d;
        this.params = params;
        this.where = where;
        for (Param p : params) {
            byKey.put(key(p.weight.layer(), p.weight.role(), p.weight.isBias()), p);
        }
    }

    /**
     * Reads a model's weights into float32 arrays.
     *
     * @throws InvalidInputException for a family or setting the pass does not implement, or a missing weight
     */
    public static GradientNet load(Model model) {
        NetSettings s = NetSettings.of(model);
        Dims d = model.graph().dims();
        List<Param> params = new ArrayList<>();
        for (Weight w : model.graph().weights()) {
            if (w.role() == Role.BUFFER) {
                continue;
            }
            Tensor t = w.tensor();
            DType dt = t.dtype();
            if (dt != DType.F32 && dt != DType.F16 && dt != DType.BF16 && dt != DType.F64) {
                throw InvalidInputException.of(
                        "tensor '" + w.name() + "'", "not a floating-point weight", "F32, F16, BF16 or F64", dt);
            }
            float[] v = t.toFloats();
            if (w.transposed() && t.shape().length == 2) {
                v = FisherOps.transpose(v, Math.toIntExact(t.shape()[0]), Math.toIntExact(t.shape()[1]));
            }
            params.add(new Param(w, v));
        }
        GradientNet net = new GradientNet(
                s, d, Collections.unmodifiableList(params), model.config().source());
        net.checkComplete();
        return net;
    }

    private void checkComplete() {
        List<Role> global = new ArrayList<>(List.of(Role.EMBEDDING));
        List<Role> perLayer = new ArrayList<>(
                List.of(Role.ATTN_Q, Role.ATTN_K, Role.ATTN_V, Role.ATTN_O, Role.MLP_UP, Role.MLP_DOWN));
        if (bert()) {
            global.addAll(List.of(Role.POSITION_EMBEDDING, Role.TOKEN_TYPE_EMBEDDING, Role.EMBEDDING_NORM));
            perLayer.addAll(List.of(Role.ATTN_POST_NORM, Role.MLP_POST_NORM));
        } else {
            global.add(Role.FINAL_NORM);
            perLayer.addAll(List.of(Role.ATTN_NORM, Role.MLP_NORM, Role.MLP_GATE));
        }
        for (Role r : global) {
            require(-1, r, false);
        }
        for (int l = 0; l < d.layers(); l++) {
            for (Role r : perLayer) {
                require(l, r, false);
            }
        }
        if (bert()) {
            for (Role r : List.of(Role.ATTN_Q, Role.ATTN_K, Role.ATTN_V, Role.ATTN_O, Role.MLP_UP, Role.MLP_DOWN)) {
                for (int l = 0; l < d.layers(); l++) {
                    require(l, r, true);
                }
            }
        }
    }

    private static String key(int layer, Role role, boolean bias) {
        return layer + "/" + role + "/" + bias;
    }

    private Param require(int layer, Role role, boolean bias) {
        Param p = byKey.get(key(layer, role, bias));
        if (p == null) {
            throw InvalidInputException.of(
                    where,
                    "no " + role.id() + (bias ? " bias" : " weight") + (layer >= 0 ? " in layer " + layer : ""),
                    "one for a " + s.family + " model",
                    "none");
        }
        return p;
    }

    private float[] val(int layer, Role role, boolean bias) {
        Param p = byKey.get(key(layer, role, bias));
        return p == null ? null : p.value;
    }

    private float[] grad(int layer, Role role, boolean bias) {
        Param p = byKey.get(key(layer, role, bias));
        return p == null ? null : p.grad;
    }

    private boolean bert() {
        return !s.causal;
    }

    /** The trainable tensors, in storage order. */
    public List<Param> params() {
        return params;
    }

    /** Whether the output is next-token logits (else the encoder's last hidden state). */
    public boolean causal() {
        return s.causal;
    }

    public Dims dims() {
        return d;
    }

    /** The family this pass computes. */
    public String family() {
        return s.family;
    }

    /** Width of the output rows: the vocabulary (causal) or the hidden size (encoder). */
    public int outputWidth() {
        return s.causal ? d.vocab() : d.hidden();
    }

    /** The longest sequence the model accepts (its position table for BERT; unbounded for rotary models). */
    public int maxLength() {
        return bert() ? d.positions() : Integer.MAX_VALUE;
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Forward

    /** One block's activations. */
    private static final class LayerCache {
        float[] xIn; // [T, H] block input
        float[] h1; // [T, H] input to q/k/v (llama: rms(xIn)); bert: xIn
        float[] r1; // [T] rms reciprocal (llama)
        float[] q; // [T, heads·hd] after RoPE
        float[] k; // [T, kv·hd] after RoPE
        float[] v; // [T, kv·hd]
        float[] p; // [heads, T, T] attention probabilities
        float[] ctx; // [T, heads·hd]
        float[] xhat1; // [T, H] bert: normalised (a + x)
        float[] rstd1; // [T]
        float[] mid; // [T, H] llama: x + attn; bert: LN1 output
        float[] h2; // [T, H] input to the MLP
        float[] r2; // [T]
        float[] gate; // [T, F] llama gate pre-activation
        float[] up; // [T, F] up pre-activation (bert: pre-GELU)
        float[] act; // [T, F] input to down
        float[] actGrad; // [T, F] bert: gelu'(up)
        float[] xhat2; // [T, H]
        float[] rstd2; // [T]
    }

    /** The activations of one sequence, kept for {@link #backward}. */
    public final class Pass {
        final long[] ids;
        final int t;
        final LayerCache[] layers;
        float[] embXhat; // bert: [T, H]
        float[] embRstd;
        float[] xLast; // [T, H] output of the last block
        float[] rF; // [T] final rms reciprocal
        float[] hF; // [T, H] input to the head
        float[] cos; // [T, rot]
        float[] sin;
        float[] out; // [T, outputWidth]

        Pass(long[] ids) {
            this.ids = ids;
            this.t = ids.length;
            this.layers = new LayerCache[d.layers()];
        }

        /** The output rows: logits {@code [T, vocab]} or {@code last_hidden_state [T, hidden]}. */
        public float[] output() {
            return out;
        }

        public int length() {
            return t;
        }
    }

    /** Runs one sequence (no padding); the token type is 0 for BERT and positions run 0..T-1. */
    public Pass forward(long[] ids) {
        int t = ids.length;
        int h = d.hidden();
        if (t < 1 || t > maxLength()) {
            throw InvalidInputException.of(
                    "sequence", "length out of range", "1.." + maxLength() + " tokens", t + " tokens");
        }
        for (long id : ids) {
            if (id < 0 || id >= d.vocab()) {
                throw InvalidInputException.of(
                        "sequence", "token id outside the vocabulary", "0.." + (d.vocab() - 1), id);
            }
        }
        Pass ps = new Pass(ids);
        float[] emb = val(-1, Role.EMBEDDING, false);
        float[] x = new float[t * h];
        for (int i = 0; i < t; i++) {
            System.arraycopy(emb, (int) ids[i] * h, x, i * h, h);
        }
        if (bert()) {
            float[] pos = val(-1, Role.POSITION_EMBEDDING, false);
            float[] typ = val(-1, Role.TOKEN_TYPE_EMBEDDING, false);
            for (int i = 0; i < t; i++) {
                for (int j = 0; j < h; j++) {
                    x[i * h + j] = x[i * h + j] + typ[j] + pos[i * h + j];
                }
            }
            ps.embXhat = new float[t * h];
            ps.embRstd = new float[t];
            x = FisherOps.layerNorm(
                    x,
                    val(-1, Role.EMBEDDING_NORM, false),
                    val(-1, Role.EMBEDDING_NORM, true),
                    s.eps,
                    t,
                    h,
                    ps.embXhat,
                    ps.embRstd);
        } else {
            ropeTables(ps);
        }
        for (int l = 0; l < d.layers(); l++) {
            LayerCache c = new LayerCache();
            ps.layers[l] = c;
            x = bert() ? bertBlock(ps, l, c, x) : llamaBlock(ps, l, c, x);
        }
        ps.xLast = x;
        if (bert()) {
            ps.out = x;
        } else {
            ps.rF = new float[t];
            ps.hF = FisherOps.rmsNorm(x, val(-1, Role.FINAL_NORM, false), s.eps, t, h, ps.rF);
            ps.out = FisherOps.linear(ps.hF, head().value, null, t, h, d.vocab());
        }
        return ps;
    }

    /** The output head: lm_head, or the embedding when tied (or absent). */
    private Param head() {
        Param p = byKey.get(key(-1, Role.LM_HEAD, false));
        return p != null && !d.tied() ? p : require(-1, Role.EMBEDDING, false);
    }

    private void ropeTables(Pass ps) {
        int rot = s.rotaryDim;
        int half = rot / 2;
        ps.cos = new float[ps.t * rot];
        ps.sin = new float[ps.t * rot];
        for (int i = 0; i < ps.t; i++) {
            for (int j = 0; j < rot; j++) {
                float a = (float) i * s.invFreq[j % half];
                ps.cos[i * rot + j] = (float) Math.cos(a);
                ps.sin[i * rot + j] = (float) Math.sin(a);
            }
        }
    }

    private float[] bertBlock(Pass ps, int l, LayerCache c, float[] x) {
        int t = ps.t;
        int h = d.hidden();
        int f = d.ffn();
        c.xIn = x;
        c.h1 = x;
        float[] a = attention(ps, l, c, x);
        for (int i = 0; i < a.length; i++) {
            a[i] += x[i];
        }
        c.xhat1 = new float[t * h];
        c.rstd1 = new float[t];
        c.mid = FisherOps.layerNorm(
                a,
                val(l, Role.ATTN_POST_NORM, false),
                val(l, Role.ATTN_POST_NORM, true),
                s.eps,
                t,
                h,
                c.xhat1,
                c.rstd1);
        c.h2 = c.mid;
        c.up = FisherOps.linear(c.mid, val(l, Role.MLP_UP, false), val(l, Role.MLP_UP, true), t, h, f);
        c.act = new float[t * f];
        c.actGrad = new float[t * f];
        for (int i = 0; i < c.act.length; i++) {
            float u = c.up[i];
            double e = FisherOps.erf(u / Math.sqrt(2.0));
            c.act[i] = (float) (0.5 * u * (1.0 + e));
            c.actGrad[i] = (float) (0.5 * (1.0 + e) + u * Math.exp(-0.5 * u * u) / Math.sqrt(2 * Math.PI));
        }
        float[] m = FisherOps.linear(c.act, val(l, Role.MLP_DOWN, false), val(l, Role.MLP_DOWN, true), t, f, h);
        for (int i = 0; i < m.length; i++) {
            m[i] += c.mid[i];
        }
        c.xhat2 = new float[t * h];
        c.rstd2 = new float[t];
        return FisherOps.layerNorm(
                m, val(l, Role.MLP_POST_NORM, false), val(l, Role.MLP_POST_NORM, true), s.eps, t, h, c.xhat2, c.rstd2);
    }

    private float[] llamaBlock(Pass ps, int l, LayerCache c, float[] x) {
        int t = ps.t;
        int h = d.hidden();
        int f = d.ffn();
        c.xIn = x;
        c.r1 = new float[t];
        c.h1 = FisherOps.rmsNorm(x, val(l, Role.ATTN_NORM, false), s.eps, t, h, c.r1);
        float[] a = attention(ps, l, c, c.h1);
        for (int i = 0; i < a.length; i++) {
            a[i] += x[i];
        }
        c.mid = a;
        c.r2 = new float[t];
        c.h2 = FisherOps.rmsNorm(c.mid, val(l, Role.MLP_NORM, false), s.eps, t, h, c.r2);
        c.gate = FisherOps.linear(c.h2, val(l, Role.MLP_GATE, false), val(l, Role.MLP_GATE, true), t, h, f);
        c.up = FisherOps.linear(c.h2, val(l, Role.MLP_UP, false), val(l, Role.MLP_UP, true), t, h, f);
        c.act = new float[t * f];
        for (int i = 0; i < c.act.length; i++) {
            c.act[i] = FisherOps.silu(c.gate[i]) * c.up[i];
        }
        float[] m = FisherOps.linear(c.act, val(l, Role.MLP_DOWN, false), val(l, Role.MLP_DOWN, true), t, f, h);
        for (int i = 0; i < m.length; i++) {
            m[i] += c.mid[i];
        }
        return m;
    }

    /** Self-attention of {@code hIn [T, H]}; returns the output projection {@code [T, H]}. */
    private float[] attention(Pass ps, int l, LayerCache c, float[] hIn) {
        int t = ps.t;
        int h = d.hidden();
        int nh = d.heads();
        int nkv = d.kvHeads();
        int hd = d.headDim();
        c.q = FisherOps.linear(hIn, val(l, Role.ATTN_Q, false), val(l, Role.ATTN_Q, true), t, h, nh * hd);
        c.k = FisherOps.linear(hIn, val(l, Role.ATTN_K, false), val(l, Role.ATTN_K, true), t, h, nkv * hd);
        c.v = FisherOps.linear(hIn, val(l, Role.ATTN_V, false), val(l, Role.ATTN_V, true), t, h, nkv * hd);
        if (!bert()) {
            rope(ps, c.q, t, nh);
            rope(ps, c.k, t, nkv);
        }
        int group = nh / nkv;
        c.p = new float[nh * t * t];
        c.ctx = new float[t * nh * hd];
        int qw = nh * hd;
        int kw = nkv * hd;
        int window = s.window[l];
        // Heads of one key/value group go to one task: each task writes only its own rows of p, ctx.
        FisherOps.parallelFor(nkv, (gLo, gHi) -> {
            double[] row = new double[t];
            for (int hh = gLo * group; hh < gHi * group; hh++) {
                int g = hh / group;
                for (int i = 0; i < t; i++) {
                    int lo = 0;
                    int hi = t; // keys [lo, hi)
                    if (s.causal) {
                        hi = i + 1;
                        if (window > 0) {
                            lo = Math.max(0, i - window + 1);
                        }
                    }
                    float max = Float.NEGATIVE_INFINITY;
                    float[] sc = new float[hi - lo];
                    for (int j = lo; j < hi; j++) {
                        float dot = 0f;
                        int qo = i * qw + hh * hd;
                        int ko = j * kw + g * hd;
                        for (int e = 0; e < hd; e++) {
                            dot += c.q[qo + e] * c.k[ko + e];
                        }
                        float v = dot * s.scale;
                        sc[j - lo] = v;
                        max = Math.max(max, v);
                    }
                    double sum = 0;
                    for (int j = lo; j < hi; j++) {
                        row[j] = Math.exp(sc[j - lo] - max);
                        sum += row[j];
                    }
                    int po = (hh * t + i) * t;
                    int co = i * qw + hh * hd;
                    for (int j = lo; j < hi; j++) {
                        float pj = (float) (row[j] / sum);
                        c.p[po + j] = pj;
                        int vo = j * kw + g * hd;
                        for (int e = 0; e < hd; e++) {
                            c.ctx[co + e] += pj * c.v[vo + e];
                        }
                    }
                }
            }
        });
        return FisherOps.linear(c.ctx, val(l, Role.ATTN_O, false), val(l, Role.ATTN_O, true), t, qw, h);
    }

    /** In place: {@code x·cos + rotate_half(x)·sin} on the first rotaryDim dims of every head. */
    private void rope(Pass ps, float[] x, int t, int n) {
        int hd = d.headDim();
        int rot = s.rotaryDim;
        int half = rot / 2;
        float[] tmp = new float[rot];
        for (int i = 0; i < t; i++) {
            for (int hh = 0; hh < n; hh++) {
                int o = (i * n + hh) * hd;
                for (int j = 0; j < rot; j++) {
                    float rotated = j < half ? -x[o + j + half] : x[o + j - half];
                    tmp[j] = x[o + j] * ps.cos[i * rot + j] + rotated * ps.sin[i * rot + j];
                }
                System.arraycopy(tmp, 0, x, o, rot);
            }
        }
    }

    /** The transpose of {@link #rope} applied to a gradient, in place. */
    private void ropeBackward(Pass ps, float[] dy, int t, int n) {
        int hd = d.headDim();
        int rot = s.rotaryDim;
        int half = rot / 2;
        float[] tmp = new float[rot];
        for (int i = 0; i < t; i++) {
            for (int hh = 0; hh < n; hh++) {
                int o = (i * n + hh) * hd;
                for (int j = 0; j < rot; j++) {
                    // y[j] = x[j]·cos[j] + (j < half ? −x[j+half] : x[j−half])·sin[j]
                    float back = j < half
                            ? dy[o + j + half] * ps.sin[i * rot + j + half]
                            : -dy[o + j - half] * ps.sin[i * rot + j - half];
                    tmp[j] = dy[o + j] * ps.cos[i * rot + j] + back;
                }
                System.arraycopy(tmp, 0, dy, o, rot);
            }
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Backward

    /**
     * Adds {@code ∂(Σ dOut ⊙ output)/∂θ} to every {@link Param#grad}: the gradient of the scalar whose derivative with
     * respect to the output rows is {@code dOut} ({@code [T, outputWidth]}).
     */
    public void backward(Pass ps, float[] dOut) {
        int t = ps.t;
        int h = d.hidden();
        float[] dx;
        if (bert()) {
            dx = dOut.clone();
        } else {
            Param hp = head();
            float[] dh = FisherOps.linearBackward(dOut, ps.hF, hp.value, hp.grad, null, t, h, d.vocab(), true);
            Param fn = require(-1, Role.FINAL_NORM, false);
            dx = FisherOps.rmsNormBackward(dh, ps.xLast, ps.rF, fn.value, fn.grad, t, h);
        }
        for (int l = d.layers() - 1; l >= 0; l--) {
            dx = bert() ? bertBlockBackward(ps, l, ps.layers[l], dx) : llamaBlockBackward(ps, l, ps.layers[l], dx);
        }
        if (bert()) {
            dx = FisherOps.layerNormBackward(
                    dx,
                    ps.embXhat,
                    ps.embRstd,
                    val(-1, Role.EMBEDDING_NORM, false),
                    grad(-1, Role.EMBEDDING_NORM, false),
                    grad(-1, Role.EMBEDDING_NORM, true),
                    t,
                    h);
            float[] dpos = grad(-1, Role.POSITION_EMBEDDING, false);
            float[] dtyp = grad(-1, Role.TOKEN_TYPE_EMBEDDING, false);
            for (int i = 0; i < t; i++) {
                for (int j = 0; j < h; j++) {
                    dpos[i * h + j] += dx[i * h + j];
                    dtyp[j] += dx[i * h + j];
                }
            }
        }
        float[] demb = grad(-1, Role.EMBEDDING, false);
        for (int i = 0; i < t; i++) {
            int o = (int) ps.ids[i] * h;
            for (int j = 0; j < h; j++) {
                demb[o + j] += dx[i * h + j];
            }
        }
    }

    private float[] bertBlockBackward(Pass ps, int l, LayerCache c, float[] dy) {
        int t = ps.t;
        int h = d.hidden();
        int f = d.ffn();
        float[] dm = FisherOps.layerNormBackward(
                dy,
                c.xhat2,
                c.rstd2,
                val(l, Role.MLP_POST_NORM, false),
                grad(l, Role.MLP_POST_NORM, false),
                grad(l, Role.MLP_POST_NORM, true),
                t,
                h);
        float[] dact = linearBackward(l, Role.MLP_DOWN, dm, c.act, t, f, h);
        for (int i = 0; i < dact.length; i++) {
            dact[i] *= c.actGrad[i];
        }
        float[] dmid = linearBackward(l, Role.MLP_UP, dact, c.mid, t, h, f);
        for (int i = 0; i < dmid.length; i++) {
            dmid[i] += dm[i];
        }
        float[] ds = FisherOps.layerNormBackward(
                dmid,
                c.xhat1,
                c.rstd1,
                val(l, Role.ATTN_POST_NORM, false),
                grad(l, Role.ATTN_POST_NORM, false),
                grad(l, Role.ATTN_POST_NORM, true),
                t,
                h);
        float[] dxIn = attentionBackward(ps, l, c, ds);
        for (int i = 0; i < dxIn.length; i++) {
            dxIn[i] += ds[i];
        }
        return dxIn;
    }

    private float[] llamaBlockBackward(Pass ps, int l, LayerCache c, float[] dy) {
        int t = ps.t;
        int h = d.hidden();
        int f = d.ffn();
        float[] dact = linearBackward(l, Role.MLP_DOWN, dy, c.act, t, f, h);
        float[] dgate = new float[t * f];
        float[] dup = new float[t * f];
        for (int i = 0; i < dact.length; i++) {
            dup[i] = dact[i] * FisherOps.silu(c.gate[i]);
            dgate[i] = dact[i] * c.up[i] * FisherOps.siluGrad(c.gate[i]);
        }
        float[] dh2 = linearBackward(l, Role.MLP_GATE, dgate, c.h2, t, h, f);
        float[] dh2u = linearBackward(l, Role.MLP_UP, dup, c.h2, t, h, f);
        for (int i = 0; i < dh2.length; i++) {
            dh2[i] += dh2u[i];
        }
        float[] dmid = FisherOps.rmsNormBackward(
                dh2, c.mid, c.r2, val(l, Role.MLP_NORM, false), grad(l, Role.MLP_NORM, false), t, h);
        for (int i = 0; i < dmid.length; i++) {
            dmid[i] += dy[i];
        }
        float[] dh1 = attentionBackward(ps, l, c, dmid);
        float[] dx = FisherOps.rmsNormBackward(
                dh1, c.xIn, c.r1, val(l, Role.ATTN_NORM, false), grad(l, Role.ATTN_NORM, false), t, h);
        for (int i = 0; i < dx.length; i++) {
            dx[i] += dmid[i];
        }
        return dx;
    }

    /** Backward of {@link #attention} given the gradient of its output; returns the gradient of its input. */
    private float[] attentionBackward(Pass ps, int l, LayerCache c, float[] dout) {
        int t = ps.t;
        int h = d.hidden();
        int nh = d.heads();
        int nkv = d.kvHeads();
        int hd = d.headDim();
        int qw = nh * hd;
        int kw = nkv * hd;
        int group = nh / nkv;
        int window = s.window[l];
        float[] dctx = linearBackward(l, Role.ATTN_O, dout, c.ctx, t, qw, h);
        float[] dq = new float[t * qw];
        float[] dk = new float[t * kw];
        float[] dv = new float[t * kw];
        // One task per range of key/value groups: dk and dv rows of a group, dq rows of its heads, are written by it
        // alone, in the same order as a single thread would.
        FisherOps.parallelFor(nkv, (gLo, gHi) -> {
            float[] dp = new float[t];
            for (int hh = gLo * group; hh < gHi * group; hh++) {
                int g = hh / group;
                for (int i = 0; i < t; i++) {
                    int lo = 0;
                    int hi = t;
                    if (s.causal) {
                        hi = i + 1;
                        if (window > 0) {
                            lo = Math.max(0, i - window + 1);
                        }
                    }
                    int po = (hh * t + i) * t;
                    int co = i * qw + hh * hd;
                    double dot = 0;
                    for (int j = lo; j < hi; j++) {
                        int vo = j * kw + g * hd;
                        float acc = 0f;
                        float pj = c.p[po + j];
                        for (int e = 0; e < hd; e++) {
                            acc += dctx[co + e] * c.v[vo + e];
                            dv[vo + e] += pj * dctx[co + e];
                        }
                        dp[j] = acc;
                        dot += (double) acc * pj;
                    }
                    float fdot = (float) dot;
                    int qo = i * qw + hh * hd;
                    for (int j = lo; j < hi; j++) {
                        float ds = c.p[po + j] * (dp[j] - fdot) * s.scale;
                        if (ds == 0f) {
                            continue;
                        }
                        int ko = j * kw + g * hd;
                        for (int e = 0; e < hd; e++) {
                            dq[qo + e] += ds * c.k[ko + e];
                            dk[ko + e] += ds * c.q[qo + e];
                        }
                    }
                }
            }
        });
        if (!bert()) {
            ropeBackward(ps, dq, t, nh);
            ropeBackward(ps, dk, t, nkv);
        }
        float[] dh = linearBackward(l, Role.ATTN_Q, dq, c.h1, t, h, qw);
        float[] dhk = linearBackward(l, Role.ATTN_K, dk, c.h1, t, h, kw);
        float[] dhv = linearBackward(l, Role.ATTN_V, dv, c.h1, t, h, kw);
        for (int i = 0; i < dh.length; i++) {
            dh[i] += dhk[i] + dhv[i];
        }
        return dh;
    }

    /**
     * Backward of block {@code l}'s linear weight of {@code role} on input {@code x} [t, in]: accumulates its weight
     * (and bias, when it has one) gradient and returns the gradient of {@code x}.
     */
    private float[] linearBackward(int l, Role role, float[] dy, float[] x, int t, int in, int out) {
        return FisherOps.linearBackward(
                dy, x, val(l, role, false), grad(l, role, false), grad(l, role, true), t, in, out, true);
    }
}
