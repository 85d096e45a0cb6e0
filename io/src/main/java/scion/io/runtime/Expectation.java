package scion.io.runtime;

import com.fasterxml.jackson.annotation.JsonValue;
import java.util.List;
import java.util.Locale;
import scion.io.InvalidInputException;

/**
 * A validation gate: {@code identical} (every output value bit-identical, copy by copy for grown models) or {@code
 * close:TOL} (every output's relative error {@code max|Δ| / max|ref|} at most {@code TOL}, for every copy).
 *
 * @param identical true for {@code identical}
 * @param tolerance the relative-error bound of {@code close:TOL} (0 for {@code identical})
 */
public record Expectation(boolean identical, double tolerance) {

    /**
     * The outcome of a gate.
     *
     * @param passed whether every output met the expectation
     * @param reason one line: what failed (or what passed)
     */
    public record Verdict(boolean passed, String reason) {}

    /** Parses {@code identical} or {@code close:TOL} (e.g. {@code close:1e-3}). */
    public static Expectation parse(String s) {
        String t = s.trim().toLowerCase(Locale.ROOT);
        if (t.equals("identical")) {
            return new Expectation(true, 0);
        }
        if (t.startsWith("close:")) {
            try {
                double tol = Double.parseDouble(t.substring(6));
                if (tol >= 0 && Double.isFinite(tol)) {
                    return new Expectation(false, tol);
                }
            } catch (NumberFormatException e) {
                // reported below
            }
        }
        throw InvalidInputException.of("--expect", "not a gate", "identical or close:TOL with TOL ≥ 0", "'" + s + "'");
    }

    /** {@code identical} or {@code close:TOL} (also its JSON form). */
    @JsonValue
    @Override
    public String toString() {
        return identical
                ? "identical"
                : "close:" + java.math.BigDecimal.valueOf(tolerance).stripTrailingZeros();
    }

    /** Checks every output; the reason names the first output that fails, with its figures. */
    public Verdict check(List<OutputComparison.Result> outputs) {
        for (OutputComparison.Result r : outputs) {
            OutputComparison.CopyResult w = r.worst();
            String where =
                    "output '" + r.name() + "'" + (r.copies() > 1 ? " copy " + w.copy() + " of " + r.copies() : "");
            if (identical) {
                for (OutputComparison.CopyResult c : r.perCopy()) {
                    if (!c.identical()) {
                        String at = "output '" + r.name() + "'" + (r.copies() > 1 ? " copy " + c.copy() : "");
                        return new Verdict(
                                false,
                                String.format(
                                        Locale.ROOT,
                                        "%s is not bit-identical: max |Δ| %.3g, relative error %.3g; expected identical",
                                        at,
                                        c.maxAbsDiff(),
                                        c.relativeError()));
                    }
                }
            } else if (!(w.relativeError() <= tolerance)) {
                return new Verdict(
                        false,
                        String.format(
                                Locale.ROOT,
                                "%s: relative error %.3g exceeds %s (max |Δ| %.3g, max |ref| %.3g)",
                                where,
                                w.relativeError(),
                                this,
                                w.maxAbsDiff(),
                                w.maxAbsRef()));
            }
        }
        return new Verdict(
                true,
                identical
                        ? "all " + outputs.size() + " output(s) bit-identical"
                        : "all " + outputs.size() + " output(s) within relative error "
                                + java.math.BigDecimal.valueOf(tolerance).stripTrailingZeros());
    }
}
