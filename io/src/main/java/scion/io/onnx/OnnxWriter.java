package scion.io.onnx;

import ai.onnx.proto.OnnxMl.AttributeProto;
import ai.onnx.proto.OnnxMl.GraphProto;
import ai.onnx.proto.OnnxMl.ModelProto;
import ai.onnx.proto.OnnxMl.NodeProto;
import ai.onnx.proto.OnnxMl.StringStringEntryProto;
import ai.onnx.proto.OnnxMl.TensorProto;
import ai.onnx.proto.OnnxMl.ValueInfoProto;
import com.google.protobuf.CodedOutputStream;
import com.google.protobuf.UnknownFieldSet;
import java.io.FilterOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.DirectoryStream;
import java.nio.file.FileSystemException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import scion.io.AtomicOutput;
import scion.io.InvalidInputException;
import scion.io.tensor.DType;
import scion.io.tensor.FileRegion;
import scion.io.tensor.Tensor;

/**
 * Writes an ONNX model: a source model's graph (or a rewritten copy of it) with some tensors replaced, streaming
 * every weight from its {@link Tensor} so that peak memory is one chunk, not a model.
 *
 * <p>The protobuf is written by hand with {@link CodedOutputStream} (see {@link ProtoPiece}): each initializer is
 * its metadata fields ({@code dims}, {@code data_type}, {@code name}) followed by field 9 {@code raw_data}, whose
 * bytes come from {@link Tensor#readBytes} in 1 MiB chunks; all message sizes are computed up front. Other fields of
 * the model, graph and nodes are copied unchanged (and in field-number order, as protobuf's own serializer would).
 *
 * <p>External data ({@code onnx.proto}: "data_location = EXTERNAL ... external_data: location, offset, length"):
 * used when asked ({@link ExternalData#ON}), or automatically when the model would pass protobuf's 2 GiB limit
 * ({@link ExternalData#AUTO}). All initializers of at least {@link #EXTERNAL_MIN_BYTES} bytes go into one file,
 * {@code <model file name>.data} next to the model, each starting at a multiple of {@link #ALIGNMENT} bytes (zero
 * padded) so that ONNX Runtime and Scion can map every tensor page-aligned; smaller ones stay inline, as {@code
 * onnx.external_data_helper} does with its default 1024-byte threshold.
 *
 * <p>Re-typing ({@link Options#storeFloatsAs}): every floating-point initializer of another floating dtype is stored
 * in the target dtype under a new name ({@code <name>_f16}), and a {@code Cast(to=<original dtype>)} node placed at
 * the start of the graph outputs the original name, so the graph still computes in its own precision (ONNX Runtime
 * folds these casts when it loads the model). Integer initializers (position ids) are left alone; Constant nodes are
 * left alone.
 *
 * <p>Atomic: the data file and the model are written to staging files next to their destinations ({@link
 * AtomicOutput}); the staged model is re-opened with {@link OnnxReader} (every tensor's location, length, dtype and
 * shape checked) before anything is moved into place. A failure leaves neither behind. A model with external data is
 * switched by one rename of the model, after its data is in place under a name no other model uses, so that a
 * replaced model and its data change together even if the process is killed (see {@code commitPair}). Same inputs
 * give the same bytes.
 */
public final class OnnxWriter {
    /** Offsets of tensors in the external data file are multiples of this (one page). */
    public static final long ALIGNMENT = 4096;
    /** Initializers smaller than this stay inline when external data is written. */
    public static final long EXTERNAL_MIN_BYTES = 1024;

    private static final String SWAP = ".scion-swap-";

    private OnnxWriter() {}

    /** Where tensor bytes go. */
    public enum ExternalData {
        /** Inline, unless the model would pass protobuf's 2 GiB limit. */
        AUTO,
        /** Initializers of at least {@link #EXTERNAL_MIN_BYTES} bytes go to {@code <model>.data}. */
        ON,
        /** Everything inline; a model above 2 GiB is an error. */
        OFF;

