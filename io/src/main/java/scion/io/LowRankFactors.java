package scion.io;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import scion.io.arch.WeightGraph.Alias;
import scion.io.config.ModelConfig;
import scion.io.tensor.LowRankTensor;
import scion.io.tensor.Tensor;

/**
 * How a factorised checkpoint ({@code scion lowrank}) stores a weight as two factors, and the view that reads such a
 * checkpoint as the model it approximates.
 *
 * <p>A weight {@code <module>.weight} is replaced by {@code <module>.lowrank_a.weight} (A, the input-side factor)
 * and {@code <module>.lowrank_b.weight} (B, the output-side factor); its bias is untouched. In a safetensors folder
 * the factors keep the weight's storage convention (PyTorch {@code Linear}: {@code A [r, in]}, {@code B [out, r]},
 * {@code W ≈ B·A}, {@code y = (x·Aᵀ)·Bᵀ + bias}; gpt2 {@code Conv1D}: {@code A [in, r]}, {@code B [r, out]}, {@code W ≈
 * A·B}), and config.json carries the entry {@value #CONFIG_KEY}:
 *
 * <pre>{"format": "factors", "factored": {"&lt;module&gt;.weight": {"a": "...", "b": "...", "rank": r,
 *   "product": "b·a" | "a·b"}, ...}, ...}</pre>
 *
 * <p>In an ONNX file the weight's {@code MatMul(x, Wᵀ)} is two MatMuls {@code MatMul(MatMul(x, A), B)} with {@code A
 * [in, r]} and {@code B [r, out]} (the exporter's {@code [in, out]} storage): the pair is found by its names.
 * {@link #view} replaces each pair by a {@link LowRankTensor} named after the dense weight, so {@code WeightGraph},
 * the exporter and every operator see the weight they expect.
 */
public final class LowRankFactors {
    private LowRankFactors() {}

    /** The config.json key of a factorised safetensors checkpoint. */
    public static final String CONFIG_KEY = "scion_lowrank";

    /** Suffix of the input-side factor, replacing {@code .weight}. */
    public static final String A_SUFFIX = ".lowrank_a.weight";

    /** Suffix of the output-side factor, replacing {@code .weight}. */
    public static final String B_SUFFIX = ".lowrank_b.weight";

    /** The factor names of weight {@code name} ({@code <module>.weight}). */
    public static String aName(String weight) {
        return module(weight) + A_SUFFIX;
    }

    /** See {@link #aName}. */
    public static String bName(String weight) {
        return module(weight) + B_SUFFIX;
    }

    private static String module(String weight) {
        return weight.endsWith(".weight") ? weight.substring(0, weight.length() - ".weight".length()) : weight;
    }

    /**
     * A checkpoint with its factor pairs read as products, and the aliases of those products.
     *
     * @param checkpoint the view (or the checkpoint itself when it has no factors)
     * @param aliases the given aliases plus one per product (ONNX products are stored {@code [in, out]}: transposed)
     * @param factored the dense weight names that are stored as factors
     */
    public record View(Checkpoint checkpoint, Map<String, Alias> aliases, Set<String> factored) {}

    /**
     * The view of a safetensors checkpoint whose config.json has a {@value #CONFIG_KEY} entry (else {@code ckpt}
     * itself). Every listed pair must exist with multiplying shapes.
     */
    public static View safetensors(Checkpoint ckpt, ModelConfig config) {
        Optional<JsonNode> entry = config.get(CONFIG_KEY);
        if (entry.isEmpty()) {
            return new View(ckpt, Map.of(), Set.of());
        }
        String where = config.source();
        if ("dense".equals(entry.get().path("format").asText())) {
            return new View(ckpt, Map.of(), Set.of()); // --store dense: the record of a factorisation, no factors
        }
        JsonNode factored = entry.get().get("factored");
        if (factored == null || !factored.isObject()) {
            throw InvalidInputException.of(
                    where, "'" + CONFIG_KEY + "' has no 'factored' object", "{\"factored\": {...}}", entry.get());
        }
        Map<String, Pair> pairs = new LinkedHashMap<>();
        for (var it = factored.fields(); it.hasNext(); ) {
            var e = it.next();
            JsonNode v = e.getValue();
            String a = v.path("a").asText(aName(e.getKey()));
            String b = v.path("b").asText(bName(e.getKey()));
            String product = v.path("product").asText("b·a");
            if (!product.equals("b·a") && !product.equals("a·b")) {
                throw InvalidInputException.of(
                        where, "factored weight '" + e.getKey() + "' has an unknown product", "b·a or a·b", product);
            }
            pairs.put(e.getKey(), new Pair(a, b, product.equals("b·a")));
        }
        return view(ckpt, pairs, Map.of(), false);
    }

