package scion.io.safetensors;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.OptionalLong;
import scion.io.Checkpoint;
import scion.io.tensor.Tensor;

/**
 * An opened safetensors checkpoint: one {@code .safetensors} file, or a folder of shards described by a {@code
 * *.safetensors.index.json}. Made by {@link SafetensorsReader#open}.
 *
 * <p>Every header has been validated when this object exists; tensors are {@link scion.io.tensor.MappedTensor}s over
 * one {@link FileChannel} per shard, mapped on first read. {@link #close()} closes the channels; mappings already
 * made stay valid until their tensors are unreachable.
 */
public final class SafetensorsCheckpoint implements Checkpoint {

    /**
     * One safetensors file of the checkpoint.
     *
     * @param fileName the file's name relative to the model folder (as in the index's {@code weight_map})
     * @param path the file
     * @param headerSize {@code N}, the JSON header's length in bytes (the byte buffer starts at {@code 8 + N})
     * @param fileSize the file's size in bytes
     * @param metadata the file's {@code __metadata__}
     * @param tensors the file's tensors in storage order
     */
    public record Shard(
            String fileName,
            Path path,
            long headerSize,
            long fileSize,
            Map<String, String> metadata,
            List<Tensor> tensors) {
        public Shard {
            metadata = Collections.unmodifiableMap(new LinkedHashMap<>(metadata));
            tensors = List.copyOf(tensors);
        }
    }

    private final Path location;
    private final Path indexFile; // null for a single file
    private final List<Shard> shards;
    private final List<Tensor> tensors;
    private final Map<String, Tensor> byName;
    private final Map<String, Shard> shardByTensor;
    private final Map<String, String> indexMetadata;
    private final OptionalLong totalSize;
    private final List<FileChannel> channels;
    private boolean closed;

    SafetensorsCheckpoint(
            Path location,
            Path indexFile,
            List<Shard> shards,
            Map<String, String> indexMetadata,
            OptionalLong totalSize,
            List<FileChannel> channels) {
        this.location = location;
        this.indexFile = indexFile;
        this.shards = List.copyOf(shards);
        this.indexMetadata = Collections.unmodifiableMap(new LinkedHashMap<>(indexMetadata));
        this.totalSize = totalSize;
        this.channels = List.copyOf(channels);
        List<Tensor> all = new ArrayList<>();
        Map<String, Tensor> names = new HashMap<>();
        Map<String, Shard> where = new HashMap<>();
        for (Shard s : shards) {
            for (Tensor t : s.tensors()) {
                all.add(t);
                names.put(t.name(), t);
                where.put(t.name(), s);
            }
        }
        this.tensors = Collections.unmodifiableList(all);
        this.byName = names;
        this.shardByTensor = where;
    }

    @Override
    public Path location() {
        return location;
    }

    /** All tensors in storage order: shard by shard (shards in file-name order), each by data offset. */
    @Override
    public List<Tensor> tensors() {
        return tensors;
    }

    @Override
    public Optional<Tensor> find(String name) {
        return Optional.ofNullable(byName.get(name));
    }

    /**
     * The {@code __metadata__} of the first shard (in file-name order), or of the single file. Writers such as
     * Hugging Face's and Scion's put the same metadata into every shard; see {@link Shard#metadata()} for each.
     */
    @Override
    public Map<String, String> metadata() {
        return shards.isEmpty() ? Map.of() : shards.get(0).metadata();
    }

    /** The shard files in file-name order (one file for an unsharded checkpoint). */
    @Override
    public List<Path> dataFiles() {
        List<Path> out = new ArrayList<>(shards.size());
        for (Shard s : shards) {
            out.add(s.path());
        }
        return Collections.unmodifiableList(out);
    }

    /** Whether the checkpoint was opened through a {@code *.safetensors.index.json}. */
    public boolean isSharded() {
        return indexFile != null;
    }

    /** The index file, for a sharded checkpoint. */
    public Optional<Path> indexFile() {
        return Optional.ofNullable(indexFile);
    }

    /** The files in file-name order, with their headers' facts. */
    public List<Shard> shards() {
        return shards;
    }

    /** The file holding the tensor with this name, if present. */
    public Optional<Shard> shardOf(String tensorName) {
        return Optional.ofNullable(shardByTensor.get(tensorName));
    }

    /** Tensor name to shard file name (relative to the model folder), in storage order. */
    public Map<String, String> shardLayout() {
        Map<String, String> m = new LinkedHashMap<>();
        for (Shard s : shards) {
            for (Tensor t : s.tensors()) {
                m.put(t.name(), s.fileName());
            }
        }
        return Collections.unmodifiableMap(m);
    }

    /**
     * The index's {@code metadata} object (empty for a single file): string values as they are, other values as
     * their JSON text (so {@code total_size} reads {@code "13476839424"}).
     */
    public Map<String, String> indexMetadata() {
        return indexMetadata;
    }

    /**
     * The index's {@code metadata.total_size} when it is an integer. Hugging Face writes the sum of the tensors'
     * byte sizes; it is informational and not checked against the shards.
     */
    public OptionalLong totalSize() {
        return totalSize;
    }

    /** Closes every shard's channel; tensors that were never mapped can no longer be read. */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        IOException first = null;
        for (FileChannel ch : channels) {
            try {
                ch.close();
            } catch (IOException e) {
                if (first == null) {
                    first = e;
                }
            }
        }
        if (first != null) {
            throw new UncheckedIOException(location + ": cannot close the safetensors files", first);
        }
    }
}
