package scion.io.onnx;

import ai.onnx.proto.OnnxMl.AttributeProto;
import ai.onnx.proto.OnnxMl.GraphProto;
import ai.onnx.proto.OnnxMl.ModelProto;
import ai.onnx.proto.OnnxMl.NodeProto;
import ai.onnx.proto.OnnxMl.StringStringEntryProto;
import ai.onnx.proto.OnnxMl.TensorProto;
import com.google.protobuf.ByteString;
import com.google.protobuf.CodedInputStream;
import com.google.protobuf.UnsafeByteOperations;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import scion.io.InvalidInputException;
import scion.io.tensor.BufferTensor;
import scion.io.tensor.DType;
import scion.io.tensor.FileRegion;
import scion.io.tensor.MappedTensor;
import scion.io.tensor.Shapes;
import scion.io.tensor.Tensor;

/**
 * Opens an ONNX model file as a {@link OnnxModel}, mapping it into memory and parsing it without copying weights.
 *
 * <p>Implements {@code onnx.proto} (IR version ≤ 10): "ModelProto ... graph: the parameterized graph"; "GraphProto
 * ... initializer: a list of named tensor values, used to specify constant inputs of the graph"; "TensorProto ...
 * raw_data: serializations can either use one of the fields above, or use this raw bytes field. ... stored in as
 * fixed-width, little-endian order"; "data_location: ... EXTERNAL - data stored in an external location as
 * described by external_data field"; "external_data: ... location (required) - POSIX filesystem path relative to
 * the directory where the ONNX protobuf model was stored; offset (optional) - position of byte at which stored
 * data begins ...; length (optional) - number of bytes containing data".
 *
 * <p>Zero-copy: the file is mapped read-only and wrapped with {@link UnsafeByteOperations#unsafeWrap(ByteBuffer)},
 * whose {@code newCodedInput()} is an <em>immutable</em> direct-buffer decoder; with aliasing enabled, every
 * {@code raw_data} {@link ByteString} is a slice of the mapping. (The public {@code
 * CodedInputStream.newInstance(ByteBuffer)} marks its buffer mutable and then copies every bytes field despite
 * {@code enableAliasing(true)}.) Protobuf messages cannot exceed 2 GiB, so one mapping covers the file.
 *
 * <p>Validation: external data must be a relative path inside the model's folder (no absolute path, no {@code ..}
 * component, no symlink leading outside), exist, hold exactly numel × dtype size bytes at its offset; raw data
 * must have exactly numel × dtype size bytes; typed fields exactly numel values. Every failure is an {@link
 * InvalidInputException} naming the file and tensor.
 */
public final class OnnxReader {
    /** The largest protobuf message: 2 GiB - 1 bytes. */
    public static final long MAX_PROTOBUF_BYTES = Integer.MAX_VALUE;

    private OnnxReader() {}

    /** Opens and validates {@code path}. The caller must close the returned model. */
    public static OnnxModel open(Path path) {
        return open(path, Map.of());
    }

    /**
     * Opens {@code path}, reading the external-data location named by a key of {@code stagedExternal} from the
     * mapped path instead (used by the writer to validate a staged model before it is moved into place). The
     * location string is validated as usual.
     */
    static OnnxModel open(Path path, Map<String, Path> stagedExternal) {
        String file = path.toString();
        if (!Files.isRegularFile(path)) {
            throw InvalidInputException.of(
                    file,
                    "cannot open the ONNX model",
                    "an existing .onnx file",
                    Files.isDirectory(path) ? "a folder" : "no such file");
        }
        List<FileChannel> channels = new ArrayList<>();
        try {
            FileChannel channel = FileChannel.open(path, StandardOpenOption.READ);
            channels.add(channel);
            long size = channel.size();
            if (size == 0) {
                throw InvalidInputException.of(
                        file, "not an ONNX model", "a serialized onnx ModelProto", "an empty file");
            }
            if (size > MAX_PROTOBUF_BYTES) {
                throw InvalidInputException.of(
                        file,
                        "file is larger than a protobuf message can be",
                        "at most " + MAX_PROTOBUF_BYTES + " bytes (weights above 2 GiB belong in external data)",
                        size + " bytes");
            }
            MappedByteBuffer mapped = channel.map(FileChannel.MapMode.READ_ONLY, 0, size);
            ModelProto model = parse(mapped, file);
            Parsed parsed = new Parser(path, model, channels, stagedExternal).run();
            return new OnnxModel(
                    path, model, parsed.tensors, parsed.initializers, metadata(model), parsed.files, channels);
        } catch (IOException e) {
            closeAll(channels);
            throw new UncheckedIOException(file + ": cannot read the ONNX model", e);
        } catch (RuntimeException e) {
            closeAll(channels);
            throw e;
        }
    }

