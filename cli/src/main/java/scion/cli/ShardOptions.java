package scion.cli;

import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import picocli.CommandLine.Option;
import scion.io.InvalidInputException;
import scion.io.safetensors.SafetensorsWriter;

/**
 * {@code --shard-size SIZE}, shared by every command that writes safetensors (mixed in with picocli's
 * {@code @Mixin}): the byte budget of each output shard, or one file when absent. ONNX output has no shards, so a
 * command writing ONNX calls {@link #refuseForOnnx()}.
 */
final class ShardOptions {
    @Option(
            names = "--shard-size",
            paramLabel = "SIZE",
            description = "Safetensors output: cut shards at this many bytes (e.g. 5GB, 500MB, 2GiB).")
    String shardSize;

    private static final Pattern SIZE = Pattern.compile("(?i)\\s*([0-9]+(?:\\.[0-9]+)?)\\s*([kmgt]?i?b?)\\s*");

    /** Whether {@code --shard-size} was given. */
    boolean given() {
        return shardSize != null;
    }

    /** The shard budget in bytes, or {@link SafetensorsWriter#UNSHARDED}. */
    long bytes() {
        return shardSize == null ? SafetensorsWriter.UNSHARDED : parseSize(shardSize);
    }

    /** The budget as provenance records it: bytes, or {@code none}. */
    String describe() {
        return shardSize == null ? "none" : Long.toString(bytes());
    }

    /** Fails when {@code --shard-size} was given for an ONNX output. */
    void refuseForOnnx() {
        if (shardSize != null) {
            throw InvalidInputException.of(
                    "--shard-size", "sharding applies to safetensors output", "no --shard-size for ONNX", shardSize);
        }
    }

    /** Parses {@code 5GB} (10^9), {@code 2GiB} (2^30), {@code 500MB}, {@code 123} (bytes). */
    static long parseSize(String s) {
        Matcher m = SIZE.matcher(s);
        if (!m.matches()) {
            throw InvalidInputException.of(
                    "--shard-size", "not a size", "a number with an optional unit like 5GB or 2GiB", "'" + s + "'");
        }
        double v = Double.parseDouble(m.group(1));
        String u = m.group(2).toLowerCase(Locale.ROOT);
        boolean binary = u.contains("i");
        double base = binary ? 1024 : 1000;
        int power = u.isEmpty() || u.equals("b") ? 0 : "kmgt".indexOf(u.charAt(0)) + 1;
        double bytes = v * Math.pow(base, power);
        if (bytes < 1 || bytes > Long.MAX_VALUE / 2) {
            throw InvalidInputException.of(
                    "--shard-size", "size out of range", "between 1 byte and 4 EB", "'" + s + "'");
        }
        return (long) bytes;
    }
}
