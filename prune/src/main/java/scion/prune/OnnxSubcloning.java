package scion.prune;

import java.nio.file.Path;
import java.util.LinkedHashMap;
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
 * Weight subcloning of an ONNX model, ONNX in and ONNX out with the graph kept: every traced weight initializer is
 * replaced by its sub-tensor ({@link Subcloning.Plan#slice}, which follows each initializer's stored layout, including
 * the {@code [in, out]} MatMul weights PyTorch exports), and the integer shape constants that carry a width or a head
 * count are rewritten by {@link ShapeRewriter} (MiniLM 384 → 256, 12 → 8 heads: {@code [b, s, 12, 32]} head splits
 * become {@code [b, s, 8, 32]}, {@code [b, s, 384]} head merges {@code [b, s, 256]}). Nodes, inputs and outputs are
 * kept; the static last dimension of an output changes with the width.
 *
 * <p>Only width: removing blocks needs the nodes of those blocks cut and the residual stream rewired, which this class
 * does not do (a request for fewer layers is refused with a hint). The result equals the subcloning of the same
 * weights stored as safetensors (same plan, same sub-matrices), as ONNX Runtime shows on the llama fixture and its
 * PyTorch export.
 */
public final class OnnxSubcloning {
    private OnnxSubcloning() {}

    /**
     * What was written.
     *
     * @param written the writer's report
     * @param rewrites shape constants rewritten, with their reasons
     * @param slicedWeights initializers replaced by sub-tensors
     */
    public record Result(OnnxWriter.Written written, ShapeRewriter.Result rewrites, int slicedWeights) {}

    /** Checks, on specs only, what the ONNX path cannot do (call after {@link Subcloning#check}). */
    public static void check(Model model, Subcloning.Params params) {
        if (model.onnx().isEmpty()) {
            throw new IllegalArgumentException(model.location() + " is not an ONNX model");
        }
        int layers = model.graph().dims().layers();
        if (params.layers() != 0 && params.layers() != layers) {
            throw InvalidInputException.of(
                    model.location().getFileName().toString(),
                    "removing blocks from an ONNX graph is not done by subcloning (the graph is kept)",
                    "--layers " + layers + " or no --layers for ONNX input",
                    "--layers " + params.layers() + "; hint: subclone the width here, then remove blocks with"
                            + " scion prune, or subclone the safetensors checkpoint");
        }
    }

    /** Plans the rewrite and writes the subcloned model (atomic, streamed; see {@link OnnxWriter}). */
    public static Result write(Model model, Subcloning.Plan plan, Path destination, OnnxWriter.Options options) {
        check(model, plan.params());
        OnnxModel onnx = model.onnx().orElseThrow();
        WeightGraph graph = model.graph();
        Map<String, Tensor> replacements = new LinkedHashMap<>();
        int sliced = 0;
        for (Weight w : graph.weights()) {
            Tensor t = plan.slice(w);
            if (t != w.tensor()) {
                replacements.put(w.tensor().name(), t);
                sliced++;
            }
        }
        ShapeRewriter.Result r = ShapeRewriter.rewrite(
                onnx, graph, plan.shape().source(), plan.shape().target());
        replacements.putAll(r.constants());
        OnnxWriter.Written written = OnnxWriter.write(onnx, r.model(), replacements, destination, options);
        return new Result(written, r, sliced);
    }
}
