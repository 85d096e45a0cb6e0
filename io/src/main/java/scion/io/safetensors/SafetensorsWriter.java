package scion.io.safetensors;

import com.fasterxml.jackson.core.JsonEncoding;
import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.io.JsonStringEncoder;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.InvalidPathException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;
import java.util.function.LongConsumer;
import scion.io.AtomicOutput;
import scion.io.InvalidInputException;
import scion.io.tensor.DType;
import scion.io.tensor.FileRegion;
import scion.io.tensor.Tensor;

/**
 * Writes tensors as safetensors: one file, or Hugging Face style shards ({@code model-00001-of-00003.safetensors}
 * plus {@code model.safetensors.index.json}) cut by a byte budget.
 *
 * <p>Layout, as the safetensors format defines it: an 8-byte little-endian header length {@code N}, {@code N} bytes of
 * UTF-8 JSON, then the byte buffer. The header lists {@code __metadata__} first (keys sorted) and then the tensors in
 * the given order, compact ({@code {"name":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]}}}), padded with spaces
 * to a multiple of 8 bytes so the buffer starts 8-byte aligned, as the Python library does. Tensor bytes follow in the
 * same order without gaps. Same tensors, metadata and shard size give the same bytes.
 *
 * <p>Tensors are streamed, never held whole: a tensor backed by a file region unchanged ({@link Tensor#fileRegion()})
 * is copied with {@link FileChannel#transferTo} (zero-copy); any other tensor is read through {@link
 * Tensor#readBytes} in chunks of {@value #CHUNK_BYTES} bytes.
 *
 * <p>Everything goes into an {@link AtomicOutput} staging area next to the destination. Before the rename, every
 * written file is opened again with {@link SafetensorsReader} (headers, sizes, names, dtypes, shapes and metadata
 * compared with what was written). A failure at any point leaves no staging area and an untouched destination.
 *
 * <p>Usage: {@code SafetensorsWriter.create().shardSize(5_000_000_000L).metadata(m).write(dir, tensors)}, or, to add
 * files such as {@code config.json} to an output folder, {@code try (var out = writer.open(dir)) {
 * out.writeTensors(tensors); out.addFile("config.json", bytes); out.commit(); }}. Instances are immutable; the
 * configuration methods return a changed copy.
 */
public final class SafetensorsWriter {
    /** The file name of an unsharded checkpoint in an output folder. */
    public static final String SINGLE_FILE_NAME = "model.safetensors";

    /** The index file name of a sharded checkpoint. */
    public static final String INDEX_FILE_NAME = "model.safetensors.index.json";

    /** Shard size meaning "never shard". */
    public static final long UNSHARDED = Long.MAX_VALUE;

    /** Bytes read per {@link Tensor#readBytes} call (a multiple of every element size). */
    public static final int CHUNK_BYTES = 4 << 20;

    private static final long TRANSFER_BYTES = 16L << 20;
    private static final JsonFactory JSON = new JsonFactory();

    private final boolean force;
    private final long shardSize;
    private final Map<String, String> metadata; // sorted
    private final LongConsumer progress;

    private SafetensorsWriter(boolean force, long shardSize, Map<String, String> metadata, LongConsumer progress) {
        this.force = force;
        this.shardSize = shardSize;
        this.metadata = metadata;
        this.progress = progress;
    }

    /** A writer with no metadata, no sharding, no progress reporting, refusing to replace an existing output. */
    public static SafetensorsWriter create() {
        return new SafetensorsWriter(false, UNSHARDED, Map.of(), n -> {});
    }

    /** Whether an existing destination is replaced (at commit time only). */
    public SafetensorsWriter force(boolean replaceExisting) {
        return new SafetensorsWriter(replaceExisting, shardSize, metadata, progress);
    }

