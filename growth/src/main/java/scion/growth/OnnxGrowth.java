package scion.growth;

import ai.onnx.proto.OnnxMl.ModelProto;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.arch.WeightGraph;
import scion.io.arch.WeightGraph.Weight;
import scion.io.onnx.OnnxModel;
import scion.io.onnx.OnnxWriter;
import scion.io.onnx.ShapeRewriter;
import scion.io.tensor.Tensor;

/**
 * HyperCloning of an ONNX model, ONNX in and ONNX out with the graph kept: every traced weight is replaced by its
 * grown tensor ({@link HyperCloning.Plan#grow}, which follows each initializer's stored layout, including the {@code
 * [in, out]} MatMul weights PyTorch exports), and the integer shape constants that carry a width or a head count are
 * rewritten; nodes, inputs, outputs and everything else stay as they are.
 *
 * <p>The shape constants are rewritten by {@link ShapeRewriter} (io), which traces each {@code Reshape}/{@code Split}
 * back to the projection that produced its data and rewrites widths and head counts for the grown sizes (MiniLM ×2:
 * 12 → 24 heads in each head split, 384 → 768 in each head merge and in the static output dimension).
 *
 * <p>Guarantee: as {@link HyperCloning}: the grown model's hidden states are {@code n} copies of the source's (MiniLM
 * ×2: {@code last_hidden_state} equals two copies within float32 rounding). Streams: each grown weight is a lazy view
 * computed while {@link OnnxWriter} writes it.
 */
public final class OnnxGrowth {
    private OnnxGrowth() {}

    /**
     * A checked ONNX growth.
     *
     * @param width the width plan (grown sizes, per-weight growth)
     * @param replacements initializer or Constant output name → its new tensor (weights are lazy)
     * @param rewritten the model with output shapes rewritten and intermediate value_info dropped
     * @param rewrites every shape constant rewritten, with the reason
     * @param suspicious constants feeding shape operators that still hold a source width or head count, for the
     *     report
     * @param grownWeights how many weights were replaced
     */
    public record Plan(
            HyperCloning.Plan width,
            Map<String, Tensor> replacements,
            ModelProto rewritten,
            List<ShapeRewriter.Rewrite> rewrites,
            List<String> suspicious,
            int grownWeights) {}

    /** Plans the growth of {@code model} (an ONNX model): weights on specs, then the graph's shape constants. */
    public static Plan plan(Model model, HyperCloning.Params params) {
        return plan(model, params, 1);
    }

    /**
     * Like {@link #plan(Model, HyperCloning.Params)}, with the grown weights computed by {@code threads} threads when
     * they are written (the bytes do not depend on the count).
     */
    public static Plan plan(Model model, HyperCloning.Params params, int threads) {
        RowWorkers workers = RowWorkers.of(threads);
        OnnxModel onnx = model.onnx()
                .orElseThrow(() -> new IllegalArgumentException(
                        model.location() + " is not an ONNX model; safetensors go through the safetensors pipeline"));
        WeightGraph graph = model.graph();
        HyperCloning.Plan width = HyperCloning.plan(graph, params);
        if (width.untiedHead()) {
            throw InvalidInputException.of(
                    onnx.location().getFileName().toString(),
                    "the tied output head would have to be untied (no final norm to fold 1/n into), which needs a new"
                            + " initializer and node in the graph",
                    "a model with a final norm or an untied head",
                    "a tied head without a final norm; hint: grow the safetensors checkpoint instead");
        }
        Map<String, Tensor> replacements = new LinkedHashMap<>();
        int grown = 0;
        for (Weight w : graph.weights()) {
            HyperCloning.WeightGrowth g = width.grow(w);
            if (!g.isUnchanged()) {
                replacements.put(
                        w.tensor().name(), g.tensor(w.tensor(), w.tensor().dtype(), workers));
                grown++;
            }
        }
        ShapeRewriter.Result r = ShapeRewriter.rewrite(onnx, graph, width.source(), width.grown());
        replacements.putAll(r.constants());
        return new Plan(width, replacements, r.model(), r.rewrites(), r.suspicious(), grown);
    }

    /** Writes the grown model (atomic, streamed; see {@link OnnxWriter}). */
    public static OnnxWriter.Written write(Model model, Plan plan, Path destination, OnnxWriter.Options options) {
        OnnxModel onnx = model.onnx().orElseThrow();
        return OnnxWriter.write(onnx, plan.rewritten(), plan.replacements(), destination, options);
    }
}