    /** Parses a mapped buffer; {@code bytes fields} alias {@code mapped}. */
    static ModelProto parse(ByteBuffer mapped, String file) {
        CodedInputStream in = UnsafeByteOperations.unsafeWrap(mapped).newCodedInput();
        in.enableAliasing(true);
        in.setSizeLimit(Integer.MAX_VALUE);
        ModelProto model;
        try {
            model = ModelProto.parseFrom(in);
        } catch (IOException e) { // InvalidProtocolBufferException; a mapped buffer has no other I/O
            throw new InvalidInputException(
                    file + ": not a valid ONNX protobuf (truncated or corrupt); expected a serialized onnx"
                            + " ModelProto, found a parse error: " + e.getMessage(),
                    e);
        }
        if (!model.hasGraph() || model.getIrVersion() <= 0 || model.getOpsetImportCount() == 0) {
            String missing =
                    !model.hasGraph() ? "no graph" : model.getIrVersion() <= 0 ? "no ir_version" : "no opset_import";
            throw InvalidInputException.of(
                    file,
                    "not an ONNX model (or a truncated one)",
                    "a ModelProto with ir_version, opset_import and a graph",
                    missing);
        }
        return model;
    }

    private static Map<String, String> metadata(ModelProto model) {
        Map<String, String> m = new LinkedHashMap<>();
        for (StringStringEntryProto e : model.getMetadataPropsList()) {
            m.put(e.getKey(), e.getValue());
        }
        return m;
    }

    static void closeAll(List<FileChannel> channels) {
        for (FileChannel c : channels) {
            try {
                c.close();
            } catch (IOException e) {
                // Closing a read-only channel: nothing was written, nothing is lost.
            }
        }
    }

    private record Parsed(List<Tensor> tensors, Set<String> initializers, List<Path> files) {}

    /** Decodes initializers and Constant-node tensors; opens each external file once. */
    private static final class Parser {
        private final Path path;
        private final String file;
        private final ModelProto model;
        private final List<FileChannel> channels;
        private final Map<String, Path> stagedExternal;
        private final Map<Path, FileChannel> external = new LinkedHashMap<>();
        private final List<Path> files = new ArrayList<>();
        private Path realFolder;

        Parser(Path path, ModelProto model, List<FileChannel> channels, Map<String, Path> stagedExternal) {
            this.path = path;
            this.file = path.toString();
            this.model = model;
            this.channels = channels;
            this.stagedExternal = stagedExternal;
            files.add(path);
        }

        Parsed run() throws IOException {
            GraphProto g = model.getGraph();
            List<Tensor> tensors = new ArrayList<>();
            Set<String> names = new HashSet<>();
            Set<String> initializers = new HashSet<>();
            for (TensorProto t : g.getInitializerList()) {
                String where = file + ": tensor '" + t.getName() + "'";
                if (t.getName().isEmpty()) {
                    throw InvalidInputException.of(
                            file, "initializer without a name", "a named initializer", "an empty name");
                }
                if (!names.add(t.getName())) {
                    throw InvalidInputException.of(where, "duplicate tensor name", "unique names", "a second one");
                }
                tensors.add(decode(t, t.getName(), where));
                initializers.add(t.getName());
            }
            for (NodeProto n : g.getNodeList()) {
                if (!isConstant(n) || n.getOutputCount() != 1) {
                    continue;
                }
                AttributeProto value = valueAttribute(n);
                if (value == null) {
                    continue;
                }
                String name = n.getOutput(0);
                String where = file + ": tensor '" + name + "' (Constant node '" + n.getName() + "')";
                if (!isSupported(value.getT().getDataType())) {
                    // A string or unsigned constant is graph plumbing, not a weight: it passes through unread.
                    continue;
                }
                if (!names.add(name)) {
                    throw InvalidInputException.of(where, "duplicate tensor name", "unique names", "a second one");
                }
                tensors.add(decode(value.getT(), name, where));
            }
            return new Parsed(tensors, initializers, files);
        }

