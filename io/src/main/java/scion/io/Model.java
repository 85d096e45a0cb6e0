package scion.io;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import scion.io.arch.Architecture;
import scion.io.arch.Architectures;
import scion.io.arch.Axis;
import scion.io.arch.Role;
import scion.io.arch.WeightGraph;
import scion.io.arch.WeightGraph.Alias;
import scion.io.arch.WeightSpec;
import scion.io.config.ModelConfig;
import scion.io.config.ModelConfig.Field;
import scion.io.onnx.OnnxModel;
import scion.io.onnx.OnnxReader;
import scion.io.onnx.OnnxShapeHints;
import scion.io.onnx.OnnxWeightTracer;
import scion.io.onnx.TracedWeight;
import scion.io.safetensors.SafetensorsReader;
import scion.io.tensor.Tensor;

/**
 * A model opened from disk: its checkpoint (lazy tensors), its config and its weight graph with roles.
 *
 * <p>Accepted locations: a Hugging Face folder (config.json + {@code model.safetensors} or shards with an index), a
 * single {@code .safetensors} file with a {@code config.json} beside it, or an {@code .onnx} file (its weights are
 * traced to Hugging Face names through the graph, and its sizes inferred from the weights and shape constants), or a
 * hub reference {@code org/name[@revision]} already in the local Hugging Face cache ({@link HubCache}; never fetched).
 * A checkpoint factorised by {@code scion lowrank} opens as the model it approximates: each factor pair is one
 * weight whose tensor is a {@link scion.io.tensor.LowRankTensor} ({@link LowRankFactors}).
 */
public final class Model implements AutoCloseable {
    /** The on-disk format. */
    public enum Format {
        SAFETENSORS,
        ONNX
    }

    private final Path location;
    private final Format format;
    private final Checkpoint checkpoint;
    private final WeightGraph graph;
    private final int tracedCount;

    private Model(Path location, Format format, Checkpoint checkpoint, WeightGraph graph, int tracedCount) {
        this.location = location;
        this.format = format;
        this.checkpoint = checkpoint;
        this.graph = graph;
        this.tracedCount = tracedCount;
    }

    /** Opens and validates a model; nothing but headers and the ONNX graph is read. */
    public static Model open(Path location) {
        return open(location, HubCache.root());
    }

    /**
     * {@link #open(Path)} with the Hugging Face cache at {@code hubCache}: a location that does not exist and reads as
     * a hub reference ({@code org/name}, {@code org/name@rev}) opens the cached snapshot ({@link HubCache}); one not
     * in the cache is refused with the command that downloads it.
     */
    public static Model open(Path location, Path hubCache) {
        if (!Files.exists(location)) {
            String text = location.toString();
            if (HubCache.parse(text).isEmpty()) {
                throw InvalidInputException.of(
                        text,
                        "no such file or folder",
                        "a model folder, .safetensors or .onnx file, or a cached hub model org/name[@revision]",
                        "nothing");
            }
            location = HubCache.resolve(hubCache, text);
        }
        Path onnx = onnxFile(location);
        if (onnx != null) {
            return openOnnx(onnx);
        }
        Path folder = Files.isDirectory(location)
                ? location
                : location.toAbsolutePath().getParent();
        Path configFile = folder.resolve("config.json");
        if (!Files.isRegularFile(configFile)) {
            throw InvalidInputException.of(
                    location.toString(),
                    "no config.json beside the weights",
                    "a Hugging Face model folder with config.json",
                    "no config.json in " + folder);
        }
        ModelConfig config = ModelConfig.read(configFile);
        String type = config.string(Field.MODEL_TYPE)
                .orElseThrow(() -> InvalidInputException.of(
                        configFile.toString(),
                        "missing field 'model_type'",
                        "one of " + Architectures.knownModelTypes(),
                        "none"));
        Architecture arch = Architectures.forModelType(type, configFile.toString());
        Checkpoint ckpt = SafetensorsReader.open(location);
        try {
            // A factorised checkpoint (scion lowrank) is read as the dense model it approximates.
            LowRankFactors.View v = LowRankFactors.safetensors(ckpt, config);
            WeightGraph g = WeightGraph.build(v.checkpoint(), arch, config, v.aliases(), Set.of());
            return new Model(location, Format.SAFETENSORS, ckpt, g, 0);
        } catch (RuntimeException e) {
            ckpt.close();
            throw e;
        }
    }

