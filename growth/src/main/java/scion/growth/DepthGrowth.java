package scion.growth;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.Function;
import scion.io.InvalidInputException;
import scion.io.arch.Architecture;
import scion.io.arch.LayerRemap;
import scion.io.arch.Role;
import scion.io.arch.WeightGraph;
import scion.io.arch.WeightGraph.Weight;
import scion.io.config.ModelConfig;
import scion.io.config.ModelConfig.Field;
import scion.io.onnx.OnnxModel;
import scion.io.tensor.DType;
import scion.io.tensor.Tensor;

/**
 * Depth growth: a checkpoint with more transformer blocks, built from the blocks it has.
 *
 * <p>Two methods:
 *
 * <ul>
 *   <li>{@link Method#IDENTITY} — each new block is a copy of the block it follows with its output projections
 *       zeroed: attention {@code o} ({@link Role#ATTN_O}) and MLP {@code down} ({@link Role#MLP_DOWN}), weights and
 *       biases. In a pre-LN residual block {@code h = x + Attn(LN₁(x)); y = h + MLP(LN₂(h))} (or the parallel form
 *       {@code y = x + Attn(LN₁(x)) + MLP(LN₂(x))} of gpt_neox) both branches then add exactly zero, so {@code y = x}
 *       and the grown model computes the source's function bit for bit: <b>function-preserving, exact</b> for llama,
 *       mistral, qwen2, gemma, gpt2, gpt_neox (parallel or sequential residual) and opt with {@code
 *       do_layer_norm_before = true}. Post-LN blocks ({@code y = LN₂(h + MLP(h)), h = LN₁(x + Attn(x))}: bert, opt
 *       with {@code do_layer_norm_before = false}) normalise even a zero branch, {@code LN(x) ≠ x}, so identity growth
 *       is <b>refused</b> there rather than silently changing the function; gpt2 with {@code
 *       scale_attn_by_inverse_layer_idx} scales attention by the block index, so it is refused unless every new block
 *       goes after the last one (no source block changes index). Copying the neighbour's other weights (rather than
 *       random ones) gives the new block a trained starting point once training moves its zero projections (as in
 *       LLaMA Pro's identity blocks, Wu et al. 2024).
 *   <li>{@link Method#STACK} — new blocks are unchanged copies (depth up-scaling, Kim et al. 2023 "SOLAR 10.7B":
 *       layers {@code 0..n-m-1} of one copy followed by {@code m..n-1} of another). <b>Not function-preserving</b>:
 *       the copies add their branches a second time; the model needs continued training.
 * </ul>
 *
 * <p>Where new blocks go ({@link Params#positions()}): a list of source block indices {@code i} ({@code 0 ≤ i < L}),
 * each inserting one new block right after block {@code i}, copying block {@code i} (repeat an index for several).
 * Defaults: for {@code identity}, spread evenly — the {@code j}-th of {@code k} new blocks follows source block
 * {@code ⌊(2j+1)·L / 2k⌋} (one after every block when {@code k = L}); for {@code stack}, the middle {@code k} blocks
 * {@code s..s+k-1} ({@code s = ⌊(L-k)/2⌋}) are repeated right after themselves, which is exactly SOLAR's layout (32 →
 * 48: {@code 0..23, 8..31}); {@code stack} without positions grows by at most ×2.
 *
 * <p>Blocks are renumbered, {@code num_hidden_layers} (or the family's key) and a per-layer {@code layer_types} list
 * are rewritten. The operator works on specs: {@link #plan} checks everything from names, shapes and config.json;
 * {@link #tensors} then maps each output tensor to a lazy view (a renamed source tensor, which writers copy
 * zero-copy, or zeros), so peak memory does not depend on the model. Width growth composes: pass its per-weight
 * result as the source of each weight. Safetensors only: an ONNX graph's blocks are nodes, not names, and are not
 * duplicated.
 */
public final class DepthGrowth {
    private DepthGrowth() {}

