package scion.lowrank;

import ai.onnx.proto.OnnxMl.GraphProto;
import ai.onnx.proto.OnnxMl.ModelProto;
import ai.onnx.proto.OnnxMl.NodeProto;
import ai.onnx.proto.OnnxMl.TensorProto;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
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
     * The output tensors of a safetensors model, in storage order: factored weights replaced, everything else the
     * source's lazy tensor.
     *
     * @param results by Hugging Face weight name; dense results are ignored
     */
    public static List<Tensor> safetensors(
            Model m, Map<String, Weight> weights, Map<String, SvdLowRank.Result> results, Store store) {
        Map<String, String> byStored = new HashMap<>();
        for (Map.Entry<String, SvdLowRank.Result> e : results.entrySet()) {
            if (!e.getValue().dense()) {
                byStored.put(weights.get(e.getKey()).tensor().name(), e.getKey());
            }
        }
        List<Tensor> out = new ArrayList<>();
        for (Tensor t : m.checkpoint().tensors()) {
            String hf = byStored.get(t.name());
            if (hf == null) {
                out.add(t);
            } else {
                out.addAll(tensors(weights.get(hf), results.get(hf), store));
            }
        }
        return out;
    }

    /**
     * config.json with the {@value LowRankFactors#CONFIG_KEY} entry that tells loaders which tensors are factors
     * (factors store only; dense storage returns the config unchanged but for the entry's {@code format: dense}).
     */
    public static String config(
            ModelConfig cfg,
            Map<String, Weight> weights,
            Map<String, SvdLowRank.Result> results,
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
            for (Map.Entry<String, SvdLowRank.Result> e : results.entrySet()) {
                if (e.getValue().dense()) {
                    continue;
                }
                ObjectNode o = f.putObject(e.getKey());
                o.put("a", LowRankFactors.aName(e.getKey()));
                o.put("b", LowRankFactors.bName(e.getKey()));
                o.put("rank", e.getValue().rank());
                o.put("product", SvdLowRank.storedInOut(weights.get(e.getKey())) ? "a·b" : "b·a");
            }
        } else {
            ObjectNode f = entry.putObject("ranks");
            for (Map.Entry<String, SvdLowRank.Result> e : results.entrySet()) {
                if (!e.getValue().dense()) {
                    f.put(e.getKey(), e.getValue().rank());
                }
            }
        }
        try {
            return Json.mapper().writerWithDefaultPrettyPrinter().writeValueAsString(root) + "\n";
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("config.json cannot be serialised", e);
        }
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

    /** The rewritten graph and new tensors; every non-dense result must have passed {@link #onnxRefusal}. */
    public static OnnxRewrite onnx(
            OnnxModel onnx, Map<String, Weight> weights, Map<String, SvdLowRank.Result> results, Store store) {
        Map<String, Tensor> replacements = new LinkedHashMap<>();
        Map<String, String> byInit = new HashMap<>(); // initializer → HF name
        for (Map.Entry<String, SvdLowRank.Result> e : results.entrySet()) {
            if (e.getValue().dense()) {
                continue;
            }
            Weight w = weights.get(e.getKey());
            byInit.put(w.tensor().name(), e.getKey());
            for (Tensor t : tensors(w, e.getValue(), store)) {
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