    /**
     * The byte budget of one shard (tensor bytes, without headers), for folder outputs: tensors are taken in order
     * and a new shard starts when the next tensor would exceed the budget; a tensor larger than the budget gets a
     * shard of its own. {@link #UNSHARDED} writes one {@value #SINGLE_FILE_NAME}.
     */
    public SafetensorsWriter shardSize(long maxShardBytes) {
        if (maxShardBytes <= 0) {
            throw InvalidInputException.of(
                    "--shard-size", "shard size must be positive", "a byte count > 0", maxShardBytes);
        }
        return new SafetensorsWriter(force, maxShardBytes, metadata, progress);
    }

    /** The {@code __metadata__} string map written into every file (keys are written sorted). */
    public SafetensorsWriter metadata(Map<String, String> stringMetadata) {
        TreeMap<String, String> m = new TreeMap<>();
        for (Map.Entry<String, String> e : stringMetadata.entrySet()) {
            m.put(Objects.requireNonNull(e.getKey(), "metadata key"), Objects.requireNonNull(e.getValue(), e.getKey()));
        }
        return new SafetensorsWriter(force, shardSize, Collections.unmodifiableMap(m), progress);
    }

    /**
     * A callback told the number of tensor bytes just written (a delta, called at least once per chunk); the calls
     * add up to the sum of the tensors' {@link Tensor#byteSize()}. Runs on the writing thread.
     */
    public SafetensorsWriter progress(LongConsumer bytesWritten) {
        return new SafetensorsWriter(force, shardSize, metadata, Objects.requireNonNull(bytesWritten));
    }

    /**
     * Writes {@code tensors} to {@code destination} and commits: a path ending in {@code .safetensors} becomes one
     * file, any other path a folder. Returns the written files at their final place.
     */
    public List<Path> write(Path destination, List<? extends Tensor> tensors) {
        try (Output out = open(destination)) {
            out.writeTensors(tensors);
            return out.commit();
        }
    }

    /**
     * Starts an output at {@code destination} (a file if the name ends in {@code .safetensors}, else a folder); the
     * caller writes tensors, may add files, then commits. Closing without a commit removes everything.
     */
    public Output open(Path destination) {
        boolean folder = !destination.getFileName().toString().endsWith(SafetensorsReader.FILE_SUFFIX);
        return new Output(AtomicOutput.begin(destination, force, folder), folder);
    }

    /** The shard file name {@code model-00001-of-00003.safetensors} for 1-based {@code index} of {@code count}. */
    public static String shardFileName(int index, int count) {
        return String.format(Locale.ROOT, "model-%05d-of-%05d.safetensors", index, count);
    }

    /**
     * Splits tensors, in order, into shards of at most {@code maxShardBytes} tensor bytes; a larger tensor gets its
     * own shard. Always returns at least one (possibly empty) shard.
     */
    public static List<List<Tensor>> planShards(List<? extends Tensor> tensors, long maxShardBytes) {
        List<List<Tensor>> shards = new ArrayList<>();
        List<Tensor> cur = new ArrayList<>();
        long curBytes = 0;
        for (Tensor t : tensors) {
            long b = t.byteSize();
            if (b > maxShardBytes) {
                if (!cur.isEmpty()) {
                    shards.add(cur);
                    cur = new ArrayList<>();
                    curBytes = 0;
                }
                shards.add(List.of(t));
                continue;
            }
            if (!cur.isEmpty() && b > maxShardBytes - curBytes) {
                shards.add(cur);
                cur = new ArrayList<>();
                curBytes = 0;
            }
            cur.add(t);
            curBytes += b;
        }
        if (!cur.isEmpty() || shards.isEmpty()) {
            shards.add(cur);
        }
        return shards;
    }

