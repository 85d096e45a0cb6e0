package scion.io.arch;

import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import scion.io.InvalidInputException;

/** The registry of known families, loaded once from the architecture resources. */
public final class Architectures {
    /** Every family Scion knows, in the order they are listed to users. */
    public static final List<String> FAMILIES =
            List.of("llama", "mistral", "qwen2", "gemma", "gpt2", "gpt_neox", "opt", "bert");

    private static final Map<String, Architecture> BY_FAMILY = new LinkedHashMap<>();

    static {
        for (String f : FAMILIES) {
            BY_FAMILY.put(f, Architecture.load(f));
        }
    }

    private Architectures() {}

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
