package scion.io.onnx;

import ai.onnx.proto.OnnxMl.GraphProto;
import ai.onnx.proto.OnnxMl.ModelProto;
import ai.onnx.proto.OnnxMl.OperatorSetIdProto;
import ai.onnx.proto.OnnxMl.ValueInfoProto;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.stream.Collectors;
import scion.io.Checkpoint;
import scion.io.tensor.Tensor;

/**
 * An open ONNX model: its parsed {@link ModelProto} (graph, opsets, inputs and outputs, kept for graph rewriting)
 * and its tensors as lazy views.
 *
 * <p>{@link #tensors()} holds every graph initializer in storage order, then every {@code Constant} node's {@code
 * value} tensor (named after the node's output) in node order. Tensors stored in {@code raw_data} alias the mapped
 * model file; external data is mapped from its file on first read. The {@code raw_data} fields of {@link #proto()}
 * alias the mapping too: nothing here holds a copy of the weights. Created by {@link OnnxReader#open}.
 */
public final class OnnxModel implements Checkpoint {
    private final Path location;
    private final ModelProto proto;
    private final List<Tensor> tensors;
    private final Map<String, Tensor> byName;
    private final Set<String> initializers;
    private final Map<String, String> metadata;
    private final List<Path> dataFiles;
    private final List<FileChannel> channels;

    OnnxModel(
            Path location,
            ModelProto proto,
            List<Tensor> tensors,
            Set<String> initializers,
            Map<String, String> metadata,
            List<Path> dataFiles,
            List<FileChannel> channels) {
        this.location = location;
        this.proto = proto;
        this.tensors = List.copyOf(tensors);
        Map<String, Tensor> m = new LinkedHashMap<>();
        for (Tensor t : tensors) {
            m.put(t.name(), t);
        }
        this.byName = Collections.unmodifiableMap(m);
        this.initializers = Set.copyOf(initializers);
        this.metadata = Collections.unmodifiableMap(new LinkedHashMap<>(metadata));
        this.dataFiles = List.copyOf(dataFiles);
        this.channels = channels;
    }

    /** The .onnx file. */
    @Override
    public Path location() {
        return location;
    }

    /** The parsed model; its {@code raw_data} fields alias the mapped file. Rewrite a copy with {@code toBuilder()}. */
    public ModelProto proto() {
        return proto;
    }

    public GraphProto graph() {
        return proto.getGraph();
    }

    public long irVersion() {
        return proto.getIrVersion();
    }

    /** The imported version of the default ONNX operator set ({@code ""} or {@code "ai.onnx"}), or 0. */
    public long opsetVersion() {
        for (OperatorSetIdProto o : proto.getOpsetImportList()) {
            if (o.getDomain().isEmpty() || o.getDomain().equals("ai.onnx")) {
                return o.getVersion();
            }
        }
        return 0;
    }

    /** Graph input names, excluding inputs that are initializers (IR &lt; 4 exports list those as inputs too). */
    public List<String> inputNames() {
        return proto.getGraph().getInputList().stream()
                .map(ValueInfoProto::getName)
                .filter(n -> !initializers.contains(n))
                .collect(Collectors.toList());
    }

    public List<String> outputNames() {
        return proto.getGraph().getOutputList().stream()
                .map(ValueInfoProto::getName)
                .collect(Collectors.toList());
    }

    /** Whether {@code name} is a graph initializer (as opposed to a Constant node's output). */
    public boolean isInitializer(String name) {
        return initializers.contains(name);
    }

    @Override
    public List<Tensor> tensors() {
        return tensors;
    }

    @Override
    public Optional<Tensor> find(String name) {
        return Optional.ofNullable(byName.get(name));
    }

    /** {@code metadata_props}, in file order (a repeated key keeps its last value). */
    @Override
    public Map<String, String> metadata() {
        return metadata;
    }

    /** The .onnx file, then each external-data file in first-use order. */
    @Override
    public List<Path> dataFiles() {
        return dataFiles;
    }

    /**
     * Closes the files. Tensors of external data cannot be read afterwards; the mapping of the model file itself
     * stays valid while anything refers to it.
     */
    @Override
    public void close() {
        OnnxReader.closeAll(channels);
    }
}
