package scion.lowrank;

import ai.onnx.proto.OnnxMl.GraphProto;
import ai.onnx.proto.OnnxMl.ModelProto;
import ai.onnx.proto.OnnxMl.NodeProto;
import ai.onnx.proto.OnnxMl.TensorProto;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.function.Function;
import org.ejml.data.DMatrixRMaj;
import org.ejml.dense.row.CommonOps_DDRM;
import scion.io.Json;
import scion.io.LowRankFactors;
import scion.io.Model;
import scion.io.arch.WeightGraph.Weight;
import scion.io.config.ModelConfig;
import scion.io.onnx.OnnxModel;
import scion.io.tensor.BufferTensor;
import scion.io.tensor.DType;
import scion.io.tensor.Tensor;

/**
 * The tensors and graph of a factorised model ({@link SvdLowRank} results), in the layout {@link LowRankFactors}
 * documents: factor pairs {@code <module>.lowrank_a.weight} / {@code <module>.lowrank_b.weight} in the weight's own
 * storage convention and dtype (rounded to nearest even), or ({@link Store#DENSE}) the reconstruction {@code B·A}
 * under the weight's name.
 *
 * <p>ONNX: the weight's {@code MatMul(x, W)} ({@code W [in, out]}) becomes {@code MatMul(MatMul(x, A), B)} with
 * {@code A [in, r]} and {@code B [r, out]}; the second MatMul writes the original output, so the bias {@code Add} and
 * everything downstream are untouched; nothing else in the graph changes.
 */
public final class LowRankOutput {
    private LowRankOutput() {}

    /** How factored weights are stored. */
    public enum Store {
        /** Two factors per weight (fewer parameters). */
        FACTORS,
        /** The reconstruction B·A as one dense weight (for tools that cannot load factors). */
        DENSE;

        public static Store parse(String s) {
            switch (s.trim()) {
                case "factors":
                    return FACTORS;
                case "dense":
                    return DENSE;
                default:
                    throw scion.io.InvalidInputException.of("--store", "unknown storage", "factors or dense", s);
            }
        }