    /** The header bytes (without the 8-byte length), padded with spaces to a multiple of 8. */
    static byte[] header(List<? extends Tensor> tensors, Map<String, String> metadata) {
        ByteArrayOutputStream bos = new ByteArrayOutputStream(128 + 96 * tensors.size());
        try (JsonGenerator g = JSON.createGenerator(bos, JsonEncoding.UTF8)) {
            g.writeStartObject();
            if (!metadata.isEmpty()) {
                g.writeObjectFieldStart(SafetensorsHeader.METADATA_KEY);
                for (Map.Entry<String, String> e : new TreeMap<>(metadata).entrySet()) {
                    g.writeStringField(e.getKey(), e.getValue());
                }
                g.writeEndObject();
            }
            long offset = 0;
            for (Tensor t : tensors) {
                g.writeObjectFieldStart(t.name());
                g.writeStringField("dtype", t.dtype().safetensorsName());
                g.writeArrayFieldStart("shape");
                for (long d : t.shape()) {
                    g.writeNumber(d);
                }
                g.writeEndArray();
                g.writeArrayFieldStart("data_offsets");
                g.writeNumber(offset);
                offset = Math.addExact(offset, t.byteSize());
                g.writeNumber(offset);
                g.writeEndArray();
                g.writeEndObject();
            }
            g.writeEndObject();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot encode a safetensors header", e);
        }
        int pad = (8 - bos.size() % 8) % 8;
        for (int i = 0; i < pad; i++) {
            bos.write(' ');
        }
        return bos.toByteArray();
    }

    /** One written safetensors file, as planned. */
    private record Written(String fileName, Path file, List<Tensor> tensors, long headerSize, long fileSize) {}

    /**
     * An output being written: a staging file or folder that becomes the destination on {@link #commit()}. Folder
     * outputs take extra files ({@code config.json}, tokenizer files, a recipe) beside the tensors.
     */
    public final class Output implements AutoCloseable {
        private final AtomicOutput atomic;
        private final boolean folder;
        private final String where;
        private List<Written> written;
        private boolean sharded;
        private boolean committed;

        private Output(AtomicOutput atomic, boolean folder) {
            this.atomic = atomic;
            this.folder = folder;
            this.where = atomic.destination().getFileName().toString();
        }

        /** The final path. */
        public Path destination() {
            return atomic.destination();
        }

        /** The staging file or folder being written. */
        public Path staging() {
            return atomic.staging();
        }

        /** Whether the output is a folder (else a single {@code .safetensors} file). */
        public boolean isFolder() {
            return folder;
        }

        /**
         * Adds a file to the output folder, at {@code relativeName} (sub-folders allowed; names ending in {@code
         * .safetensors} or {@code .safetensors.index.json} at the top level are reserved for the tensor files).
         */
        public Path addFile(String relativeName, byte[] bytes) {
            Path target = extraPath(relativeName);
            try {
                Files.write(target, bytes, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE);
                AtomicOutput.wrote(bytes.length);
            } catch (FileAlreadyExistsException e) {
                throw new IllegalStateException(where + ": file '" + relativeName + "' was already added", e);
            } catch (IOException e) {
                throw new UncheckedIOException(where + ": cannot write '" + relativeName + "' into " + staging(), e);
            }
            return target;
        }

        /** Copies {@code source} into the output folder under its own file name. */
        public Path copyFile(Path source) {
            return copyFile(source, source.getFileName().toString());
        }

        /** Copies {@code source} into the output folder as {@code relativeName}. */
        public Path copyFile(Path source, String relativeName) {
            Path target = extraPath(relativeName);
            try {
                Files.copy(source, target, StandardCopyOption.COPY_ATTRIBUTES);
            } catch (FileAlreadyExistsException e) {
                throw new IllegalStateException(where + ": file '" + relativeName + "' was already added", e);
            } catch (IOException e) {
                throw new UncheckedIOException(where + ": cannot copy " + source + " into " + staging(), e);
            }
            return target;
        }

