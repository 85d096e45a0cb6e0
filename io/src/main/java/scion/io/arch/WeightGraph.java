package scion.io.arch;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.EnumMap;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.regex.Pattern;
import scion.io.Checkpoint;
import scion.io.InvalidInputException;
import scion.io.config.ModelConfig;
import scion.io.tensor.Tensor;

/**
 * Every tensor of a checkpoint assigned to (layer or none, role), checked against its architecture and config.
 *
 * <p>Built from specs only (names, shapes, dtypes): no tensor bytes are read. Every problem — a tensor the family
 * does not have, a required tensor that is missing, a shape the config contradicts — is collected and reported in
 * one {@link InvalidInputException}, one line per problem.
 */
public final class WeightGraph {

    /**
     * A stored tensor with its meaning.
     *
     * @param tensor the stored tensor (lazy)
     * @param name the Hugging Face parameter name (for ONNX: traced from the graph)
     * @param layer the block index, or -1 for global weights
     * @param spec the architecture entry it matched
     * @param transposed stored transposed relative to {@code spec.axes()} (PyTorch ONNX exports store MatMul weights
     *     {@code [in, out]})
     */
    public record Weight(Tensor tensor, String name, int layer, WeightSpec spec, boolean transposed) {
        public Role role() {
            return spec.role();
        }

        public boolean isBias() {
            return spec.bias();
        }
    }

    /** How a stored tensor is known: its HF name and whether it is stored transposed. */
    public record Alias(String name, boolean transposed) {}

    private final Architecture arch;
    private final ModelConfig config;
    private final Dims dims;
    private final Checkpoint checkpoint;
    private final String prefix;
    private final List<Weight> weights;

    private WeightGraph(
            Architecture arch,
            ModelConfig config,
            Dims dims,
            Checkpoint checkpoint,
            String prefix,
            List<Weight> weights) {
        this.arch = arch;
        this.config = config;
        this.dims = dims;
        this.checkpoint = checkpoint;
        this.prefix = prefix;
        this.weights = weights;
    }

    /**
     * Maps every tensor of {@code ckpt} to its role under {@code arch}.
     *
     * @param aliases the HF name of stored tensors whose stored name differs (ONNX), by stored name
     * @param notWeights stored tensors that are not parameters (ONNX shape constants), left out of the graph
     */
    public static WeightGraph build(
            Checkpoint ckpt,
            Architecture arch,
            ModelConfig config,
            Map<String, Alias> aliases,
            Set<String> notWeights) {
        Dims dims = Dims.of(arch, config);
        List<Tensor> tensors = new ArrayList<>();
        for (Tensor t : ckpt.tensors()) {
            if (!notWeights.contains(t.name())) {
                tensors.add(t);
            }
        }
        String where = ckpt.location().getFileName().toString();

        // Choose the prefix under which most tensors match (a CausalLM saves "model.", a bare model none).
        String prefix = arch.prefixes().get(0);
        int best = -1;
        for (String p : arch.prefixes()) {
            List<Pattern> pats = patterns(arch, p);
            int n = 0;
            for (Tensor t : tensors) {
                String name = aliasOf(t, aliases).name();
                for (Pattern pat : pats) {
                    if (pat.matcher(name).matches()) {
                        n++;
                        break;
                    }
                }
            }
            if (n > best) {
                best = n;
                prefix = p;
            }
        }

        List<Pattern> pats = patterns(arch, prefix);
        List<String> problems = new ArrayList<>();
        List<Weight> out = new ArrayList<>();
        Map<String, Weight> byName = new HashMap<>();
        for (Tensor t : tensors) {
            Alias alias = aliasOf(t, aliases);
            Weight w = null;
            for (int i = 0; i < pats.size(); i++) {
                var m = pats.get(i).matcher(alias.name());
                if (m.matches()) {
                    WeightSpec spec = arch.weights().get(i);
                    int layer = spec.perLayer() ? Integer.parseInt(m.group(1)) : -1;
                    w = new Weight(t, alias.name(), layer, spec, alias.transposed());
                    break;
                }
            }
            if (w == null) {
                problems.add(fileOf(t, where) + ": tensor '" + t.name() + "'"
                        + (alias.name().equals(t.name()) ? "" : " (traced as '" + alias.name() + "')")
                        + " is not part of the " + arch.family() + " architecture; expected one of the "
                        + arch.weights().size() + " " + arch.family() + " tensor names under prefix '" + prefix
                        + "', found an unmapped name");
                continue;
            }
            if (w.layer() >= dims.layers()) {
                problems.add(fileOf(t, where) + ": tensor '" + t.name() + "' belongs to layer " + w.layer()
                        + "; expected layers 0.."
                        + (dims.layers() - 1) + " (" + config.keyFor(ModelConfig.Field.LAYERS) + " = " + dims.layers()
                        + "), found layer " + w.layer());
                continue;
            }
            if (byName.put(w.name(), w) != null) {
                problems.add(where + ": tensor '" + w.name() + "' appears twice; expected it once, found a duplicate");
                continue;
            }
            checkShape(w, dims, where, config, problems);
            out.add(w);
        }

        for (WeightSpec spec : arch.weights()) {
            if (spec.optional()) {
                continue;
            }
            int n = spec.perLayer() ? dims.layers() : 1;
            for (int l = 0; l < n; l++) {
                String name = spec.name(prefix, l);
                if (byName.containsKey(name)) {
                    continue;
                }
                if (spec.tiedTo().isPresent() && dims.tied()) {
                    continue;
                }
                problems.add(where + ": missing tensor '" + name + "'; expected by " + arch.family()
                        + (spec.tiedTo().isPresent() ? " with untied embeddings (tie_word_embeddings = false)" : "")
                        + " with " + dims.layers() + " layers, found no such tensor");
            }
        }
        if (!problems.isEmpty()) {
            String first = problems.get(0);
            String rest = problems.size() > 1 ? "\n  " + String.join("\n  ", problems.subList(1, problems.size())) : "";
            throw new InvalidInputException(
                    (problems.size() > 1 ? problems.size() + " problems; " : "") + first + rest);
        }
        return new WeightGraph(arch, config, dims, ckpt, prefix, Collections.unmodifiableList(out));
    }

