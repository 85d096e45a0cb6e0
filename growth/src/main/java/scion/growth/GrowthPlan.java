package scion.growth;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.function.Function;
import scion.io.InvalidInputException;
import scion.io.arch.Role;
import scion.io.arch.WeightGraph;
import scion.io.arch.WeightGraph.Weight;
import scion.io.config.ModelConfig;
import scion.io.config.ModelConfig.Field;
import scion.io.tensor.Tensor;

/**
 * The streamed growth of a safetensors checkpoint: width ({@link HyperCloning}) and depth ({@link DepthGrowth}) in
 * one pass, planned on specs and produced as lazy tensors.
 *
 * <p>{@link #plan} checks both operators against the model's specs and reports every problem of both at once. {@link
 * #tensors()} then gives the output tensors in output order, each a lazy view that computes its grown values (width)
 * or takes its source block (depth) when the writer reads it, in the source tensor's dtype (computed in float32,
 * rounded to nearest even once): peak memory is a block of rows per tensor being read, not the model. Width applies first, per tensor; depth
 * then arranges the widened blocks, so new identity blocks are widened copies with zeroed output projections.
 */
public final class GrowthPlan {
    private final WeightGraph graph;
    private final Optional<HyperCloning.Plan> width;
    private final Optional<DepthGrowth.Plan> depth;

    private GrowthPlan(WeightGraph graph, Optional<HyperCloning.Plan> width, Optional<DepthGrowth.Plan> depth) {
        this.graph = graph;
        this.width = width;
        this.depth = depth;
    }

    /**
     * Plans a growth; at least one of {@code width} and {@code depth} must be present. Problems of both operators are
     * reported together in one {@link InvalidInputException}.
     */
    public static GrowthPlan plan(
            WeightGraph graph, Optional<HyperCloning.Params> width, Optional<DepthGrowth.Params> depth) {
        if (width.isEmpty() && depth.isEmpty()) {
            throw InvalidInputException.of(
                    "scion grow", "nothing to grow", "--width N and/or --depth L", "neither option");
        }
        List<String> problems = new ArrayList<>();
        HyperCloning.Plan w = null;
        DepthGrowth.Plan d = null;
        if (width.isPresent()) {
            try {
                w = HyperCloning.plan(graph, width.get());
            } catch (InvalidInputException e) {
                problems.add(e.getMessage());
            }
        }
        if (depth.isPresent()) {
            try {
                d = DepthGrowth.plan(graph, depth.get());
            } catch (InvalidInputException e) {
                problems.add(e.getMessage());
            }
        }
        if (!problems.isEmpty()) {
            throw new InvalidInputException(String.join("\n", problems));
        }
        return new GrowthPlan(graph, Optional.ofNullable(w), Optional.ofNullable(d));
    }

    public WeightGraph graph() {
        return graph;
    }

    /** The width plan, when the width grows. */
    public Optional<HyperCloning.Plan> width() {
        return width;
    }

    /** The depth plan, when the depth grows. */
    public Optional<DepthGrowth.Plan> depth() {
        return depth;
    }

    /**
     * The output tensors, lazily, in output order; each keeps its source tensor's dtype. An untied head (width
     * growth of a tied model without a final norm) comes last.
     */
    public List<Tensor> tensors() {
        return tensors(1);
    }

    /**
     * Like {@link #tensors()}, with the grown rows of each tensor computed by {@code threads} threads (the reading
     * thread included). The bytes do not depend on the thread count.
     */
    public List<Tensor> tensors(int threads) {
        RowWorkers workers = RowWorkers.of(threads);
        Function<Weight, Tensor> source =
                w -> width.map(p -> p.grow(w).tensor(w.tensor(), w.tensor().dtype(), workers))
                        .orElse(w.tensor());
        List<Tensor> out;
        if (depth.isPresent()) {
            out = new ArrayList<>(DepthGrowth.tensors(depth.get(), graph, source));
        } else {
            out = new ArrayList<>();
            for (Weight w : graph.weights()) {
                out.add(source.apply(w));
            }
        }
        if (width.isPresent() && width.get().untiedHead()) {
            Weight emb = graph.byRole(Role.EMBEDDING).get(0);
            out.add(width.get()
                    .untiedHead(emb)
                    .tensor(emb.tensor(), emb.tensor().dtype(), workers));
        }
        return out;
    }

    /** The output's config.json: the operators' changed fields, and {@code _name_or_path} set to {@code name}. */
    public ModelConfig config(String name) {
        ModelConfig c = graph.config();
        if (width.isPresent()) {
            c = width.get().config(c);
        }
        if (depth.isPresent()) {
            c = DepthGrowth.config(depth.get(), c);
        }
        return c.with(Field.NAME, name);
    }

    /** The parameters of both operators, for provenance. */
    public Map<String, String> parameters() {
        Map<String, String> m = new LinkedHashMap<>();
        width.ifPresent(p -> m.putAll(p.params().describe()));
        width.ifPresent(p -> m.put("kv", p.kvMode().id()));
        depth.ifPresent(p -> m.putAll(p.parameters()));
        return m;
    }

    /** What a report should tell the user, one sentence each. */
    public List<String> notes() {
        List<String> notes = new ArrayList<>();
        width.ifPresent(p -> notes.addAll(p.notes()));
        depth.ifPresent(p -> notes.addAll(p.notes()));
        return notes;
    }
}
