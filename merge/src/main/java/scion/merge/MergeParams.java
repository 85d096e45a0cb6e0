package scion.merge;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Optional;
import scion.io.InvalidInputException;

/**
 * Parameters resolved for one tensor: name → {@link Double}, {@link Boolean} or {@link String}.
 *
 * <p>Resolution (done by the planner, not by methods) follows mergekit: for a per-model parameter, the model's own
 * {@code parameters}, then its slice's, then the top level; for a method-wide parameter, the slice's then the top
 * level; at each level a list of {@code {filter: S, value: V}} entries picks the first whose {@code S} occurs in the
 * tensor name (an entry without {@code filter} matches every tensor), and a list of numbers is a gradient:
 * with {@code n} values and the tensor at relative depth {@code p = layer / (layers - 1)} (0 for global tensors
 * before the blocks, 1 after them), the value is the linear interpolation at {@code p · (n - 1)}. Method defaults fill
 * what is left. Numbers written as booleans in YAML ({@code true}/{@code false}) stay booleans; {@link #number} reads
 * them as 1/0.
 */
public final class MergeParams {
    private final Map<String, Object> values;

    public MergeParams(Map<String, Object> values) {
        this.values = Collections.unmodifiableMap(new LinkedHashMap<>(values));
    }

    /** No parameters. */
    public static MergeParams empty() {
        return new MergeParams(Map.of());
    }

    public Map<String, Object> asMap() {
        return values;
    }

    public boolean has(String name) {
        return values.containsKey(name);
    }

    /** A numeric parameter; booleans read as 1/0. */
    public double number(String name) {
        Object v = values.get(name);
        if (v instanceof Number) {
            return ((Number) v).doubleValue();
        }
        if (v instanceof Boolean) {
            return ((Boolean) v) ? 1 : 0;
        }
        if (v == null) {
            throw InvalidInputException.of("parameter '" + name + "'", "missing", "a number", "nothing");
        }
        throw InvalidInputException.of("parameter '" + name + "'", "not a number", "a number", "'" + v + "'");
    }

    /** A numeric parameter if set. */
    public Optional<Double> optionalNumber(String name) {
        return values.containsKey(name) && values.get(name) != null ? Optional.of(number(name)) : Optional.empty();
    }

    /** A boolean parameter; numbers read as {@code != 0}. */
    public boolean flag(String name) {
        Object v = values.get(name);
        if (v instanceof Boolean) {
            return (Boolean) v;
        }
        if (v instanceof Number) {
            return ((Number) v).doubleValue() != 0;
        }
        if (v instanceof String) {
            String s = ((String) v).trim();
            if (s.equalsIgnoreCase("true")) {
                return true;
            }
            if (s.equalsIgnoreCase("false")) {
                return false;
            }
        }
        throw InvalidInputException.of(
                "parameter '" + name + "'", "not a boolean", "true or false", v == null ? "nothing" : "'" + v + "'");
    }

    /** A string parameter. */
    public String text(String name) {
        Object v = values.get(name);
        if (v == null) {
            throw InvalidInputException.of("parameter '" + name + "'", "missing", "a value", "nothing");
        }
        return String.valueOf(v);
    }

    @Override
    public String toString() {
        return values.toString();
    }
}