        private Path extraPath(String relativeName) {
            if (!folder) {
                throw new IllegalStateException(where + ": a single-file output has no folder for extra files");
            }
            ensureOpen();
            Path rel;
            try {
                rel = Path.of(relativeName);
            } catch (InvalidPathException e) {
                throw new IllegalArgumentException("not a file name: '" + relativeName + "'", e);
            }
            boolean up = false;
            for (Path part : rel) {
                up |= "..".equals(part.toString());
            }
            Path norm = rel.normalize();
            if (relativeName.isEmpty()
                    || rel.isAbsolute()
                    || up
                    || norm.toString().isEmpty()) {
                throw new IllegalArgumentException(
                        "extra file name must be a relative path inside the output folder: '" + relativeName + "'");
            }
            String top = norm.getName(0).toString();
            if (norm.getNameCount() == 1
                    && (top.endsWith(SafetensorsReader.FILE_SUFFIX) || top.endsWith(SafetensorsReader.INDEX_SUFFIX))) {
                throw new IllegalArgumentException(
                        "'" + relativeName + "' is reserved for the tensor files of the output");
            }
            Path target = staging().resolve(norm);
            try {
                Files.createDirectories(target.getParent());
            } catch (IOException e) {
                throw new UncheckedIOException(where + ": cannot create " + target.getParent(), e);
            }
            return target;
        }

        private void ensureOpen() {
            if (committed) {
                throw new IllegalStateException(where + ": output already committed");
            }
        }

        /**
         * Writes the tensors (once per output): checks names and dtypes of all tensors first, reporting every
         * problem at once, then streams them into the staging area. Returns the written file names.
         */
        public List<String> writeTensors(List<? extends Tensor> tensors) {
            ensureOpen();
            if (written != null) {
                throw new IllegalStateException(where + ": tensors were already written");
            }
            List<Tensor> list = List.copyOf(tensors);
            checkSpecs(list);
            List<List<Tensor>> plan = planShards(list, shardSize);
            if (!folder && plan.size() > 1) {
                long total = 0;
                for (Tensor t : list) {
                    total = Math.addExact(total, t.byteSize());
                }
                throw InvalidInputException.of(
                        where,
                        "a single .safetensors file cannot be sharded",
                        "a folder destination for shards of at most " + shardSize + " bytes",
                        total + " bytes of tensors in " + plan.size() + " shards");
            }
            sharded = plan.size() > 1;
            List<Written> out = new ArrayList<>();
            ByteBuffer chunk = ByteBuffer.allocateDirect(CHUNK_BYTES);
            for (int i = 0; i < plan.size(); i++) {
                String name;
                Path file;
                if (!folder) {
                    name = where;
                    file = staging();
                } else {
                    name = sharded ? shardFileName(i + 1, plan.size()) : SINGLE_FILE_NAME;
                    file = staging().resolve(name);
                }
                out.add(writeFile(file, name, plan.get(i), chunk));
            }
            if (sharded) {
                writeIndex(out);
            }
            written = out;
            List<String> names = new ArrayList<>();
            for (Written w : out) {
                names.add(w.fileName());
            }
            if (sharded) {
                names.add(INDEX_FILE_NAME);
            }
            return names;
        }

        private void checkSpecs(List<Tensor> tensors) {
            List<String> problems = new ArrayList<>();
            Set<String> names = new HashSet<>();
            for (int i = 0; i < tensors.size(); i++) {
                Tensor t = tensors.get(i);
                String n = t.name();
                String at = where + ": tensor '" + n + "'";
                if (n == null || n.isEmpty()) {
                    problems.add(InvalidInputException.of(
                                    where + ": tensor #" + i, "tensor has no name", "a non-empty name", "'" + n + "'")
                            .getMessage());
                } else if (SafetensorsHeader.METADATA_KEY.equals(n)) {
                    problems.add(InvalidInputException.of(
                                    at, "tensor name is reserved", "any name but __metadata__", "'" + n + "'")
                            .getMessage());
                } else if (!names.add(n)) {
                    problems.add(
                            InvalidInputException.of(at, "duplicate tensor name", "each name once", "'" + n + "' twice")
                                    .getMessage());
                }
                DType d = t.dtype();
                if (!d.isWritable()) {
                    problems.add(
                            InvalidInputException.of(at, "dtype cannot be written", "one of " + writableDtypes(), d)
                                    .getMessage());
                }
                try {
                    t.byteSize();
                } catch (InvalidInputException | ArithmeticException e) {
                    problems.add(InvalidInputException.of(
                                    at,
                                    "size cannot be computed",
                                    "a shape below 2^63 bytes",
                                    Arrays.toString(t.shape()))
                            .getMessage());
                }
            }
            if (problems.size() == 1) {
                throw new InvalidInputException(problems.get(0));
            }
            if (!problems.isEmpty()) {
                throw new InvalidInputException(String.join("\n", problems));
            }
        }

