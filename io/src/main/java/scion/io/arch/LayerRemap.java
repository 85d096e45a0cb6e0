package scion.io.arch;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Optional;
import java.util.function.Function;
import scion.io.Json;
import scion.io.arch.WeightGraph.Weight;
import scion.io.config.ModelConfig;
import scion.io.config.ModelConfig.Field;
import scion.io.tensor.DType;
import scion.io.tensor.FileRegion;
import scion.io.tensor.Tensor;

/**
 * A new sequence of transformer blocks made from a checkpoint's blocks: block {@code i} of the result is source block
 * {@code sources[i]}. One remap serves every operator that changes depth by naming tensors: depth growth (a source
 * block listed twice), layer pruning (blocks left out), passthrough merges (blocks of several models, one graph at a
 * time).
 *
 * <p>The remap works on names and config only. {@link #tensors} lists the result's tensors lazily: each global weight
 * (embeddings, final norm, head) under its own name, then the blocks in their new order, block {@code i}'s weights
 * named {@link WeightSpec#name(String, int) spec.name(prefix, i)} — in the source's storage order within a block. A
 * file-backed tensor stays file-backed under its new name ({@link #rename}), so writers copy it without reading it
 * into memory. {@link #config} rewrites the layer count under the key the file uses and the per-layer lists
 * ({@code layer_types}, {@code no_rope_layers}) from each block's source entry; a config of a family with the
 * {@code layer_types} sliding-window rule (Qwen), {@code use_sliding_window} and no {@code layer_types} gets one written out from {@code max_window_layers}, so that no block
 * changes its attention kind by being renumbered.
 *
 * <p>Not handled here (the caller's business): anything a block computes from its own index, such as gpt2's {@code
 * scale_attn_by_inverse_layer_idx}.
 */
public final class LayerRemap {
    /** Per-layer config lists (one entry per block) rebuilt from each block's source entry. */
    private static final List<String> PER_LAYER_LISTS = List.of("layer_types", "no_rope_layers");

    private LayerRemap() {}

    /**
     * The tensor to emit for a weight of the result: {@code outputBlock} is the result's block index ({@code -1} for a
     * global weight), {@code w} the source weight it comes from.
     */
    @FunctionalInterface
    public interface BlockSource {
        Tensor tensor(int outputBlock, Weight w);
    }

    /** The result's tensors with the stored tensors themselves (renamed, zero-copy). */
    public static List<Tensor> tensors(WeightGraph graph, int[] sources) {
        return tensors(graph, sources, Weight::tensor);
    }

    /**
     * The result's tensors, lazily, in output order: global weights where the source has them, the blocks in their new
     * order in place of the source's blocks.
     *
     * @param sources output block {@code i} is source block {@code sources[i]} (each in {@code 0..L-1}; repeats and
     *     omissions allowed, at least one block)
     * @param source the tensor to emit for a source weight — {@link Weight#tensor()} or a transformed view of it; its
     *     name is replaced by the output name, its dtype and shape are kept
     */
    public static List<Tensor> tensors(WeightGraph graph, int[] sources, Function<Weight, Tensor> source) {
        return tensors(graph, sources, (i, w) -> source.apply(w));
    }

    /** As {@link #tensors(WeightGraph, int[], Function)}, with the output block index given to the hook. */
    public static List<Tensor> tensors(WeightGraph graph, int[] sources, BlockSource source) {
        check(sources, graph.dims().layers());
        List<List<Weight>> blocks = new ArrayList<>();
        for (int l = 0; l < graph.dims().layers(); l++) {
            blocks.add(graph.layer(l));
        }
        List<Tensor> out = new ArrayList<>();
        boolean blocksDone = false;
        for (Weight w : graph.weights()) {
            if (w.layer() < 0) {
                out.add(rename(source.tensor(-1, w), w.name()));
                continue;
            }
            if (blocksDone) {
                continue;
            }
            blocksDone = true;
            for (int i = 0; i < sources.length; i++) {
                for (Weight lw : blocks.get(sources[i])) {
                    out.add(rename(source.tensor(i, lw), lw.spec().name(graph.prefix(), i)));
                }
            }
        }
        return out;
    }