        private Tensor decode(TensorProto t, String name, String where) throws IOException {
            DType dtype = DType.fromOnnx(t.getDataType(), where);
            if (t.hasSegment()) {
                throw InvalidInputException.of(
                        where, "segmented tensors are not supported", "a whole tensor", "a segment field");
            }
            long[] shape = new long[t.getDimsCount()];
            for (int i = 0; i < shape.length; i++) {
                shape[i] = t.getDims(i);
            }
            long numel = Shapes.numel(shape, where);
            long bytes;
            try {
                bytes = Math.multiplyExact(numel, (long) dtype.size());
            } catch (ArithmeticException e) {
                throw InvalidInputException.of(where, "byte size overflows", "< 2^63 bytes", Shapes.format(shape));
            }
            if (t.getDataLocation() == TensorProto.DataLocation.EXTERNAL) {
                return externalTensor(t, name, where, dtype, shape, bytes);
            }
            ByteString raw = t.getRawData();
            if (!raw.isEmpty() || (numel == 0 && typedCount(t, dtype) == 0)) {
                if (raw.size() != bytes) {
                    throw InvalidInputException.of(
                            where,
                            "raw_data length does not match shape " + Shapes.format(shape) + " × " + dtype.size()
                                    + " bytes (" + dtype + ")",
                            bytes + " bytes",
                            raw.size() + " bytes");
                }
                return new BufferTensor(name, dtype, shape, raw.asReadOnlyByteBuffer());
            }
            return typedTensor(t, name, where, dtype, shape, numel);
        }

        private Tensor externalTensor(TensorProto t, String name, String where, DType dtype, long[] shape, long bytes)
                throws IOException {
            String location = null;
            long offset = 0;
            long length = -1;
            for (StringStringEntryProto e : t.getExternalDataList()) {
                switch (e.getKey()) {
                    case "location" -> location = e.getValue();
                    case "offset" -> offset = parseLong(e.getValue(), where, "offset");
                    case "length" -> length = parseLong(e.getValue(), where, "length");
                    default -> {
                        // "checksum" and other keys are advisory.
                    }
                }
            }
            if (location == null || location.isEmpty()) {
                throw InvalidInputException.of(
                        where, "external data without a location", "an external_data 'location' entry", "none");
            }
            String quoted = "external data location '" + location + "' is refused";
            if (location.startsWith("/")
                    || location.startsWith("\\")
                    || location.matches("^[A-Za-z]:.*")
                    || isAbsolute(location)) {
                throw InvalidInputException.of(
                        where, quoted, "a relative path inside the model's folder", "an absolute path");
            }
            for (String part : location.split("[/\\\\]")) {
                if (part.equals("..")) {
                    throw InvalidInputException.of(
                            where, quoted, "a relative path inside the model's folder", "a '..' component");
                }
            }
            Path folder = path.toAbsolutePath().getParent();
            Path target = folder.resolve(location).normalize();
            if (!target.startsWith(folder)) {
                throw InvalidInputException.of(
                        where, quoted, "a relative path inside the model's folder", "a path outside it");
            }
            Path staged = stagedExternal.get(location);
            Path real;
            if (staged != null) {
                real = staged.toRealPath();
            } else {
                try {
                    real = target.toRealPath();
                } catch (NoSuchFileException e) {
                    throw InvalidInputException.of(
                            where,
                            "external data file '" + location + "' is missing",
                            "a file at " + target,
                            "no such file");
                }
                if (realFolder == null) {
                    realFolder = folder.toRealPath();
                }
                if (!real.startsWith(realFolder)) {
                    throw InvalidInputException.of(
                            where,
                            quoted,
                            "a file inside the model's folder " + realFolder,
                            "a symbolic link to " + real);
                }
            }
            if (!Files.isRegularFile(real)) {
                throw InvalidInputException.of(
                        where, "external data location '" + location + "'", "a regular file", "a folder or device");
            }
            FileChannel ch = external.get(real);
            if (ch == null) {
                ch = FileChannel.open(real, StandardOpenOption.READ);
                channels.add(ch);
                external.put(real, ch);
                files.add(staged != null ? target : real);
            }
            if (length >= 0 && length != bytes) {
                throw InvalidInputException.of(
                        where,
                        "external data length does not match shape " + Shapes.format(shape) + " × " + dtype.size()
                                + " bytes (" + dtype + ")",
                        bytes + " bytes",
                        length + " bytes");
            }
            long fileSize = ch.size();
            if (offset < 0 || offset > fileSize || bytes > fileSize - offset) {
                throw InvalidInputException.of(
                        where,
                        "external data in '" + location + "' runs past the end of the file (short read)",
                        "offset + length <= " + fileSize + " bytes (the file size)",
                        "offset " + offset + " + length " + bytes + " = " + (offset + bytes));
            }
            return new MappedTensor(name, dtype, shape, new FileRegion(real, ch, offset, bytes));
        }