    private static Path onnxFile(Path location) {
        if (Files.isRegularFile(location)) {
            return location.getFileName().toString().endsWith(".onnx") ? location : null;
        }
        List<Path> found = new ArrayList<>();
        boolean safetensors = false;
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(location)) {
            for (Path p : ds) {
                String n = p.getFileName().toString();
                if (n.endsWith(".onnx")) {
                    found.add(p);
                } else if (n.endsWith(".safetensors")) {
                    safetensors = true;
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(location + ": cannot list the folder", e);
        }
        if (!safetensors && found.size() == 1) {
            return found.get(0);
        }
        return null;
    }

    private static Model openOnnx(Path file) {
        OnnxModel m = OnnxReader.open(file);
        try {
            OnnxWeightTracer.Result traced = OnnxWeightTracer.trace(m);
            String where = file.getFileName().toString();
            if (!traced.unassigned().isEmpty()) {
                StringBuilder b = new StringBuilder();
                for (OnnxWeightTracer.Unassigned u : traced.unassigned()) {
                    b.append(b.length() > 0 ? "; " : "")
                            .append('\'')
                            .append(u.initializer())
                            .append("' (")
                            .append(u.reason())
                            .append(')');
                }
                throw InvalidInputException.of(
                        where,
                        traced.unassigned().size() + " initializer(s) could not be traced to a model parameter",
                        "every initializer consumed by a known layer",
                        b);
            }
            Map<String, Alias> aliases = new HashMap<>();
            for (TracedWeight t : traced.weights()) {
                aliases.putIfAbsent(t.initializer(), new Alias(t.hfName(), t.transposed()));
            }
            Set<String> constants = new HashSet<>();
            for (OnnxWeightTracer.GraphConstant c : traced.constants()) {
                constants.add(c.initializer());
            }
            for (Tensor t : m.tensors()) {
                if (!aliases.containsKey(t.name())) {
                    constants.add(t.name()); // Constant-node tensors and graph plumbing: not parameters
                }
            }
            // Factor pairs (scion lowrank: MatMul(MatMul(x, A), B)) are read as the dense weight they approximate.
            LowRankFactors.View v = LowRankFactors.onnx(m, aliases);
            Architecture arch = detect(v.checkpoint(), v.aliases(), where);
            ModelConfig config = infer(arch, v.checkpoint(), v.aliases(), traced.hints(), where);
            WeightGraph g = WeightGraph.build(v.checkpoint(), arch, config, v.aliases(), constants);
            int renamed = 0;
            for (TracedWeight t : traced.weights()) {
                if (!t.initializer().equals(t.hfName())) {
                    renamed++;
                }
            }
            return new Model(file, Format.ONNX, m, g, renamed);
        } catch (RuntimeException e) {
            m.close();
            throw e;
        }
    }

    /** The family whose tensor names cover the most initializers (and include its embedding). */
    private static Architecture detect(Checkpoint ckpt, Map<String, Alias> aliases, String where) {
        Architecture best = null;
        int bestCount = 0;
        for (Architecture a : Architectures.all()) {
            for (String prefix : a.prefixes()) {
                int n = 0;
                boolean embedding = false;
                for (Tensor t : ckpt.tensors()) {
                    if (!aliases.containsKey(t.name())) {
                        continue;
                    }
                    String name = aliases.containsKey(t.name())
                            ? aliases.get(t.name()).name()
                            : t.name();
                    for (WeightSpec s : a.weights()) {
                        if (s.match(prefix, name).isPresent()) {
                            n++;
                            embedding |= s.role() == Role.EMBEDDING;
                            break;
                        }
                    }
                }
                if (embedding && n > bestCount) {
                    best = a;
                    bestCount = n;
                }
            }
        }
        if (best == null) {
            throw InvalidInputException.of(
                    where,
                    "unknown architecture: no family's token embedding found among the weights",
                    "one of " + Architectures.FAMILIES,
                    "none matched");
        }
        return best;
    }

    /** Sizes of an ONNX model from its weight shapes and the graph's shape constants. */
    private static ModelConfig infer(
            Architecture arch, Checkpoint ckpt, Map<String, Alias> aliases, OnnxShapeHints hints, String where) {
        Map<Role, long[]> shapes = new EnumMap<>(Role.class);
        int layers = 0;
        for (Tensor t : ckpt.tensors()) {
            Alias a = aliases.get(t.name());
            if (a == null) {
                continue;
            }
            for (String prefix : arch.prefixes()) {
                for (WeightSpec s : arch.weights()) {
                    Optional<Integer> layer = s.match(prefix, a.name());
                    if (layer.isPresent()) {
                        layers = Math.max(layers, layer.get() + 1);
                        if (!s.bias() && !shapes.containsKey(s.role())) {
                            long[] sh = t.shape().clone();
                            if (a.transposed() && sh.length == 2) {
                                sh = new long[] {sh[1], sh[0]};
                            }
                            shapes.put(s.role(), sh);
                        }
                    }
                }
            }
        }
        Map<Field, Object> v = new EnumMap<>(Field.class);
        v.put(Field.MODEL_TYPE, arch.modelTypes().get(0));
        long[] emb = shapes.get(Role.EMBEDDING);
        v.put(Field.VOCAB, Math.toIntExact(emb[0]));
        int hidden = Math.toIntExact(emb[1]);
        v.put(Field.HIDDEN, hidden);
        v.put(Field.LAYERS, layers);
        int headDim = hints.headDim().orElse(0);
        int heads = hints.attentionHeads().orElse(0);
        if (heads == 0 && headDim > 0) {
            heads = hidden / headDim;
        }
        if (heads == 0) {
            throw InvalidInputException.of(
                    where,
                    "cannot find the number of attention heads in the graph",
                    "a Reshape of the attention projections to [batch, seq, heads, head_dim]",
                    "no such shape constant");
        }
        v.put(Field.HEADS, heads);
        if (headDim > 0 && headDim * heads != hidden) {
            v.put(Field.HEAD_DIM, headDim);
        }
        long[] k = shapes.get(Role.ATTN_K);
        if (k != null && headDim > 0) {
            v.put(Field.KV_HEADS, Math.toIntExact(k[0] / headDim));
        }
        long[] up = shapes.containsKey(Role.MLP_UP) ? shapes.get(Role.MLP_UP) : shapes.get(Role.MLP_GATE);
        if (up != null) {
            int ffnAxis = arch.weights().stream()
                    .filter(s -> s.role() == Role.MLP_UP && !s.bias())
                    .findFirst()
                    .map(s -> s.axes().indexOf(Axis.FFN))
                    .orElse(0);
            v.put(Field.INTERMEDIATE, Math.toIntExact(up[ffnAxis]));
        }
        long[] pos = shapes.get(Role.POSITION_EMBEDDING);
        if (pos != null) {
            v.put(Field.MAX_POSITIONS, Math.toIntExact(pos[0] - arch.positionOffset()));
        }
        long[] types = shapes.get(Role.TOKEN_TYPE_EMBEDDING);
        if (types != null) {
            v.put(Field.TYPE_VOCAB, Math.toIntExact(types[0]));
        }
        hints.layerNormEpsilon().ifPresent(e -> v.put(Field.NORM_EPS, e));
        if (arch.isCausalLm()) {
            boolean hasHead = ckpt.tensors().stream().anyMatch(t -> arch.global(Role.LM_HEAD)
                    .map(s -> s.match(
                                    "",
                                    aliases.getOrDefault(t.name(), new Alias(t.name(), false))
                                            .name())
                            .isPresent())
                    .orElse(false));
            v.put(Field.TIE_EMBEDDINGS, !hasHead);
        }
        return ModelConfig.inferred(v, "sizes inferred from " + where);
    }

    public Path location() {
        return location;
    }

    public Format format() {
        return format;
    }

    public Checkpoint checkpoint() {
        return checkpoint;
    }

    public WeightGraph graph() {
        return graph;
    }

    public ModelConfig config() {
        return graph.config();
    }

    /** How many stored tensors got their HF name by tracing the ONNX graph (0 for safetensors). */
    public int tracedCount() {
        return tracedCount;
    }

    /** The ONNX model, when this is one. */
    public Optional<OnnxModel> onnx() {
        return checkpoint instanceof OnnxModel ? Optional.of((OnnxModel) checkpoint) : Optional.empty();
    }

    @Override
    public void close() {
        checkpoint.close();
    }
}