    /** How new blocks are made. */
    public enum Method {
        /** Copies with zeroed output projections: function-preserving on pre-LN families. */
        IDENTITY,
        /** Unchanged copies (depth up-scaling): not function-preserving. */
        STACK;

        public String id() {
            return name().toLowerCase(Locale.ROOT);
        }

        /** Parses {@code identity} or {@code stack} (the {@code --depth-method} values). */
        public static Method parse(String s) {
            for (Method m : values()) {
                if (m.id().equals(s.trim().toLowerCase(Locale.ROOT))) {
                    return m;
                }
            }
            throw InvalidInputException.of("--depth-method", "unknown method", "identity or stack", "'" + s + "'");
        }
    }

    /**
     * What to grow to.
     *
     * @param depth the number of blocks of the result ({@code --depth})
     * @param method how new blocks are made ({@code --depth-method})
     * @param positions source block indices after which a new block goes, one entry per new block, or empty for the
     *     method's default ({@code --positions})
     */
    public record Params(int depth, Method method, List<Integer> positions) {
        public Params {
            positions = positions == null ? List.of() : List.copyOf(positions);
        }

        /** Parses the command-line values; {@code method} and {@code positions} may be null (defaults). */
        public static Params parse(int depth, String method, String positions) {
            Method m = method == null ? Method.IDENTITY : Method.parse(method);
            List<Integer> pos = new ArrayList<>();
            if (positions != null && !positions.isBlank()) {
                for (String p : positions.split(",", -1)) {
                    try {
                        pos.add(Integer.parseInt(p.trim()));
                    } catch (NumberFormatException e) {
                        throw InvalidInputException.of(
                                "--positions",
                                "not a list of block indices",
                                "comma-separated integers such as 1,3,5",
                                "'" + positions + "'");
                    }
                }
            }
            return new Params(depth, m, pos);
        }
    }

    /**
     * One block of the result.
     *
     * @param source the source block whose weights it takes
     * @param added whether it is a new block (zeroed outputs under {@code identity}, a plain copy under {@code stack})
     */
    public record Slot(int source, boolean added) {}

    /**
     * A checked plan.
     *
     * @param family the architecture family
     * @param sourceLayers blocks of the source
     * @param slots the blocks of the result, in order
     * @param method how new blocks are made
     * @param functionPreserving whether the result computes the source's function exactly
     * @param notes what a report should tell the user (exactness, layout), one sentence each
     */
    public record Plan(
            String family,
            int sourceLayers,
            List<Slot> slots,
            Method method,
            boolean functionPreserving,
            List<String> notes) {
        public Plan {
            slots = List.copyOf(slots);
            notes = List.copyOf(notes);
        }

        /** Blocks of the result. */
        public int layers() {
            return slots.size();
        }

        /** The layout as source indices, new blocks marked {@code +}: {@code 0 +0 1 +1}. */
        public String layout() {
            StringBuilder b = new StringBuilder();
            for (Slot s : slots) {
                b.append(b.length() > 0 ? " " : "").append(s.added() ? "+" : "").append(s.source());
            }
            return b.toString();
        }

        /** The parameters as provenance entries. */
        public Map<String, String> parameters() {
            Map<String, String> m = new LinkedHashMap<>();
            m.put("depth", Integer.toString(layers()));
            m.put("depth_method", method.id());
            m.put("depth_layout", layout());
            return m;
        }
    }