        private Written writeFile(Path file, String name, List<Tensor> tensors, ByteBuffer chunk) {
            byte[] header = header(tensors, metadata);
            long size = 8L + header.length;
            try (FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
                ByteBuffer hb = ByteBuffer.allocate(8 + header.length).order(ByteOrder.LITTLE_ENDIAN);
                hb.putLong(header.length).put(header).flip();
                writeFully(ch, hb);
                for (Tensor t : tensors) {
                    writeTensor(ch, t, chunk, name);
                    size += t.byteSize();
                }
                if (ch.position() != size) {
                    throw new IllegalStateException(
                            name + ": wrote " + ch.position() + " bytes; the header implies " + size);
                }
            } catch (IOException e) {
                throw new UncheckedIOException(name + ": cannot write " + file, e);
            }
            return new Written(name, file, tensors, header.length, size);
        }

        private void writeTensor(FileChannel out, Tensor t, ByteBuffer chunk, String name) throws IOException {
            long size = t.byteSize();
            Optional<FileRegion> region = t.fileRegion();
            if (region.isPresent() && region.get().length() == size) {
                FileRegion r = region.get();
                long pos = 0;
                while (pos < size) {
                    long n = r.channel().transferTo(r.offset() + pos, Math.min(TRANSFER_BYTES, size - pos), out);
                    if (n <= 0) {
                        throw new IOException("source " + r.path() + " of tensor '" + t.name() + "' ended at byte "
                                + (r.offset() + pos) + "; expected " + (r.offset() + size));
                    }
                    pos += n;
                    AtomicOutput.wrote(n);
                    progress.accept(n);
                }
                return;
            }
            long pos = 0;
            while (pos < size) {
                int n = (int) Math.min(chunk.capacity(), size - pos);
                chunk.clear().limit(n);
                t.readBytes(pos, chunk);
                if (chunk.hasRemaining()) {
                    throw new IllegalStateException(name + ": tensor '" + t.name() + "' yielded " + chunk.position()
                            + " bytes at offset " + pos + "; expected " + n);
                }
                chunk.flip();
                writeFully(out, chunk);
                pos += n;
                progress.accept(n);
            }
        }

        private void writeIndex(List<Written> files) {
            TreeMap<String, String> map = new TreeMap<>();
            long total = 0;
            for (Written w : files) {
                for (Tensor t : w.tensors()) {
                    map.put(t.name(), w.fileName());
                    total = Math.addExact(total, t.byteSize());
                }
            }
            JsonStringEncoder enc = JsonStringEncoder.getInstance();
            StringBuilder sb = new StringBuilder(64 + 80 * map.size());
            sb.append("{\n  \"metadata\": {\n    \"total_size\": ")
                    .append(total)
                    .append("\n  },\n");
            sb.append("  \"weight_map\": {");
            boolean first = true;
            for (Map.Entry<String, String> e : map.entrySet()) {
                sb.append(first ? "\n" : ",\n").append("    \"");
                sb.append(enc.quoteAsString(e.getKey())).append("\": \"");
                sb.append(enc.quoteAsString(e.getValue())).append('"');
                first = false;
            }
            sb.append(first ? "}\n}\n" : "\n  }\n}\n");
            try {
                Files.writeString(staging().resolve(INDEX_FILE_NAME), sb, StandardOpenOption.CREATE_NEW);
            } catch (IOException e) {
                throw new UncheckedIOException(where + ": cannot write " + INDEX_FILE_NAME, e);
            }
        }

