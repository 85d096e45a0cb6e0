package scion.io.config;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import scion.io.InvalidInputException;
import scion.io.Json;

/**
 * A typed view of a Hugging Face {@code config.json}: the sizes operators need, read through the names each family
 * uses ({@code hidden_size} / {@code n_embd} / {@code d_model}, ...), and written back with only the fields an
 * operator changed.
 *
 * <p>The original JSON object is kept whole; {@link #with(Field, Object)} returns a copy that records the change
 * under the key the file already used for that field (or the field's first name), so unknown keys, their order and
 * their values survive a round trip.
 */
public final class ModelConfig {

    /** The fields Scion reads, each with the config.json keys that can hold it, first one preferred. */
    public enum Field {
        MODEL_TYPE("model_type"),
        HIDDEN("hidden_size", "n_embd", "d_model"),
        INTERMEDIATE("intermediate_size", "n_inner", "ffn_dim"),
        LAYERS("num_hidden_layers", "n_layer", "num_layers"),
        HEADS("num_attention_heads", "n_head"),
        KV_HEADS("num_key_value_heads", "num_kv_heads"),
        HEAD_DIM("head_dim"),
        VOCAB("vocab_size"),
        MAX_POSITIONS("max_position_embeddings", "n_positions"),
        TYPE_VOCAB("type_vocab_size"),
        NORM_EPS("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon"),
        TIE_EMBEDDINGS("tie_word_embeddings"),
        ROPE_THETA("rope_theta", "rotary_emb_base", "rope_parameters.rope_theta"),
        ROPE_SCALING("rope_scaling", "rope_parameters"),
        PARTIAL_ROTARY("partial_rotary_factor", "rotary_pct", "rope_parameters.partial_rotary_factor"),
        DTYPE("torch_dtype", "dtype"),
        NAME("_name_or_path");

        private final List<String> keys;

        Field(String... keys) {
            this.keys = List.of(keys);
        }

        public List<String> keys() {
            return keys;
        }
    }

    private final ObjectNode json;
    private final String source; // for error messages: "config.json" path or "inferred from model.onnx"
    private final Map<Field, Object> changes;

    private ModelConfig(ObjectNode json, String source, Map<Field, Object> changes) {
        this.json = json;
        this.source = source;
        this.changes = changes;
    }

    /** Reads and parses {@code config.json}. */
    public static ModelConfig read(Path file) {
        try {
            byte[] bytes = Files.readAllBytes(file);
            return parse(new String(bytes, StandardCharsets.UTF_8), file.toString());
        } catch (IOException e) {
            throw new InvalidInputException(file + ": cannot read config.json (" + e.getMessage() + ")", e);
        }
    }

    /** Parses config JSON text; {@code source} names it in errors. */
    public static ModelConfig parse(String text, String source) {
        JsonNode node;
        try {
            node = Json.mapper().readTree(text);
        } catch (JsonProcessingException e) {
            throw InvalidInputException.of(
                    source,
                    "not valid JSON",
                    "a JSON object",
                    e.getOriginalMessage().replace('\n', ' '));
        }
        if (node == null || !node.isObject()) {
            throw InvalidInputException.of(
                    source, "config is not a JSON object", "an object", node == null ? "nothing" : node.getNodeType());
        }
        return new ModelConfig((ObjectNode) node, source, new LinkedHashMap<>());
    }

    /** A config built from values inferred from the weights (ONNX files carry no config.json). */
    public static ModelConfig inferred(Map<Field, Object> values, String source) {
        ObjectNode node = JsonNodeFactory.instance.objectNode();
        for (Map.Entry<Field, Object> e : values.entrySet()) {
            node.set(e.getKey().keys().get(0), Json.mapper().valueToTree(e.getValue()));
        }
        return new ModelConfig(node, source, new LinkedHashMap<>());
    }

    public String source() {
        return source;
    }