        public String id() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }
    }

    /** The stored tensors of one result: A and B (factors), or the reconstruction (dense). */
    static List<Tensor> tensors(Weight w, SvdLowRank.Result r, Store store) {
        DType dt = outputDType(w.tensor().dtype());
        boolean inOut = SvdLowRank.storedInOut(w);
        if (store == Store.DENSE) {
            DMatrixRMaj rec = r.reconstruction(); // [out, in]
            DMatrixRMaj stored = inOut ? CommonOps_DDRM.transpose(rec, null) : rec;
            return List.of(encode(w.tensor().name(), dt, stored));
        }
        DMatrixRMaj a = inOut ? CommonOps_DDRM.transpose(r.a(), null) : r.a();
        DMatrixRMaj b = inOut ? CommonOps_DDRM.transpose(r.b(), null) : r.b();
        return List.of(encode(LowRankFactors.aName(w.name()), dt, a), encode(LowRankFactors.bName(w.name()), dt, b));
    }

    private static DType outputDType(DType d) {
        return d == DType.F16 || d == DType.BF16 || d == DType.F32 ? d : DType.F32;
    }

    private static Tensor encode(String name, DType dt, DMatrixRMaj m) {
        float[] f = new float[m.getNumElements()];
        for (int i = 0; i < f.length; i++) {
            f[i] = (float) m.data[i];
        }
        return BufferTensor.encode(name, dt, new long[] {m.numRows, m.numCols}, f);
    }

    /**
     * The output tensors of a safetensors model, in storage order: each factored weight replaced by its tensors
     * ({@link Streamed#tensors()}: lazy, computed when the writer reaches them), everything else the source's lazy
     * tensor.
     *
     * @param replaced by Hugging Face weight name: the tensors that replace it
     */
    public static List<Tensor> safetensors(Model m, Map<String, Weight> weights, Map<String, List<Tensor>> replaced) {
        Map<String, String> byStored = new HashMap<>();
        for (String hf : replaced.keySet()) {
            byStored.put(weights.get(hf).tensor().name(), hf);
        }
        List<Tensor> out = new ArrayList<>();
        for (Tensor t : m.checkpoint().tensors()) {
            String hf = byStored.get(t.name());
            if (hf == null) {
                out.add(t);
            } else {
                out.addAll(replaced.get(hf));
            }
        }
        return out;
    }

    /**
     * config.json with the {@value LowRankFactors#CONFIG_KEY} entry that tells loaders which tensors are factors
     * (factors store only; dense storage returns the config unchanged but for the entry's {@code format: dense}).
     *
     * @param ranks the rank of every factored weight, by Hugging Face name (dense ones absent)
     */
    public static String config(
            ModelConfig cfg,
            Map<String, Weight> weights,
            Map<String, Integer> ranks,
            SvdLowRank.Params params,
            Store store) {
        ObjectNode root;
        try {
            root = (ObjectNode) Json.mapper().readTree(cfg.toJson());
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("config.json cannot be re-read", e);
        }
        ObjectNode entry = root.putObject(LowRankFactors.CONFIG_KEY);
        entry.put("format", store == Store.FACTORS ? "factors" : "dense");
        for (Map.Entry<String, String> p : params.describe().entrySet()) {
            entry.put(p.getKey(), p.getValue());
        }
        if (store == Store.FACTORS) {
            entry.put(
                    "how_to_load",
                    "each listed weight W is the product of two tensors: 'product' b·a means W = B @ A"
                            + " (Linear [out, in]: A [r, in], B [out, r], y = (x @ A.T) @ B.T + bias); a·b means W = A @ B"
                            + " (Conv1D [in, out]: A [in, r], B [r, out]). Biases keep their names.");
            ObjectNode f = entry.putObject("factored");
            for (Map.Entry<String, Integer> e : ranks.entrySet()) {
                ObjectNode o = f.putObject(e.getKey());
                o.put("a", LowRankFactors.aName(e.getKey()));
                o.put("b", LowRankFactors.bName(e.getKey()));
                o.put("rank", e.getValue());
                o.put("product", SvdLowRank.storedInOut(weights.get(e.getKey())) ? "a·b" : "b·a");
            }
        } else {
            ObjectNode f = entry.putObject("ranks");
            for (Map.Entry<String, Integer> e : ranks.entrySet()) {
                f.put(e.getKey(), e.getValue());
            }
        }
        try {
            return Json.mapper().writerWithDefaultPrettyPrinter().writeValueAsString(root) + "\n";
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("config.json cannot be serialised", e);
        }
    }

    /**
     * Factorisation on demand, one weight at a time (DESIGN: plan on specs, then stream). Each factored weight gets
     * lazy tensors whose names, dtypes and shapes come from its planned rank; the writer's first read of one of them
     * factors that weight ({@code factor}), encodes its stored tensors and keeps them until all their bytes have been
     * read, then drops them, keeping only the report ({@link SvdLowRank.Result#withoutFactors()}). The two factors of
     * a weight are adjacent in write order (safetensors storage order, ONNX initializer order), so each weight is
     * factored once and peak memory is one weight's matrices. A tensor read again later is recomputed (same bytes:
     * every method is deterministic).
     */
    public static final class Streamed {
        private final Store store;
        private final Map<String, Weight> weights;
        private final Map<String, Integer> ranks;
        private final Function<Weight, SvdLowRank.Result> factor;
        private final Map<String, List<Tensor>> lazy = new LinkedHashMap<>();
        private final Map<String, SvdLowRank.Result> results = new LinkedHashMap<>();
        private String current;
        private List<Tensor> encoded;
        private long unread;

        /**
         * @param weights the weights to factor, by Hugging Face name
         * @param ranks each weight's planned rank (≥ 1): the stored shapes; the factorisation must agree
         * @param factor computes one weight's result (called on the writing thread)
         */
        public Streamed(
                Map<String, Weight> weights,
                Map<String, Integer> ranks,
                Store store,
                Function<Weight, SvdLowRank.Result> factor) {
            this.store = store;
            this.weights = Map.copyOf(weights);
            this.ranks = Map.copyOf(ranks);
            this.factor = factor;
            for (Map.Entry<String, Integer> e : ranks.entrySet()) {
                Weight w = weights.get(e.getKey());
                DType dt = outputDType(w.tensor().dtype());
                List<Tensor> ts = new ArrayList<>();
                List<String> names = store == Store.DENSE
                        ? List.of(w.tensor().name())
                        : List.of(LowRankFactors.aName(w.name()), LowRankFactors.bName(w.name()));
                List<long[]> shapes = shapes(w, e.getValue(), store);
                for (int i = 0; i < names.size(); i++) {
                    ts.add(new Part(names.get(i), dt, shapes.get(i), e.getKey(), i));
                }
                lazy.put(e.getKey(), List.copyOf(ts));
            }
        }

        /** The lazy tensors that replace each factored weight, by Hugging Face name. */
        public Map<String, List<Tensor>> tensors() {
            return lazy;
        }

        /** The results of the weights factored so far (without their factors), in the order they were factored. */
        public synchronized Map<String, SvdLowRank.Result> results() {
            return new LinkedHashMap<>(results);
        }

        private synchronized void read(String hf, int index, long byteOffset, ByteBuffer dst) {
            if (!hf.equals(current)) {
                current = null;
                encoded = null; // drop the previous weight's tensors before computing the next
                Weight w = weights.get(hf);
                SvdLowRank.Result r = factor.apply(w);
                if (r.rank() != ranks.get(hf)) {
                    throw new IllegalStateException(
                            "'" + hf + "' was planned at rank " + ranks.get(hf) + " but factors at rank " + r.rank());
                }
                List<Tensor> ts = LowRankOutput.tensors(w, r, store);
                long total = 0;
                for (int i = 0; i < ts.size(); i++) {
                    if (!Arrays.equals(ts.get(i).shape(), lazy.get(hf).get(i).shape())) {
                        throw new IllegalStateException(
                                "'" + hf + "': computed " + ts.get(i).describe() + ", planned "
                                        + lazy.get(hf).get(i).describe());
                    }
                    total += ts.get(i).byteSize();
                }
                results.put(hf, r.withoutFactors());
                current = hf;
                encoded = ts;
                unread = total;
            }
            int before = dst.position();
            encoded.get(index).readBytes(byteOffset, dst);
            unread -= dst.position() - before;
            if (unread <= 0) {
                current = null;
                encoded = null;
            }
        }

        /** One stored tensor of a factored weight, computed on its first read. */
        private final class Part implements Tensor {
            private final String name;
            private final DType dtype;
            private final long[] shape;
            private final String hf;
            private final int index;

            Part(String name, DType dtype, long[] shape, String hf, int index) {
                this.name = name;
                this.dtype = dtype;
                this.shape = shape;
                this.hf = hf;
                this.index = index;
            }

            @Override
            public String name() {
                return name;
            }

            @Override
            public DType dtype() {
                return dtype;
            }

            @Override
            public long[] shape() {
                return shape;
            }

            @Override
            public void readBytes(long byteOffset, ByteBuffer dst) {
                read(hf, index, byteOffset, dst);
            }
        }
    }

    /** The stored shapes of {@link #tensors} for a weight factored at {@code rank}, known before factoring. */
    static List<long[]> shapes(Weight w, int rank, Store store) {
        if (store == Store.DENSE) {
            return List.of(w.tensor().shape().clone());
        }
        int[] oi = SvdLowRank.outIn(w);
        long out = oi[0];
        long in = oi[1];
        return SvdLowRank.storedInOut(w)
                ? List.of(new long[] {in, rank}, new long[] {rank, out})
                : List.of(new long[] {rank, in}, new long[] {out, rank});
    }

    /** Why the ONNX graph's use of weight {@code w} cannot be split into two MatMuls, or empty when it can. */
    public static Optional<String> onnxRefusal(OnnxModel onnx, Weight w) {
        String init = w.tensor().name();
        if (!onnx.isInitializer(init)) {
            return Optional.of("not a plain initializer of the graph");
        }
        if (!SvdLowRank.storedInOut(w)) {
            return Optional.of("stored [out, in]: not a MatMul(x, W) weight");
        }
        List<NodeProto> uses = new ArrayList<>();
        for (NodeProto n : onnx.graph().getNodeList()) {
            for (int i = 0; i < n.getInputCount(); i++) {
                if (n.getInput(i).equals(init)) {
                    if (!n.getOpType().equals("MatMul") || i != 1) {
                        return Optional.of("used by " + n.getOpType() + " '" + n.getName() + "' (input " + i
                                + "), not only as MatMul's weight");
                    }
                    uses.add(n);
                }
            }
        }
        if (uses.size() != 1) {
            return Optional.of("used by " + uses.size() + " MatMul nodes (shared weight)");
        }
        return Optional.empty();
    }

    /**
     * An ONNX model rewritten for the results.
     *
     * @param proto the graph with the factored MatMuls split (dense storage: unchanged)
     * @param replacements new initializer tensors by name
     */
    public record OnnxRewrite(ModelProto proto, Map<String, Tensor> replacements) {}

    /**
     * The rewritten graph and new tensors (lazy: {@link Streamed#tensors()}); every replaced weight must have passed
     * {@link #onnxRefusal} when factors are stored.
     *
     * @param replaced by Hugging Face weight name: the tensors that replace it
     */
    public static OnnxRewrite onnx(
            OnnxModel onnx, Map<String, Weight> weights, Map<String, List<Tensor>> replaced, Store store) {
        Map<String, Tensor> replacements = new LinkedHashMap<>();
        Map<String, String> byInit = new HashMap<>(); // initializer → HF name
        for (Map.Entry<String, List<Tensor>> e : replaced.entrySet()) {
            Weight w = weights.get(e.getKey());
            byInit.put(w.tensor().name(), e.getKey());
            for (Tensor t : e.getValue()) {
                replacements.put(t.name(), t);
            }
        }
        if (store == Store.DENSE) {
            return new OnnxRewrite(onnx.proto(), replacements);
        }
        ModelProto.Builder mb = onnx.proto().toBuilder();
        GraphProto.Builder gb = mb.getGraphBuilder();
        List<NodeProto> nodes = new ArrayList<>();
        for (NodeProto n : gb.getNodeList()) {
            String hf = n.getOpType().equals("MatMul") && n.getInputCount() == 2 ? byInit.get(n.getInput(1)) : null;
            if (hf == null) {
                nodes.add(n);
                continue;
            }
            String a = LowRankFactors.aName(hf);
            String b = LowRankFactors.bName(hf);
            String mid = n.getOutput(0) + "/lowrank";
            // Node names without a leading '/': no module scope, so tracing takes the factors' own names.
            nodes.add(NodeProto.newBuilder()
                    .setOpType("MatMul")
                    .setName("lowrank:" + hf + ":a")
                    .addInput(n.getInput(0))
                    .addInput(a)
                    .addOutput(mid)
                    .build());
            nodes.add(NodeProto.newBuilder()
                    .setOpType("MatMul")
                    .setName("lowrank:" + hf + ":b")
                    .addInput(mid)
                    .addInput(b)
                    .addOutput(n.getOutput(0))
                    .build());
        }
        gb.clearNode().addAllNode(nodes);
        List<TensorProto> inits = new ArrayList<>();
        for (TensorProto t : gb.getInitializerList()) {
            String hf = byInit.get(t.getName());
            if (hf == null) {
                inits.add(t);
                continue;
            }
            for (String name : List.of(LowRankFactors.aName(hf), LowRankFactors.bName(hf))) {
                Tensor x = replacements.get(name);
                TensorProto.Builder s = TensorProto.newBuilder()
                        .setName(name)
                        .setDataType(x.dtype().onnxCode());
                for (long d : x.shape()) {
                    s.addDims(d);
                }
                inits.add(s.build());
            }
        }
        gb.clearInitializer().addAllInitializer(inits);
        return new OnnxRewrite(mb.build(), replacements);
    }
}
