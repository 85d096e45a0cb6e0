package scion.io.arch;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import scion.io.InvalidInputException;
import scion.io.Json;

/**
 * The registry of known families, loaded once from the architecture resources: {@code /scion/arch/families.json} lists
 * the families (in the order they are shown to users), each described by {@code /scion/arch/<family>.json}. This is
 * the one place that knows which families exist; a new family is a new JSON file and a line in the list.
 */
public final class Architectures {
    private static final String INDEX = "/scion/arch/families.json";

    /** Every family Scion knows, in the order they are listed to users. */
    public static final List<String> FAMILIES = readIndex();

    private static final Map<String, Architecture> BY_FAMILY = new LinkedHashMap<>();

    static {
        for (String f : FAMILIES) {
            BY_FAMILY.put(f, Architecture.load(f));
        }
    }

    private Architectures() {}

    private static List<String> readIndex() {
        try (InputStream in = Architectures.class.getResourceAsStream(INDEX)) {
            if (in == null) {
                throw new IllegalStateException("missing architecture index " + INDEX);
            }
            List<String> out = new ArrayList<>();
            for (JsonNode f : Json.mapper().readTree(in).get("families")) {
                out.add(f.asText());
            }
            return List.copyOf(out);
        } catch (IOException e) {
            throw new IllegalStateException("cannot read architecture index " + INDEX, e);
        }
    }

    public static Collection<Architecture> all() {
        return BY_FAMILY.values();
    }

    /** The family for a config.json {@code model_type}; unknown types are an error that lists the known ones. */
    public static Architecture forModelType(String modelType, String where) {
        for (Architecture a : BY_FAMILY.values()) {
            if (a.modelTypes().contains(modelType)) {
                return a;
            }
        }
        throw InvalidInputException.of(
                where, "unsupported architecture (model_type)", "one of " + knownModelTypes(), "'" + modelType + "'");
    }

    public static Optional<Architecture> byFamily(String family) {
        return Optional.ofNullable(BY_FAMILY.get(family));
    }

    /** Every model_type Scion accepts. */
    public static List<String> knownModelTypes() {
        List<String> out = new ArrayList<>();
        for (Architecture a : BY_FAMILY.values()) {
            out.addAll(a.modelTypes());
        }
        return out;
    }
}