        /** Parses {@code auto}, {@code on} or {@code off} (the {@code --external-data} values). */
        public static ExternalData parse(String s) {
            for (ExternalData e : values()) {
                if (e.name().equalsIgnoreCase(s.trim())) {
                    return e;
                }
            }
            throw InvalidInputException.of("--external-data", "unknown value", "auto, on or off", "'" + s + "'");
        }

        public String shortName() {
            return name().toLowerCase(Locale.ROOT);
        }
    }

    /**
     * How to write.
     *
     * @param force replace an existing destination (and data file)
     * @param externalData where tensor bytes go
     * @param storeFloatsAs store floating-point initializers in this dtype behind a Cast node, or null to keep them
     * @param metadata entries added to {@code metadata_props} (an existing entry with the same key is replaced); pass
     *     an ordered map for a stable order
     */
    public record Options(boolean force, ExternalData externalData, DType storeFloatsAs, Map<String, String> metadata) {
        public Options {
            if (externalData == null) {
                throw new IllegalArgumentException("externalData must not be null");
            }
            metadata =
                    metadata == null ? Map.of() : java.util.Collections.unmodifiableMap(new LinkedHashMap<>(metadata));
        }

        public static Options defaults() {
            return new Options(false, ExternalData.AUTO, null, Map.of());
        }

        public Options withForce(boolean f) {
            return new Options(f, externalData, storeFloatsAs, metadata);
        }

        public Options withExternalData(ExternalData e) {
            return new Options(force, e, storeFloatsAs, metadata);
        }

        public Options withStoreFloatsAs(DType d) {
            return new Options(force, externalData, d, metadata);
        }

        public Options withMetadata(Map<String, String> m) {
            return new Options(force, externalData, storeFloatsAs, m);
        }
    }

    /**
     * What was written.
     *
     * @param model the .onnx file
     * @param dataFile the external data file, if one was written
     * @param modelBytes size of the .onnx file
     * @param dataBytes size of the data file (0 if none)
     * @param retyped original names of the initializers stored in another dtype behind a Cast node
     */
    public record Written(Path model, Optional<Path> dataFile, long modelBytes, long dataBytes, List<String> retyped) {}

    /** Writes {@code source}'s graph with {@code replacements} (initializer or Constant output name → new tensor). */
    public static Written write(OnnxModel source, Map<String, Tensor> replacements, Path destination, Options options) {
        return write(source, source.proto(), replacements, destination, options);
    }

    /**
     * Writes {@code rewritten} (a model derived from {@code source.proto()}, e.g. with nodes or shape constants
     * changed). Each initializer's bytes come from {@code replacements} by name, else from {@code source}'s tensor of
     * that name; its dtype and shape are the tensor's (the TensorProto in {@code rewritten} only contributes its
     * name, doc string and metadata, so a new initializer needs only a named stub). Constant nodes named in {@code
     * replacements} are rewritten; the others are copied as they are.
     *
     * @throws IllegalArgumentException if a replacement names no initializer or Constant output of {@code
     *     rewritten}, or an initializer has no tensor (a bug in the operator, not the user's input)
     */
    public static Written write(
            OnnxModel source,
            ModelProto rewritten,
            Map<String, Tensor> replacements,
            Path destination,
            Options options) {
        return write(source, rewritten, replacements, destination, options, OnnxReader.MAX_PROTOBUF_BYTES);
    }

    /**
     * Writes a freshly built model (no source file): every initializer's bytes come from {@code initializers} by name,
     * its dtype and shape from that tensor; its TensorProto in {@code model} only contributes its name (a stub).
     */
    public static Written write(ModelProto model, Map<String, Tensor> initializers, Path destination, Options options) {
        OnnxModel empty = new OnnxModel(destination, model, List.of(), Set.of(), Map.of(), List.of(), List.of());
        return write(empty, model, initializers, destination, options);
    }

