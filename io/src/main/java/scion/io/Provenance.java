package scion.io;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.Map;
import scion.io.tensor.Tensor;

/**
 * Where an output came from: tool version, operator, parameters and a fingerprint of every input, written into
 * safetensors {@code __metadata__}, ONNX {@code metadata_props} and the {@code scion-recipe.json} of output folders.
 *
 * <p>The input fingerprint is a SHA-256 over every tensor's name, dtype, shape and byte size, plus the bytes of
 * every tensor smaller than 64 KiB (norms, biases): it identifies a checkpoint without reading all its weights.
 */
public final class Provenance {
    private Provenance() {}

    /** Keys are prefixed {@code scion.}; {@code parameters} is rendered as sorted {@code key=value} pairs. */
    public static Map<String, String> of(
            String version, String operator, Map<String, String> parameters, Map<String, Checkpoint> inputs) {
        Map<String, String> m = new LinkedHashMap<>();
        m.put("scion.version", version);
        m.put("scion.operator", operator);
        StringBuilder p = new StringBuilder();
        parameters.entrySet().stream().sorted(Map.Entry.comparingByKey()).forEach(e -> p.append(
                        p.length() > 0 ? " " : "")
                .append(e.getKey())
                .append('=')
                .append(e.getValue()));
        m.put("scion.parameters", p.toString());
        int i = 0;
        for (Map.Entry<String, Checkpoint> e : inputs.entrySet()) {
            String key = inputs.size() == 1 ? "scion.input" : "scion.input." + i++;
            m.put(key, e.getKey() + " sha256:" + fingerprint(e.getValue()));
        }
        return m;
    }

    /** The fingerprint described in the class comment: the first 16 hex digits of the SHA-256. */
    public static String fingerprint(Checkpoint c) {
        MessageDigest md;
        try {
            md = MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is part of every Java platform", e);
        }
        for (Tensor t : c.tensors()) {
            md.update((t.name() + "|" + t.dtype() + "|" + Arrays.toString(t.shape()) + "|" + t.byteSize() + "\n")
                    .getBytes(StandardCharsets.UTF_8));
            if (t.byteSize() < 65536) {
                java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate((int) t.byteSize());
                t.readBytes(0, b);
                b.flip();
                md.update(b);
            }
        }
        return HexFormat.of().formatHex(md.digest()).substring(0, 16);
    }
}