        /**
         * Re-opens every written file with {@link SafetensorsReader} and compares it with what was written, then
         * moves the staging area onto the destination. Returns the tensor files (and index) at their final place.
         */
        public List<Path> commit() {
            ensureOpen();
            if (written == null) {
                throw new IllegalStateException(where + ": commit() before writeTensors()");
            }
            for (Written w : written) {
                verify(w);
            }
            if (sharded) {
                try (SafetensorsCheckpoint c = SafetensorsReader.open(staging().resolve(INDEX_FILE_NAME))) {
                    int expected = 0;
                    for (Written w : written) {
                        expected += w.tensors().size();
                    }
                    if (c.tensors().size() != expected || c.shards().size() != written.size()) {
                        throw new IllegalStateException(where + ": the written index lists "
                                + c.tensors().size() + " tensors in "
                                + c.shards().size() + " shards; expected "
                                + expected + " in " + written.size());
                    }
                } catch (InvalidInputException e) {
                    throw new IllegalStateException(
                            where + ": the written index does not read back: " + e.getMessage(), e);
                }
            }
            atomic.commit();
            committed = true;
            List<Path> out = new ArrayList<>();
            for (Written w : written) {
                out.add(folder ? destination().resolve(w.fileName()) : destination());
            }
            if (sharded) {
                out.add(destination().resolve(INDEX_FILE_NAME));
            }
            return out;
        }

        private void verify(Written w) {
            try (SafetensorsCheckpoint c = SafetensorsReader.open(w.file())) {
                SafetensorsCheckpoint.Shard s = c.shards().get(0);
                List<String> diffs = new ArrayList<>();
                if (s.fileSize() != w.fileSize()) {
                    diffs.add("file size " + s.fileSize() + ", expected " + w.fileSize());
                }
                if (s.headerSize() != w.headerSize()) {
                    diffs.add("header size " + s.headerSize() + ", expected " + w.headerSize());
                }
                if (!s.metadata().equals(metadata)) {
                    diffs.add("metadata " + s.metadata() + ", expected " + metadata);
                }
                List<Tensor> got = c.tensors();
                if (got.size() != w.tensors().size()) {
                    diffs.add(got.size() + " tensors, expected " + w.tensors().size());
                } else {
                    for (int i = 0; i < got.size(); i++) {
                        Tensor a = got.get(i);
                        Tensor b = w.tensors().get(i);
                        if (!a.name().equals(b.name())
                                || a.dtype() != b.dtype()
                                || !Arrays.equals(a.shape(), b.shape())) {
                            diffs.add("tensor #" + i + " reads back as " + a.describe() + ", expected " + b.describe());
                        }
                    }
                }
                if (!diffs.isEmpty()) {
                    throw new IllegalStateException(
                            w.fileName() + ": the written file does not read back as written: " + diffs);
                }
            } catch (InvalidInputException e) {
                throw new IllegalStateException(
                        w.fileName() + ": the written file does not read back: " + e.getMessage(), e);
            }
        }

        /** Removes the staging area unless committed. */
        @Override
        public void close() {
            atomic.close();
        }
    }

    private static String writableDtypes() {
        List<String> out = new ArrayList<>();
        for (DType d : DType.values()) {
            if (d.isWritable()) {
                out.add(d.name());
            }
        }
        return String.join(", ", out);
    }

    private static void writeFully(FileChannel ch, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            AtomicOutput.wrote(ch.write(b));
        }
    }
}