    /** As above with a smaller protobuf size limit, so tests can exercise the automatic switch to external data. */
    static Written write(
            OnnxModel source,
            ModelProto rewritten,
            Map<String, Tensor> replacements,
            Path destination,
            Options options,
            long protobufLimit) {
        Plan plan = new Plan(source, rewritten, replacements, destination, options);
        return plan.execute(protobufLimit);
    }

    /** An initializer (or Constant tensor) to write: its stub, its bytes and, if external, its offset. */
    private static final class Entry {
        final TensorProto stub; // name, doc_string, metadata_props (data fields ignored)
        final String name; // the name written
        final Tensor tensor;
        long offset = -1; // in the data file, or -1 when inline

        Entry(TensorProto stub, String name, Tensor tensor) {
            this.stub = stub;
            this.name = name;
            this.tensor = tensor;
        }
    }

    private static final class Plan {
        final OnnxModel source;
        final ModelProto model;
        final Path destination;
        final Options options;
        final Path dataDestination;
        final String dataLocation;
        final List<Entry> initializers = new ArrayList<>();
        final Map<Integer, Entry> constants = new LinkedHashMap<>(); // node index → replacement
        final List<NodeProto> castNodes = new ArrayList<>();
        final List<String> retyped = new ArrayList<>();
        final Set<String> removedInputs = new HashSet<>();

        Plan(OnnxModel source, ModelProto model, Map<String, Tensor> replacements, Path destination, Options options) {
            this.source = source;
            this.model = model;
            this.destination = destination.toAbsolutePath().normalize();
            this.options = options;
            this.dataLocation = this.destination.getFileName() + ".data";
            this.dataDestination = this.destination.resolveSibling(dataLocation);
            resolve(replacements);
            if (options.storeFloatsAs() != null) {
                retype(options.storeFloatsAs());
            }
        }

        private void resolve(Map<String, Tensor> replacements) {
            Set<String> used = new HashSet<>();
            GraphProto g = model.getGraph();
            for (TensorProto stub : g.getInitializerList()) {
                String name = stub.getName();
                Tensor t = replacements.get(name);
                if (t == null) {
                    t = source.find(name)
                            .orElseThrow(() -> new IllegalArgumentException("initializer '" + name
                                    + "' has neither a replacement nor a tensor in " + source.location()));
                }
                used.add(name);
                initializers.add(new Entry(stub, name, t));
            }
            for (int i = 0; i < g.getNodeCount(); i++) {
                NodeProto n = g.getNode(i);
                if (!OnnxReader.isConstant(n) || n.getOutputCount() != 1) {
                    continue;
                }
                AttributeProto value = OnnxReader.valueAttribute(n);
                if (value == null) {
                    continue;
                }
                String name = n.getOutput(0);
                Tensor t = replacements.get(name);
                if (t == null && value.getT().getDataLocation() == TensorProto.DataLocation.EXTERNAL) {
                    // Its location is relative to the source's folder: inline the bytes instead.
                    t = source.find(name).orElse(null);
                }
                if (t != null) {
                    used.add(name);
                    constants.put(i, new Entry(value.getT(), value.getT().getName(), t));
                }
            }
            for (String k : replacements.keySet()) {
                if (!used.contains(k)) {
                    throw new IllegalArgumentException(
                            "replacement '" + k + "' names no initializer or Constant output of the graph");
                }
            }
        }

