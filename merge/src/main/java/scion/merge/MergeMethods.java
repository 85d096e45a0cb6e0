package scion.merge;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.stream.Collectors;
import scion.io.InvalidInputException;

/** The registry of merge methods: {@code merge_method} names → implementations, in README order. */
public final class MergeMethods {
    private MergeMethods() {}

    /** Every method. Add a method here (one line). */
    public static final List<MergeMethod> ALL = all();

    private static List<MergeMethod> all() {
        List<MergeMethod> l = new ArrayList<>();
        l.add(new LinearMerge());
        l.add(Methods.slerp());
        l.add(Methods.nuslerp());
        l.add(Methods.multislerp());
        l.add(Methods.karcher());
        l.addAll(TaskArithmeticMerge.all());
        l.add(Methods.sce());
        l.add(Methods.modelStock());
        l.add(Methods.nearswap());
        l.add(Methods.arceeFusion());
        l.add(Methods.ram());
        l.add(Methods.passthrough());
        l.add(new scion.merge.fisher.FisherMerge());
        return List.copyOf(l);
    }

    /** The method named {@code id} (mergekit's name), or an error listing the known ones. */
    public static MergeMethod byId(String id, String where) {
        String k = id == null ? "" : id.trim().toLowerCase(Locale.ROOT);
        for (MergeMethod m : ALL) {
            if (m.id().equals(k)) {
                return m;
            }
        }
        throw InvalidInputException.of(where, "unknown merge method '" + id + "'", "one of " + ids(), "'" + id + "'");
    }

    /** The method names, comma-separated. */
    public static String ids() {
        return ALL.stream().map(MergeMethod::id).collect(Collectors.joining(", "));
    }

    /** Every parameter name some method reads. */
    public static List<String> allParamNames() {
        List<String> out = new ArrayList<>();
        for (MergeMethod m : ALL) {
            for (MergeMethod.Param p : m.params()) {
                if (!out.contains(p.name())) {
                    out.add(p.name());
                }
            }
        }
        return out;
    }
}
