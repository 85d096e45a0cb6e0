package scion.cli;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.function.Consumer;
import scion.io.Model;
import scion.io.arch.Dims;
import scion.io.safetensors.SafetensorsWriter;
import scion.io.tensor.Tensor;

/**
 * The one way a command writes a derived Hugging Face checkpoint folder: the tensors (streamed, sharded by byte
 * budget, with a progress bar), {@code config.json}, the source's companion files (tokenizer, generation config; see
 * {@link ConvertCommand#companionFiles}), any extra files, and {@code scion-recipe.json} with the provenance — all
 * into a staging folder that must then open as a model of its family ({@link Model#open}, which checks every shape
 * against the config) and pass the command's own check before it is renamed into place. Any failure leaves the
 * destination untouched.
 *
 * <p>A destination ending in {@code .safetensors} is a single file: tensors and metadata only.
 */
final class CheckpointFolder {
    /**
     * What was written.
     *
     * @param files the files of the committed output
     * @param tensorBytes bytes of tensor data
     * @param dims the dimensions the staged output read back with ({@code null} for a single file)
     * @param parameters its parameter count ({@code 0} for a single file)
     */
    record Written(List<Path> files, long tensorBytes, Dims dims, long parameters) {}

    private final Path out;
    private final Map<String, String> meta;
    private boolean force;
    private long shardSize = SafetensorsWriter.UNSHARDED;
    private Path companionsFrom;
    private final Set<String> skipped = new TreeSet<>();
    private final Map<String, byte[]> extra = new LinkedHashMap<>();
    private String label = "writing";
    private Consumer<Model> check = m -> {};

    private CheckpointFolder(Path out, Map<String, String> meta) {
        this.out = out;
        this.meta = meta;
    }

    /** A folder (or single {@code .safetensors} file) at {@code out} with {@code meta} as its provenance. */
    static CheckpointFolder at(Path out, Map<String, String> meta) {
        return new CheckpointFolder(out, meta);
    }

    CheckpointFolder force(boolean f) {
        this.force = f;
        return this;
    }

    CheckpointFolder shardSize(long bytes) {
        this.shardSize = bytes;
        return this;
    }

    /** Copies the companion files of this model location (a folder; a file has none). */
    CheckpointFolder companionsFrom(Path location) {
        this.companionsFrom = location;
        return this;
    }

    /** A companion file not to copy. */
    CheckpointFolder skipCompanion(String name) {
        skipped.add(name);
        return this;
    }

    /** An extra file written beside the weights (replaces a companion of the same name). */
    CheckpointFolder file(String name, byte[] bytes) {
        extra.put(name, bytes);
        return this;
    }

    /** The progress bar's label; {@code null} for no bar (when another bar already follows the work). */
    CheckpointFolder label(String l) {
        this.label = l;
        return this;
    }

    /** A check on the staged model, run before the rename; it throws to refuse the output. */
    CheckpointFolder check(Consumer<Model> c) {
        this.check = c;
        return this;
    }

    /** Writes {@code tensors} and {@code configJson}, checks the staged output, and commits it. */
    Written write(List<Tensor> tensors, String configJson) {
        long total = 0;
        for (Tensor t : tensors) {
            total = Math.addExact(total, t.byteSize());
        }
        boolean folder = !out.getFileName().toString().endsWith(".safetensors");
        try (Progress bar = label == null ? new Progress("", total, false) : Progress.forTerminal(label, total);
                SafetensorsWriter.Output o = SafetensorsWriter.create()
                        .force(force)
                        .shardSize(shardSize)
                        .metadata(meta)
                        .progress(bar::advance)
                        .open(out)) {
            o.writeTensors(tensors);
            if (!folder) {
                return new Written(o.commit(), total, null, 0);
            }
            o.addFile("config.json", configJson.getBytes(StandardCharsets.UTF_8));
            if (companionsFrom != null) {
                for (Path p : ConvertCommand.companionFiles(companionsFrom)) {
                    String n = p.getFileName().toString();
                    if (!skipped.contains(n) && !extra.containsKey(n)) {
                        o.copyFile(p);
                    }
                }
            }
            for (Map.Entry<String, byte[]> e : extra.entrySet()) {
                o.addFile(e.getKey(), e.getValue());
            }
            o.addFile("scion-recipe.json", ConvertCommand.recipe(meta));
            Dims dims;
            long parameters;
            try (Model staged = Model.open(o.staging())) {
                dims = staged.graph().dims();
                parameters = staged.graph().parameterCount();
                check.accept(staged);
            }
            return new Written(o.commit(), total, dims, parameters);
        }
    }
}