    private static Alias aliasOf(Tensor t, Map<String, Alias> aliases) {
        Alias a = aliases.get(t.name());
        return a != null ? a : new Alias(t.name(), false);
    }

    private static List<Pattern> patterns(Architecture arch, String prefix) {
        List<Pattern> out = new ArrayList<>();
        for (WeightSpec s : arch.weights()) {
            out.add(s.pattern(prefix));
        }
        return out;
    }

    private static void checkShape(Weight w, Dims dims, String where, ModelConfig cfg, List<String> problems) {
        List<Axis> axes = w.spec().axes();
        long[] shape = w.tensor().shape();
        if (w.transposed() && shape.length == 2) {
            shape = new long[] {shape[1], shape[0]};
        }
        boolean ok = shape.length == axes.size();
        long[] expected = new long[axes.size()];
        for (int i = 0; i < axes.size(); i++) {
            long s = dims.size(axes.get(i));
            expected[i] = s;
            if (ok && s >= 0 && shape[i] != s) {
                ok = false;
            }
        }
        if (!ok) {
            StringBuilder exp = new StringBuilder("[");
            for (int i = 0; i < axes.size(); i++) {
                exp.append(i > 0 ? ", " : "").append(expected[i] < 0 ? "*" : Long.toString(expected[i]));
            }
            exp.append(']');
            problems.add(fileOf(w.tensor(), where) + ": tensor '" + w.tensor().name() + "' does not match "
                    + cfg.source() + "; expected " + (w.transposed() ? "(transposed) " : "") + exp + " ("
                    + axesText(axes) + "), found " + Arrays.toString(w.tensor().shape()));
        }
    }

    /** The file holding a tensor, for messages; the checkpoint's name for in-memory tensors. */
    private static String fileOf(Tensor t, String fallback) {
        return t.fileRegion().map(r -> r.path().getFileName().toString()).orElse(fallback);
    }

    private static String axesText(List<Axis> axes) {
        StringBuilder b = new StringBuilder();
        for (Axis a : axes) {
            b.append(b.length() > 0 ? " × " : "").append(a.id());
        }
        return b.toString();
    }

    public Architecture architecture() {
        return arch;
    }

    public ModelConfig config() {
        return config;
    }

    public Dims dims() {
        return dims;
    }

    public Checkpoint checkpoint() {
        return checkpoint;
    }

    /** The module prefix this checkpoint uses ({@code model.}, {@code bert.}, or empty). */
    public String prefix() {
        return prefix;
    }

    /** Every weight, in storage order. */
    public List<Weight> weights() {
        return weights;
    }

    /** The weights with this role, in storage order. */
    public List<Weight> byRole(Role role) {
        List<Weight> out = new ArrayList<>();
        for (Weight w : weights) {
            if (w.role() == role) {
                out.add(w);
            }
        }
        return out;
    }

    /** The weights of block {@code layer}. */
    public List<Weight> layer(int layer) {
        List<Weight> out = new ArrayList<>();
        for (Weight w : weights) {
            if (w.layer() == layer) {
                out.add(w);
            }
        }
        return out;
    }

    /** The weight with this HF name, if present. */
    public Optional<Weight> find(String name) {
        for (Weight w : weights) {
            if (w.name().equals(name)) {
                return Optional.of(w);
            }
        }
        return Optional.empty();
    }

    /** Parameter count per role (buffers excluded), in role order. */
    public Map<Role, Long> parametersByRole() {
        Map<Role, Long> out = new EnumMap<>(Role.class);
        for (Weight w : weights) {
            if (w.role() != Role.BUFFER) {
                out.merge(w.role(), w.tensor().numel(), Long::sum);
            }
        }
        return new LinkedHashMap<>(out);
    }

    /** Total parameters (buffers excluded). */
    public long parameterCount() {
        long n = 0;
        for (long v : parametersByRole().values()) {
            n = Math.addExact(n, v);
        }
        return n;
    }
}