        private void retype(DType target) {
            if (!target.isFloatingPoint() || !target.isWritable()) {
                throw InvalidInputException.of(
                        "--dtype", "cannot store weights as " + target.shortName(), "f32, f16, bf16 or f64", target);
            }
            long opset = source.opsetVersion();
            Set<String> names = allNames(model.getGraph());
            Set<String> inputs = new HashSet<>();
            for (ValueInfoProto v : model.getGraph().getInputList()) {
                inputs.add(v.getName());
            }
            for (int i = 0; i < initializers.size(); i++) {
                Entry e = initializers.get(i);
                DType from = e.tensor.dtype();
                if (!from.isFloatingPoint() || from == target || !from.isWritable()) {
                    continue;
                }
                long needed = (target == DType.BF16 || from == DType.BF16) ? 13 : 6;
                if (opset < needed) {
                    throw new InvalidInputException(source.location() + ": cannot store '" + e.name + "' as "
                            + target.shortName() + " behind a Cast node; expected opset >= " + needed
                            + " (Cast to and from " + (needed == 13 ? "bfloat16" : "float16") + "), found opset "
                            + opset + (target == DType.BF16 ? "; hint: use --dtype f16" : ""));
                }
                String stored = unique(e.name + "_" + target.shortName(), names);
                names.add(stored);
                TensorProto stub = e.stub.toBuilder().setName(stored).build();
                initializers.set(i, new Entry(stub, stored, e.tensor.as(target)));
                castNodes.add(NodeProto.newBuilder()
                        .setName("scion_cast/" + e.name)
                        .setOpType("Cast")
                        .addInput(stored)
                        .addOutput(e.name)
                        .addAttribute(AttributeProto.newBuilder()
                                .setName("to")
                                .setType(AttributeProto.AttributeType.INT)
                                .setI(from.onnxCode()))
                        .build());
                if (inputs.contains(e.name)) {
                    removedInputs.add(e.name); // IR < 4 lists initializers as inputs; a node now produces it
                }
                retyped.add(e.name);
            }
        }

        private static Set<String> allNames(GraphProto g) {
            Set<String> s = new HashSet<>();
            for (TensorProto t : g.getInitializerList()) {
                s.add(t.getName());
            }
            for (NodeProto n : g.getNodeList()) {
                s.addAll(n.getInputList());
                s.addAll(n.getOutputList());
            }
            for (ValueInfoProto v : g.getInputList()) {
                s.add(v.getName());
            }
            for (ValueInfoProto v : g.getOutputList()) {
                s.add(v.getName());
            }
            for (ValueInfoProto v : g.getValueInfoList()) {
                s.add(v.getName());
            }
            return s;
        }

        private static String unique(String base, Set<String> names) {
            String n = base;
            for (int i = 1; names.contains(n); i++) {
                n = base + "_" + i;
            }
            return n;
        }

        // ---------------------------------------------------------------------------------------------------------
        // Pieces

        private static final int MODEL_GRAPH = 7;
        private static final int GRAPH_NODE = 1;
        private static final int GRAPH_INITIALIZER = 5;
        private static final int NODE_ATTRIBUTE = 5;
        private static final int ATTRIBUTE_T = 5;
        private static final int TENSOR_RAW_DATA = 9;

        /** The model, naming {@code location} as the file of its external data. */
        private ProtoPiece modelPiece(String location) {
            ModelProto m = model;
            // Fields 1-6 (ir_version ... doc_string), then graph (7), then the rest: protobuf's own field order.
            ModelProto head = m.toBuilder()
                    .clearGraph()
                    .clearOpsetImport()
                    .clearMetadataProps()
                    .clearTrainingInfo()
                    .clearFunctions()
                    .setUnknownFields(UnknownFieldSet.getDefaultInstance())
                    .build();
            ModelProto tail = m.toBuilder()
                    .clearIrVersion()
                    .clearProducerName()
                    .clearProducerVersion()
                    .clearDomain()
                    .clearModelVersion()
                    .clearDocString()
                    .clearGraph()
                    .clearMetadataProps()
                    .addAllMetadataProps(metadataProps())
                    .build();
            List<ProtoPiece> pieces = new ArrayList<>();
            pieces.add(ProtoPiece.of(head));
            pieces.add(ProtoPiece.field(MODEL_GRAPH, graphPieces(location)));
            pieces.add(ProtoPiece.of(tail));
            return concat(pieces);
        }