    /** Checks {@code p} against the model on specs alone; every problem is reported in one exception. */
    public static Plan plan(WeightGraph graph, Params p) {
        Architecture arch = graph.architecture();
        ModelConfig cfg = graph.config();
        int n = graph.dims().layers();
        List<String> problems = new ArrayList<>();
        if (graph.checkpoint() instanceof OnnxModel) {
            throw InvalidInputException.of(
                    "--depth",
                    "depth growth of an ONNX graph is not supported (its blocks are graph nodes, not tensor names)",
                    "a safetensors checkpoint",
                    "an ONNX model; hint: grow the safetensors checkpoint, then 'scion export' it");
        }
        int k = p.depth() - n;
        if (p.depth() <= n) {
            problems.add(InvalidInputException.of(
                            "--depth",
                            "depth growth needs more blocks than the model has",
                            "more than " + n + " (" + cfg.keyFor(Field.LAYERS) + " = " + n + ")",
                            p.depth() + (p.depth() < n ? "; hint: removing blocks is 'scion prune'" : ""))
                    .getMessage());
        }
        if (k > 0 && !p.positions().isEmpty() && p.positions().size() != k) {
            problems.add(InvalidInputException.of(
                            "--positions",
                            "one position per new block",
                            k + " entries (" + n + " → " + p.depth() + ")",
                            p.positions().size() + " entries " + p.positions())
                    .getMessage());
        }
        for (int i : p.positions()) {
            if (i < 0 || i >= n) {
                problems.add(InvalidInputException.of(
                                "--positions",
                                "block index out of range",
                                "0.." + (n - 1) + " (a new block goes after the block named)",
                                i)
                        .getMessage());
            }
        }
        if (k > n && p.method() == Method.STACK && p.positions().isEmpty()) {
            problems.add(InvalidInputException.of(
                            "--depth",
                            "stack repeats the middle blocks once, so it at most doubles the depth",
                            "at most " + (2 * n),
                            p.depth() + "; hint: pass --positions, or grow twice")
                    .getMessage());
        }
        List<String> notes = new ArrayList<>();
        List<Slot> slots = problems.isEmpty() ? layout(n, k, p) : List.of();
        if (p.method() == Method.IDENTITY) {
            identityProblems(arch, cfg, slots, problems);
        }
        if (!problems.isEmpty()) {
            String rest = problems.size() > 1 ? "\n  " + String.join("\n  ", problems.subList(1, problems.size())) : "";
            throw new InvalidInputException(
                    (problems.size() > 1 ? problems.size() + " problems; " : "") + problems.get(0) + rest);
        }
        boolean preserving = p.method() == Method.IDENTITY;
        if (preserving) {
            notes.add("identity: " + k + " new block(s) with zero attention and MLP output projections; function-"
                    + "preserving and exact for the pre-LN " + arch.family() + " blocks");
        } else {
            notes.add("stack: " + k + " copied block(s); NOT function-preserving (each copy adds its branches again):"
                    + " the result needs continued training");
            if (arch.configFlag("attention_scaled_by_layer", cfg, false)) {
                notes.add("scale_attn_by_inverse_layer_idx: renumbered blocks scale attention by their new index");
            }
        }
        Plan plan = new Plan(arch.family(), n, slots, p.method(), preserving, notes);
        return plan;
    }

    private static List<Slot> layout(int n, int k, Params p) {
        List<Integer> after = new ArrayList<>(p.positions());
        if (after.isEmpty() && p.method() == Method.STACK) {
            int s = (n - k) / 2;
            List<Slot> slots = new ArrayList<>();
            for (int i = 0; i < s + k; i++) {
                slots.add(new Slot(i, false));
            }
            for (int i = s; i < s + k; i++) {
                slots.add(new Slot(i, true));
            }
            for (int i = s + k; i < n; i++) {
                slots.add(new Slot(i, false));
            }
            return slots;
        }
        if (after.isEmpty()) {
            for (int j = 0; j < k; j++) {
                after.add((int) ((2L * j + 1) * n / (2L * k)));
            }
        }
        Collections.sort(after);
        List<Slot> slots = new ArrayList<>();
        int next = 0;
        for (int i = 0; i < n; i++) {
            slots.add(new Slot(i, false));
            while (next < after.size() && after.get(next) == i) {
                slots.add(new Slot(i, true));
                next++;
            }
        }
        return slots;
    }

