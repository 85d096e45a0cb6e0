package scion.io;

import java.io.Closeable;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import scion.io.tensor.Tensor;

/**
 * A stored model's tensors, opened lazily: a safetensors file or sharded folder, or an ONNX file's initializers.
 *
 * <p>Opening reads and validates headers only; tensor bytes are mapped when an operator reads them. Closing releases
 * the files.
 */
public interface Checkpoint extends Closeable {
    /** The file or folder the user named. */
    Path location();

    /** The tensors in storage order. */
    List<Tensor> tensors();

    /** The tensor with this exact stored name, if present. */
    default Optional<Tensor> find(String name) {
        for (Tensor t : tensors()) {
            if (t.name().equals(name)) {
                return Optional.of(t);
            }
        }
        return Optional.empty();
    }

    /** Free-form string metadata: safetensors {@code __metadata__} or ONNX {@code metadata_props}. */
    Map<String, String> metadata();

    /** The files holding tensor bytes: shards, or the ONNX file and its external-data files. */
    List<Path> dataFiles();

    @Override
    void close();
}