        private List<StringStringEntryProto> metadataProps() {
            Map<String, String> extra = options.metadata();
            List<StringStringEntryProto> out = new ArrayList<>();
            Set<String> seen = new LinkedHashSet<>();
            for (StringStringEntryProto e : model.getMetadataPropsList()) {
                if (extra.containsKey(e.getKey())) {
                    if (seen.add(e.getKey())) {
                        out.add(entry(e.getKey(), extra.get(e.getKey())));
                    }
                } else {
                    out.add(e);
                }
            }
            for (Map.Entry<String, String> e : extra.entrySet()) {
                if (!seen.contains(e.getKey())) {
                    out.add(entry(e.getKey(), e.getValue()));
                }
            }
            return out;
        }

        private static StringStringEntryProto entry(String k, String v) {
            return StringStringEntryProto.newBuilder().setKey(k).setValue(v).build();
        }

        private List<ProtoPiece> graphPieces(String location) {
            GraphProto g = model.getGraph();
            List<ProtoPiece> pieces = new ArrayList<>();
            for (NodeProto cast : castNodes) {
                pieces.add(ProtoPiece.field(GRAPH_NODE, List.of(ProtoPiece.of(cast))));
            }
            for (int i = 0; i < g.getNodeCount(); i++) {
                Entry c = constants.get(i);
                NodeProto n = g.getNode(i);
                pieces.add(ProtoPiece.field(
                        GRAPH_NODE, c == null ? List.of(ProtoPiece.of(n)) : constantNode(n, c, location)));
            }
            if (g.hasName()) {
                pieces.add(ProtoPiece.of(
                        GraphProto.newBuilder().setName(g.getName()).build()));
            }
            for (Entry e : initializers) {
                pieces.add(ProtoPiece.field(GRAPH_INITIALIZER, tensorPieces(e, location)));
            }
            GraphProto.Builder rest = g.toBuilder().clearNode().clearName().clearInitializer();
            if (!removedInputs.isEmpty()) {
                rest.clearInput();
                for (ValueInfoProto v : g.getInputList()) {
                    if (!removedInputs.contains(v.getName())) {
                        rest.addInput(v);
                    }
                }
            }
            pieces.add(ProtoPiece.of(rest.build()));
            return pieces;
        }

        private List<ProtoPiece> constantNode(NodeProto n, Entry c, String location) {
            List<ProtoPiece> pieces = new ArrayList<>();
            // input, output, name, op_type (fields 1-4); attributes (5); the rest.
            pieces.add(ProtoPiece.of(n.toBuilder()
                    .clearAttribute()
                    .clearDocString()
                    .clearDomain()
                    .clearOverload()
                    .clearMetadataProps()
                    .setUnknownFields(UnknownFieldSet.getDefaultInstance())
                    .build()));
            for (AttributeProto a : n.getAttributeList()) {
                if (a.getName().equals("value") && a.hasT()) {
                    pieces.add(ProtoPiece.field(
                            NODE_ATTRIBUTE,
                            List.of(
                                    ProtoPiece.of(AttributeProto.newBuilder()
                                            .setName(a.getName())
                                            .build()),
                                    ProtoPiece.field(ATTRIBUTE_T, tensorPieces(c, location)),
                                    ProtoPiece.of(
                                            a.toBuilder().clearName().clearT().build()))));
                } else {
                    pieces.add(ProtoPiece.field(NODE_ATTRIBUTE, List.of(ProtoPiece.of(a))));
                }
            }
            pieces.add(ProtoPiece.of(n.toBuilder()
                    .clearInput()
                    .clearOutput()
                    .clearName()
                    .clearOpType()
                    .clearAttribute()
                    .build()));
            return pieces;
        }

