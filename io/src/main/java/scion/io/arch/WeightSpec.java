package scion.io.arch;

import java.util.List;
import java.util.Optional;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * One entry of an architecture: a tensor name template, its role and the space of each axis, as stored.
 *
 * @param template name relative to the family's prefix, with {@code {layer}} for per-layer weights
 * @param absolute whether the name ignores the prefix ({@code lm_head.weight})
 * @param role what the weight does
 * @param bias whether this is a bias (else a weight or buffer)
 * @param axes the space of each stored axis; Linear weights are {@code [out, in]} unless {@code inOut}
 * @param inOut stored {@code [in, out]} (gpt2's Conv1D), not PyTorch Linear's {@code [out, in]}
 * @param qkvLayout for fused QKV: {@code blocks} (all q, all k, all v) or {@code per_head} (q,k,v per head)
 * @param optional whether the tensor may be absent
 * @param tiedTo for an output head: the embedding template it may be tied to (then absent when tied)
 */
public record WeightSpec(
        String template,
        boolean absolute,
        Role role,
        boolean bias,
        List<Axis> axes,
        boolean inOut,
        Optional<String> qkvLayout,
        boolean optional,
        Optional<String> tiedTo) {

    private static final String LAYER = "{layer}";

    public boolean perLayer() {
        return template.contains(LAYER);
    }

    /** The full tensor name for a layer (ignored for global weights) under {@code prefix}. */
    public String name(String prefix, int layer) {
        String n = template.replace(LAYER, Integer.toString(layer));
        return absolute ? n : prefix + n;
    }

    /** A matcher for full names under {@code prefix}; group 1 is the layer index for per-layer weights. */
    public Pattern pattern(String prefix) {
        String full = absolute ? template : prefix + template;
        int i = full.indexOf(LAYER);
        if (i < 0) {
            return Pattern.compile(Pattern.quote(full));
        }
        return Pattern.compile(Pattern.quote(full.substring(0, i)) + "(0|[1-9][0-9]*)"
                + Pattern.quote(full.substring(i + LAYER.length())));
    }

    /** The layer index in {@code name} if it matches this entry under {@code prefix}: -1 for global, empty if not. */
    public Optional<Integer> match(String prefix, String name) {
        Matcher m = pattern(prefix).matcher(name);
        if (!m.matches()) {
            return Optional.empty();
        }
        return Optional.of(perLayer() ? Integer.parseInt(m.group(1)) : -1);
    }
}