    private static void identityProblems(Architecture arch, ModelConfig cfg, List<Slot> slots, List<String> problems) {
        String hint = "; hint: --depth-method stack duplicates blocks (not function-preserving)";
        boolean postLn = arch.postLn(cfg);
        if (postLn) {
            problems.add(InvalidInputException.of(
                            "--depth-method identity",
                            arch.family() + " is post-LN (LayerNorm after each residual add), so a block whose"
                                    + " output projections are zero still computes LN(x) ≠ x and identity growth"
                                    + " would change the function",
                            "a pre-LN model (a norm before each branch, none after the residual add)",
                            arch.family() + hint)
                    .getMessage());
            return;
        }
        if (arch.configFlag("attention_scaled_by_layer", cfg, false)) {
            for (int i = 0; i < slots.size(); i++) {
                Slot s = slots.get(i);
                if (!s.added() && s.source() != i) {
                    problems.add(InvalidInputException.of(
                                    "--depth-method identity",
                                    "scale_attn_by_inverse_layer_idx = true scales attention by 1/(block index + 1),"
                                            + " so renumbering block " + s.source() + " to " + i
                                            + " would change the function",
                                    "new blocks only after the last block (--positions " + (slotsSource(slots) - 1)
                                            + ",...)",
                                    "a new block before block " + s.source() + hint)
                            .getMessage());
                    return;
                }
            }
        }
    }

    private static int slotsSource(List<Slot> slots) {
        int n = 0;
        for (Slot s : slots) {
            n = Math.max(n, s.source() + 1);
        }
        return n;
    }

    /**
     * Whether a weight is zeroed in a new {@code identity} block: the output projections of attention and MLP (weights
     * and biases), whatever the family calls them.
     */
    public static boolean zeroedInIdentityBlock(Weight w) {
        return w.role() == Role.ATTN_O || w.role() == Role.MLP_DOWN;
    }

    /**
     * The result's tensors, lazily, in output order: global weights where the source has them, the blocks in their new
     * order in place of the source's blocks (each block's weights in the source's storage order).
     *
     * @param source the tensor to emit for a source weight — the stored tensor itself ({@link Weight#tensor()}), or a
     *     width-grown view of it; its name is replaced by the output name, its dtype and shape are kept
     */
    public static List<Tensor> tensors(Plan plan, WeightGraph graph, Function<Weight, Tensor> source) {
        return LayerRemap.tensors(graph, sources(plan), (i, w) -> {
            Tensor t = source.apply(w);
            boolean zero = i >= 0 && plan.slots().get(i).added() && plan.method() == Method.IDENTITY;
            return zero && zeroedInIdentityBlock(w) ? new Zeros(t.name(), t.dtype(), t.shape()) : t;
        });
    }

    /**
     * The result's config: the block count under the key the file uses, and the per-layer lists ({@code layer_types}
     * of qwen2 and newer configs, written out for a qwen2 config with {@code use_sliding_window}) rebuilt from each
     * block's source by {@link LayerRemap#config}, so that no block changes kind by being renumbered.
     */
    public static ModelConfig config(Plan plan, ModelConfig cfg) {
        return LayerRemap.config(cfg, plan.family(), sources(plan));
    }

    private static int[] sources(Plan plan) {
        int[] s = new int[plan.slots().size()];
        for (int i = 0; i < s.length; i++) {
            s[i] = plan.slots().get(i).source();
        }
        return s;
    }

    /** Zeros of a dtype and shape, produced on read (every dtype's zero is all-zero bytes). */
    private static final class Zeros implements Tensor {
        private static final byte[] ZERO = new byte[1 << 16];

        private final String name;
        private final DType dtype;
        private final long[] shape;

        Zeros(String name, DType dtype, long[] shape) {
            this.name = name;
            this.dtype = dtype;
            this.shape = shape.clone();
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
            long n = Math.min(dst.remaining(), Math.max(0, byteSize() - byteOffset));
            while (n > 0) {
                int c = (int) Math.min(n, ZERO.length);
                dst.put(ZERO, 0, c);
                n -= c;
            }
        }

        @Override
        public void readFloats(long start, float[] dst, int off, int len) {
            java.util.Arrays.fill(dst, off, off + len, 0f);
        }
    }
}