        private List<ProtoPiece> tensorPieces(Entry e, String location) {
            Tensor t = e.tensor;
            // dims (1), data_type (2), name (8); raw_data (9); doc_string (12), metadata_props (16).
            TensorProto.Builder head = TensorProto.newBuilder();
            for (long d : t.shape()) {
                head.addDims(d);
            }
            head.setDataType(t.dtype().onnxCode());
            if (e.stub.hasName()) {
                head.setName(e.name);
            }
            TensorProto.Builder tail = TensorProto.newBuilder().addAllMetadataProps(e.stub.getMetadataPropsList());
            if (e.stub.hasDocString()) {
                tail.setDocString(e.stub.getDocString());
            }
            if (e.offset >= 0) {
                if (e.stub.hasDocString()) {
                    head.setDocString(e.stub.getDocString());
                }
                head.addExternalData(entry("location", location))
                        .addExternalData(entry("offset", Long.toString(e.offset)))
                        .addExternalData(entry("length", Long.toString(t.byteSize())))
                        .setDataLocation(TensorProto.DataLocation.EXTERNAL)
                        .addAllMetadataProps(e.stub.getMetadataPropsList());
                return List.of(ProtoPiece.of(head.build()));
            }
            return List.of(
                    ProtoPiece.of(head.build()),
                    ProtoPiece.tensorBytes(TENSOR_RAW_DATA, t),
                    ProtoPiece.of(tail.build()));
        }

        private static ProtoPiece concat(List<ProtoPiece> pieces) {
            long size = 0;
            for (ProtoPiece p : pieces) {
                size = Math.addExact(size, p.size());
            }
            long total = size;
            return new ProtoPiece() {
                @Override
                long size() {
                    return total;
                }

                @Override
                void write(CodedOutputStream out) throws IOException {
                    for (ProtoPiece p : pieces) {
                        p.write(out);
                    }
                }
            };
        }

        // ---------------------------------------------------------------------------------------------------------
        // Execution

        /** Assigns data-file offsets to the external initializers; returns the data file's size. */
        private long layoutExternal() {
            long pos = 0;
            for (Entry e : initializers) {
                long n = e.tensor.byteSize();
                if (n >= EXTERNAL_MIN_BYTES) {
                    pos = align(pos);
                    e.offset = pos;
                    pos = Math.addExact(pos, n);
                }
            }
            return pos;
        }