        private static boolean isAbsolute(String location) {
            try {
                return Path.of(location).isAbsolute();
            } catch (java.nio.file.InvalidPathException e) {
                return true; // not a path this system can name relatively: refuse it the same way
            }
        }

        private static long parseLong(String v, String where, String key) {
            try {
                return Long.parseLong(v.trim());
            } catch (NumberFormatException e) {
                throw InvalidInputException.of(
                        where, "external data '" + key + "' is not a number", "a decimal integer", "'" + v + "'");
            }
        }

        private static int typedCount(TensorProto t, DType dtype) {
            return switch (dtype) {
                case F32 -> t.getFloatDataCount();
                case F64 -> t.getDoubleDataCount();
                case I64 -> t.getInt64DataCount();
                default -> t.getInt32DataCount();
            };
        }

        /** Decodes the typed repeated fields ({@code float_data}, {@code int32_data}, ...) into a buffer. */
        private static Tensor typedTensor(
                TensorProto t, String name, String where, DType dtype, long[] shape, long numel) {
            int count = typedCount(t, dtype);
            String field = dtype == DType.F32
                    ? "float_data"
                    : dtype == DType.F64 ? "double_data" : dtype == DType.I64 ? "int64_data" : "int32_data";
            if (count != numel) {
                throw InvalidInputException.of(
                        where,
                        "number of " + field + " values does not match shape " + Shapes.format(shape),
                        numel + " values",
                        count + " values" + (count == 0 ? " (and no raw_data)" : ""));
            }
            ByteBuffer b =
                    ByteBuffer.allocate(Math.multiplyExact(count, dtype.size())).order(ByteOrder.LITTLE_ENDIAN);
            for (int i = 0; i < count; i++) {
                switch (dtype) {
                    case F32 -> b.putFloat(t.getFloatData(i));
                    case F64 -> b.putDouble(t.getDoubleData(i));
                    case I64 -> b.putLong(t.getInt64Data(i));
                    case I32 -> b.putInt(t.getInt32Data(i));
                    // "float16 and bfloat16 values must be bit-wise converted to an uint16_t"
                    case I16, F16, BF16 -> b.putShort((short) t.getInt32Data(i));
                    default -> b.put((byte) t.getInt32Data(i));
                }
            }
            b.flip();
            return new BufferTensor(name, dtype, shape, b);
        }
    }

    static boolean isConstant(NodeProto n) {
        return n.getOpType().equals("Constant")
                && (n.getDomain().isEmpty() || n.getDomain().equals("ai.onnx"));
    }

    /** The {@code value} tensor attribute of a Constant node, or null. */
    static AttributeProto valueAttribute(NodeProto n) {
        for (AttributeProto a : n.getAttributeList()) {
            if (a.getName().equals("value") && a.hasT()) {
                return a;
            }
        }
        return null;
    }

    static boolean isSupported(int onnxCode) {
        for (DType d : DType.values()) {
            if (d.onnxCode() == onnxCode) {
                return true;
            }
        }
        return false;
    }
}