    /** The view of an ONNX checkpoint: pairs found by their names ({@code A [in, r]}, {@code B [r, out]}). */
    public static View onnx(Checkpoint ckpt, Map<String, Alias> aliases) {
        Map<String, Pair> pairs = new LinkedHashMap<>();
        for (Tensor t : ckpt.tensors()) {
            String n = t.name();
            if (n.endsWith(A_SUFFIX)) {
                String module = n.substring(0, n.length() - A_SUFFIX.length());
                String b = module + B_SUFFIX;
                if (ckpt.find(b).isPresent()) {
                    pairs.put(module + ".weight", new Pair(n, b, false));
                }
            }
        }
        if (pairs.isEmpty()) {
            return new View(ckpt, aliases, Set.of());
        }
        return view(ckpt, pairs, aliases, true);
    }

    private record Pair(String a, String b, boolean bTimesA) {}

    private static View view(Checkpoint ckpt, Map<String, Pair> pairs, Map<String, Alias> aliases, boolean transposed) {
        String where = ckpt.location().getFileName().toString();
        Map<String, Tensor> byName = new HashMap<>();
        for (Tensor t : ckpt.tensors()) {
            byName.put(t.name(), t);
        }
        Map<String, String> firstOf = new HashMap<>(); // factor name → product name, for the first factor stored
        Set<String> factorNames = new HashSet<>();
        Map<String, LowRankTensor> products = new HashMap<>();
        for (Map.Entry<String, Pair> e : pairs.entrySet()) {
            Pair p = e.getValue();
            Tensor a = byName.get(p.a());
            Tensor b = byName.get(p.b());
            if (a == null || b == null) {
                throw InvalidInputException.of(
                        where,
                        "factored weight '" + e.getKey() + "' misses a factor",
                        "tensors '" + p.a() + "' and '" + p.b() + "'",
                        (a == null ? "no '" + p.a() + "'" : "")
                                + (a == null && b == null ? ", " : "")
                                + (b == null ? "no '" + p.b() + "'" : ""));
            }
            LowRankTensor product;
            try {
                product = p.bTimesA() ? new LowRankTensor(e.getKey(), b, a) : new LowRankTensor(e.getKey(), a, b);
            } catch (IllegalArgumentException ex) {
                throw InvalidInputException.of(
                        where,
                        "the factors of '" + e.getKey() + "' do not multiply",
                        "[m, r] · [r, n]",
                        ex.getMessage());
            }
            products.put(e.getKey(), product);
            factorNames.add(p.a());
            factorNames.add(p.b());
            firstOf.put(p.a(), e.getKey());
        }
        List<Tensor> tensors = new ArrayList<>();
        for (Tensor t : ckpt.tensors()) {
            if (firstOf.containsKey(t.name())) {
                tensors.add(products.get(firstOf.get(t.name())));
            } else if (!factorNames.contains(t.name())) {
                tensors.add(t);
            }
        }
        Map<String, Alias> al = new LinkedHashMap<>(aliases);
        for (String name : products.keySet()) {
            al.put(name, new Alias(name, transposed));
        }
        return new View(new Wrapped(ckpt, List.copyOf(tensors)), al, Set.copyOf(products.keySet()));
    }

    /** A checkpoint whose tensor list is replaced; files, metadata and closing are the base's. */
    private static final class Wrapped implements Checkpoint {
        private final Checkpoint base;
        private final List<Tensor> tensors;

        Wrapped(Checkpoint base, List<Tensor> tensors) {
            this.base = base;
            this.tensors = tensors;
        }

        @Override
        public Path location() {
            return base.location();
        }

        @Override
        public List<Tensor> tensors() {
            return tensors;
        }

        @Override
        public Map<String, String> metadata() {
            return base.metadata();
        }

        @Override
        public List<Path> dataFiles() {
            return base.dataFiles();
        }

        @Override
        public void close() {
            base.close();
        }
    }
}