    private Optional<JsonNode> raw(Field f) {
        if (changes.containsKey(f)) {
            return Optional.of(Json.mapper().valueToTree(changes.get(f)));
        }
        for (String k : f.keys()) {
            JsonNode v = at(json, k);
            if (v != null && !v.isNull()) {
                return Optional.of(v);
            }
        }
        return Optional.empty();
    }

    private static JsonNode at(JsonNode node, String dottedKey) {
        JsonNode v = node;
        for (String part : dottedKey.split("\\.", -1)) {
            v = v == null ? null : v.get(part);
        }
        return v;
    }

    /** The integer value of a field, if present; a non-integer is an error naming the key. */
    public Optional<Integer> integer(Field f) {
        return raw(f).map(v -> {
            if (!v.canConvertToInt() || !v.isIntegralNumber()) {
                throw InvalidInputException.of(
                        source, "field '" + keyFor(f) + "' is not an integer", "an integer", v.toString());
            }
            return v.intValue();
        });
    }

    /** The integer value of a required field; absence is an error naming the keys tried. */
    public int require(Field f) {
        return integer(f)
                .orElseThrow(
                        () -> InvalidInputException.of(source, "missing field", "one of " + f.keys(), "none of them"));
    }

    public Optional<Double> number(Field f) {
        return raw(f).map(v -> {
            if (!v.isNumber()) {
                throw InvalidInputException.of(
                        source, "field '" + keyFor(f) + "' is not a number", "a number", v.toString());
            }
            return v.doubleValue();
        });
    }

    public Optional<Boolean> bool(Field f) {
        return raw(f).map(v -> {
            if (!v.isBoolean()) {
                throw InvalidInputException.of(
                        source, "field '" + keyFor(f) + "' is not a boolean", "true or false", v.toString());
            }
            return v.booleanValue();
        });
    }

    public Optional<String> string(Field f) {
        return raw(f).map(v -> v.isTextual() ? v.textValue() : v.toString());
    }

    /** Any JSON value by its key (for family-specific fields such as {@code do_layer_norm_before}). */
    public Optional<JsonNode> get(String key) {
        JsonNode v = json.get(key);
        return v == null || v.isNull() ? Optional.empty() : Optional.of(v);
    }

    /** The key this file uses for {@code f}, or the preferred key when absent. */
    public String keyFor(Field f) {
        for (String k : f.keys()) {
            if (at(json, k) != null) {
                return k;
            }
        }
        return f.keys().get(0);
    }

    /** A copy with {@code f} set to {@code value}; only changed fields are rewritten by {@link #toJson()}. */
    public ModelConfig with(Field f, Object value) {
        Map<Field, Object> c = new LinkedHashMap<>(changes);
        c.put(f, value);
        return new ModelConfig(json, source, c);
    }

    /** The fields changed since reading. */
    public Map<Field, Object> changes() {
        return Map.copyOf(changes);
    }

    /** The JSON text: the original object with the changed fields replaced in place (new ones appended). */
    public String toJson() {
        ObjectNode out = json.deepCopy();
        for (Map.Entry<Field, Object> e : changes.entrySet()) {
            String[] path = keyFor(e.getKey()).split("\\.", -1);
            ObjectNode parent = out;
            for (int i = 0; i < path.length - 1; i++) {
                JsonNode child = parent.get(path[i]);
                parent = child instanceof ObjectNode ? (ObjectNode) child : parent.putObject(path[i]);
            }
            parent.set(path[path.length - 1], Json.mapper().valueToTree(e.getValue()));
        }
        try {
            return Json.mapper().writeValueAsString(out) + "\n";
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("config.json cannot be serialised", e);
        }
    }

    /** The keys of the original object, in order. */
    public List<String> keys() {
        List<String> k = new java.util.ArrayList<>();
        for (Iterator<String> it = json.fieldNames(); it.hasNext(); ) {
            k.add(it.next());
        }
        return k;
    }
}