    /** The result's config.json values, with the layer count and per-layer lists of {@code graph}'s family. */
    public static ModelConfig config(WeightGraph graph, int[] sources) {
        return config(graph.config(), graph.architecture(), sources);
    }

    /** As {@link #config(ModelConfig, Architecture, int[])} for a registered family, by its id. */
    public static ModelConfig config(ModelConfig cfg, String family, int[] sources) {
        Architecture arch = Architectures.byFamily(family)
                .orElseThrow(() -> new IllegalArgumentException("unknown family '" + family + "'"));
        return config(cfg, arch, sources);
    }

    /**
     * The result's config: {@code sources.length} blocks under the key the file uses for the layer count, and the
     * per-layer lists rebuilt in the new block order. {@code cfg} may already carry other operators' changes (width
     * growth); its layer count is the source's.
     *
     * @param arch the architecture (a {@code layer_types} sliding-window rule has an implicit per-layer list)
     */
    public static ModelConfig config(ModelConfig cfg, Architecture arch, int[] sources) {
        int sourceLayers = cfg.require(Field.LAYERS);
        check(sources, sourceLayers);
        ModelConfig changed = cfg.with(Field.LAYERS, sources.length);
        List<String> lists = new ArrayList<>();
        for (String key : PER_LAYER_LISTS) {
            Optional<JsonNode> v = cfg.get(key);
            if (v.isPresent() && v.get().isArray() && v.get().size() == sourceLayers) {
                lists.add(key);
            }
        }
        // A family whose windows follow layer_types, with windows on and no list in the file: the list is implied
        // (Qwen: from max_window_layers on; Gemma 2: alternating). Write it out so no block changes its kind.
        boolean[] sliding = arch.slidingLayers(cfg, sourceLayers);
        boolean implicitWindows =
                !lists.contains("layer_types") && "layer_types".equals(arch.slidingWindow()) && contains(sliding, true);
        if (lists.isEmpty() && !implicitWindows) {
            return changed;
        }
        try {
            ObjectNode json = (ObjectNode) Json.mapper().readTree(changed.toJson());
            for (String key : lists) {
                JsonNode src = cfg.get(key).orElseThrow();
                ArrayNode arr = json.putArray(key);
                for (int s : sources) {
                    arr.add(src.get(s));
                }
            }
            if (implicitWindows) {
                ArrayNode arr = json.putArray("layer_types");
                for (int s : sources) {
                    arr.add(sliding[s] ? "sliding_attention" : "full_attention");
                }
            }
            return ModelConfig.parse(Json.mapper().writeValueAsString(json), cfg.source());
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("config.json written by ModelConfig cannot be read back", e);
        }
    }

    /**
     * {@code t} under another name: {@code t} itself when the name is unchanged, else a view that reads through to it
     * (a file-backed tensor stays file-backed, so writers copy it zero-copy).
     */
    public static Tensor rename(Tensor t, String name) {
        return t.name().equals(name) ? t : new Renamed(t, name);
    }

    private static boolean contains(boolean[] a, boolean v) {
        for (boolean x : a) {
            if (x == v) {
                return true;
            }
        }
        return false;
    }

    private static void check(int[] sources, int layers) {
        if (sources.length == 0) {
            throw new IllegalArgumentException("a layer remap needs at least one block, got none");
        }
        for (int s : sources) {
            if (s < 0 || s >= layers) {
                throw new IllegalArgumentException(
                        "source block " + s + " out of range 0.." + (layers - 1) + " in " + Arrays.toString(sources));
            }
        }
    }

    /** A stored tensor under another name; a file-backed one stays file-backed (writers copy it zero-copy). */
    private static final class Renamed implements Tensor {
        private final Tensor source;
        private final String name;

        Renamed(Tensor source, String name) {
            this.source = source;
            this.name = name;
        }

        @Override
        public String name() {
            return name;
        }

        @Override
        public DType dtype() {
            return source.dtype();
        }

        @Override
        public long[] shape() {
            return source.shape();
        }

        @Override
        public void readBytes(long byteOffset, ByteBuffer dst) {
            source.readBytes(byteOffset, dst);
        }

        @Override
        public Optional<FileRegion> fileRegion() {
            return source.fileRegion();
        }

        @Override
        public void readFloats(long start, float[] dst, int off, int len) {
            source.readFloats(start, dst, off, len);
        }
    }
}