        private static long align(long pos) {
            return Math.addExact(pos, ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
        }

        Written execute(long limit) {
            String where = destination.toString();
            long inlineSize = modelPiece(dataLocation).size();
            ExternalData mode = options.externalData();
            boolean external = mode == ExternalData.ON || (mode == ExternalData.AUTO && inlineSize > limit);
            if (!external && inlineSize > limit) {
                throw InvalidInputException.of(
                        where,
                        "the model does not fit in one protobuf file",
                        "at most " + limit + " bytes",
                        inlineSize + " bytes; hint: --external-data on (or auto)");
            }
            long dataSize = external ? layoutExternal() : 0;
            external = external && initializers.stream().anyMatch(e -> e.offset >= 0); // nothing large: no file
            ProtoPiece piece = modelPiece(dataLocation);
            if (piece.size() > limit) {
                throw InvalidInputException.of(
                        where,
                        "the model without its external data still passes protobuf's limit",
                        "at most " + limit + " bytes",
                        piece.size() + " bytes");
            }
            try (AtomicOutput modelOut = AtomicOutput.begin(destination, options.force(), false);
                    AtomicOutput dataOut =
                            external ? AtomicOutput.begin(dataDestination, options.force(), false) : null) {
                if (external) {
                    writeData(dataOut.staging(), dataSize);
                }
                writeModel(modelOut.staging(), piece);
                verify(modelOut.staging(), external ? dataOut.staging() : null);
                if (external) {
                    commitPair(modelOut, dataOut);
                } else {
                    modelOut.commit();
                }
            }
            return new Written(
                    destination,
                    external ? Optional.of(dataDestination) : Optional.empty(),
                    piece.size(),
                    dataSize,
                    List.copyOf(retyped));
        }

        /**
         * Puts a model and its data file in place so that at every instant, even if the process is killed, the model
         * at the destination names a complete data file that belongs to it: the new data first goes under a name no
         * model uses ({@code .<data>.scion-swap-<pid>}); one rename puts a copy of the new model naming that file over
         * the destination (the switch); a hard link then gives the new data its final name, and the final model (naming
         * the final data file, the same bytes as a fresh write) replaces the switched one; the swap name is removed.
         * Killed after the switch, the destination holds the complete new model naming the swap file, which stays
         * until the next replace of this destination. Without hard links the data is copied to its final name instead.
         */
        private void commitPair(AtomicOutput modelOut, AtomicOutput dataOut) {
            String swapName =
                    "." + dataLocation + SWAP + ProcessHandle.current().pid();
            Path swap = destination.resolveSibling(swapName);
            Path swapModel =
                    modelOut.staging().resolveSibling(modelOut.staging().getFileName() + ".swap");
            boolean switched = false;
            try {
                writeModel(swapModel, modelPiece(swapName));
                AtomicOutput.fsync(swapModel);
                AtomicOutput.fsync(dataOut.staging());
                Files.move(dataOut.staging(), swap, StandardCopyOption.ATOMIC_MOVE);
                AtomicOutput.crashPoint("data-staged");
                Files.move(swapModel, destination, StandardCopyOption.ATOMIC_MOVE); // the switch
                switched = true;
                AtomicOutput.crashPoint("switched");
                Path link = dataOut.staging();
                try {
                    Files.createLink(link, swap);
                } catch (UnsupportedOperationException | FileSystemException e) {
                    Files.copy(swap, link);
                    AtomicOutput.fsync(link);
                }
                Files.move(link, dataDestination, StandardCopyOption.ATOMIC_MOVE);
                AtomicOutput.crashPoint("data-linked");
                modelOut.commit();
                Files.delete(swap);
                removeStaleSwaps();
            } catch (IOException e) {
                throw new UncheckedIOException(destination + ": cannot move the finished model and data into place", e);
            } finally {
                deleteAfterFailure(swapModel);
                if (!switched) {
                    deleteAfterFailure(swap);
                }
            }
        }

        /** Best effort: what stays (named after this process) is removed by the next run to this destination. */
        private static void deleteAfterFailure(Path p) {
            try {
                Files.deleteIfExists(p);
            } catch (IOException e) {
                // left for the next run's repair; the failure being reported matters more
            }
        }

        /** Swap files of killed runs: the destination now names the final data file, so no model uses them. */
        private void removeStaleSwaps() throws IOException {
            String prefix = "." + dataLocation + SWAP;
            try (DirectoryStream<Path> ds = Files.newDirectoryStream(destination.getParent(), prefix + "*")) {
                for (Path p : ds) {
                    String pid = p.getFileName().toString().substring(prefix.length());
                    if (!pid.isEmpty()
                            && pid.chars().allMatch(Character::isDigit)
                            && pid.length() < 19
                            && ProcessHandle.of(Long.parseLong(pid)).isEmpty()) {
                        Files.deleteIfExists(p);
                    }
                }
            }
        }

        private static void writeModel(Path staging, ProtoPiece piece) {
            try (OutputStream os = counted(Files.newOutputStream(staging, StandardOpenOption.CREATE_NEW))) {
                CodedOutputStream out = CodedOutputStream.newInstance(os, 1 << 16);
                piece.write(out);
                out.flush();
                if (out.getTotalBytesWritten() != piece.size()) {
                    throw new IllegalStateException("wrote " + out.getTotalBytesWritten() + " bytes to " + staging
                            + ", computed " + piece.size());
                }
            } catch (IOException e) {
                throw new UncheckedIOException(staging + ": cannot write the ONNX model", e);
            }
        }

        /** Reports every byte written to {@link AtomicOutput#wrote} (the crash test hook). */
        private static OutputStream counted(OutputStream os) {
            return new FilterOutputStream(os) {
                @Override
                public void write(byte[] b, int off, int len) throws IOException {
                    out.write(b, off, len);
                    AtomicOutput.wrote(len);
                }

                @Override
                public void write(int b) throws IOException {
                    out.write(b);
                    AtomicOutput.wrote(1);
                }
            };
        }

        private void writeData(Path staging, long dataSize) {
            try (FileChannel ch = FileChannel.open(staging, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
                ByteBuffer buf = ByteBuffer.allocate(ProtoPiece.CHUNK);
                long pos = 0;
                for (Entry e : initializers) {
                    if (e.offset < 0) {
                        continue;
                    }
                    buf.clear().limit((int) (e.offset - pos)); // zero padding, < ALIGNMENT
                    Arrays.fill(buf.array(), 0, buf.limit(), (byte) 0);
                    writeFully(ch, buf);
                    pos = e.offset;
                    long len = e.tensor.byteSize();
                    Optional<FileRegion> region = e.tensor.fileRegion();
                    if (region.isPresent()) {
                        transfer(region.get(), ch, e.tensor.name());
                    } else {
                        long done = 0;
                        while (done < len) {
                            int n = (int) Math.min(buf.capacity(), len - done);
                            buf.clear().limit(n);
                            e.tensor.readBytes(done, buf);
                            if (buf.hasRemaining()) {
                                throw new IllegalStateException("tensor '" + e.tensor.name() + "' returned "
                                        + (done + buf.position()) + " of its " + len + " bytes");
                            }
                            buf.flip();
                            writeFully(ch, buf);
                            done += n;
                        }
                    }
                    pos += len;
                }
                if (pos != dataSize || ch.size() != dataSize) {
                    throw new IllegalStateException(
                            "wrote " + ch.size() + " bytes to " + staging + ", planned " + dataSize);
                }
            } catch (IOException e) {
                throw new UncheckedIOException(staging + ": cannot write the external data", e);
            }
        }

        private static void writeFully(FileChannel ch, ByteBuffer buf) throws IOException {
            while (buf.hasRemaining()) {
                AtomicOutput.wrote(ch.write(buf));
            }
        }

        /** Zero-copy file-to-file transfer of an unchanged stored tensor. */
        private static void transfer(FileRegion r, FileChannel ch, String name) throws IOException {
            long done = 0;
            while (done < r.length()) {
                long n = r.channel().transferTo(r.offset() + done, r.length() - done, ch);
                if (n <= 0) {
                    throw new IOException(r.path() + ": short read of tensor '" + name + "' at " + (r.offset() + done));
                }
                done += n;
                AtomicOutput.wrote(n);
            }
        }

        /** Re-opens the staged model and checks every written tensor's name, dtype and shape. */
        private void verify(Path stagedModel, Path stagedData) {
            Map<String, Path> staged = stagedData == null ? Map.of() : Map.of(dataLocation, stagedData);
            try (OnnxModel m = OnnxReader.open(stagedModel, staged)) {
                for (Entry e : initializers) {
                    Tensor t = m.find(e.name)
                            .orElseThrow(() -> new IllegalStateException(
                                    stagedModel + ": written initializer '" + e.name + "' is missing on re-reading"));
                    if (t.dtype() != e.tensor.dtype() || !Arrays.equals(t.shape(), e.tensor.shape())) {
                        throw new IllegalStateException(stagedModel + ": initializer '" + e.name + "' reads back as "
                                + t.describe() + ", written as " + e.tensor.describe());
                    }
                    if (e.offset >= 0 && t.fileRegion().isEmpty()) {
                        throw new IllegalStateException(
                                stagedModel + ": initializer '" + e.name + "' should be external data");
                    }
                }
            } catch (InvalidInputException e) {
                throw new IllegalStateException(
                        stagedModel + ": the written model does not read back: " + e.getMessage(), e);
            }
        }
    }
}
