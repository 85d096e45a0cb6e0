package scion.io.runtime.export;

import ai.onnx.proto.OnnxMl.GraphProto;
import ai.onnx.proto.OnnxMl.ModelProto;
import ai.onnx.proto.OnnxMl.OperatorSetIdProto;
import ai.onnx.proto.OnnxMl.StringStringEntryProto;
import ai.onnx.proto.OnnxMl.TensorProto;
import ai.onnx.proto.OnnxMl.ValueInfoProto;
import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxTensorLike;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.Provenance;
import scion.io.onnx.OnnxWriter;
import scion.io.tensor.DType;
import scion.io.tensor.FileRegion;
import scion.io.tensor.Tensor;

/**
 * Exports a safetensors checkpoint of a registered family ({@link scion.io.arch.Architectures}) as a runnable ONNX
 * graph, opset {@value #OPSET}, computed in float32: ONNX Runtime is the judge of every transformed
 * model, and this is how a safetensors model gets in front of it.
 *
 * <p><b>Graph.</b> Inputs {@code input_ids} and {@code attention_mask}, int64 {@code [batch, sequence]} (bert also
 * {@code token_type_ids}), both axes dynamic. Causal LMs output {@code logits} {@code [batch, sequence, vocab]},
 * encoders {@code last_hidden_state} {@code [batch, sequence, hidden]} and, when the checkpoint has a pooler, {@code
 * pooler_output} {@code [batch, hidden]} ({@code tanh(dense(h[:, 0]))}, as BertModel). With {@link
 * Options#residualStreamOutputs()}, extra outputs {@code hidden_states.0 … hidden_states.L}: the residual stream
 * entering each block, and after the last block <em>before</em> the final norm (transformers' last {@code
 * hidden_states} entry is after it). It reproduces transformers 5 (eager attention) for each family: token embedding
 * {@code Gather} (+ learned positions, token types; Gemma's √hidden scale), RoPE from {@code Range} positions and
 * inverse-frequency constants (default, {@code linear} and {@code llama3} scaling; partial rotary on the first dims of
 * each head), per-head query/key RMSNorms before RoPE (Qwen3), attention {@code softmax(q·kᵀ/√head_dim)} (or the
 * family's scalar, Gemma 2's {@code query_pre_attn_scalar}; scores soft-capped {@code c·tanh(s/c)} where the family
 * says) with grouped-query heads broadcast over their group, a causal
 * (and sliding-window) mask combined with {@code attention_mask} (masked scores set to {@code finfo(float32).min}),
 * RMSNorm composed from {@code Pow/ReduceMean/Add/Sqrt/Div/Mul} (Gemma {@code ·(1+γ)}), native {@code
 * LayerNormalization}, gated (SiLU, gelu-tanh) and plain (gelu erf, gelu tanh, relu) MLPs, pre-LN, post-LN (bert) and
 * parallel residual (neox), branch-output (sandwich) norms (Gemma 2), final norm, and the output head (soft-capped
 * where the family says) ({@code Gemm} with {@code transB = 1} on the untied head
 * or on the embedding itself when tied: no transposed copy). Positions are {@code 0..S-1} (OPT: {@code
 * cumsum(mask)-1}), as transformers uses without {@code position_ids}.
 *
 * <p><b>Weights are referenced, never copied.</b> Every graph initializer is one model weight, named after its Hugging
 * Face parameter and left as a stub ({@code data_location = EXTERNAL}, location {@code scion-in-memory}); {@link
 * Exported#initializers()} maps each name to the checkpoint's lazy {@link Tensor}. Weights stay in their stored dtype:
 * f16/bf16/f64 weights go through a {@code Cast} to float32 in the graph (exact; ONNX Runtime folds it at load), so
 * the written file is as small as the checkpoint and a session without a written file reads the checkpoint's bytes. A
 * weight above {@link Options#maxInitializerBytes()} (a Java buffer holds at most 2 GiB) becomes row blocks: a split
 * linear layer concatenates its column blocks, a split embedding gathers per block and selects with {@code Where}.
 *
 * <p><b>Two ways to run it.</b> {@link #write} streams it through {@link OnnxWriter} (atomic; external data by default;
 * provenance in {@code metadata_props}). {@link #openSession} runs it without writing anything: by default the stubs
 * are pointed at the weights' regions in the checkpoint's own files, which ONNX Runtime reads as external data (the
 * weights are held once, by ONNX Runtime); weights without a file, or on request all of them, are handed over from
 * memory through {@code SessionOptions.addExternalInitializers} (see {@link Handover}). ONNX models are refused: they
 * are runnable already.
 *
 * <p><b>Every weight is read.</b> A checkpoint weight the graph does not compute with (buffers aside, which the graph
 * recomputes from config.json as transformers does) is refused by name: otherwise ONNX Runtime would judge a model
 * other than the checkpoint, and {@code validate} would compare two equally wrong graphs.
 */
public final class OnnxExporter {
    /** The default-domain opset of exported graphs (native LayerNormalization). */
    public static final int OPSET = 17;
    /** ONNX IR version of exported models. */
    public static final int IR_VERSION = 8;
    /** Default {@link Options#maxInitializerBytes()}: 1 GiB. */
    public static final long DEFAULT_MAX_INITIALIZER_BYTES = 1L << 30;

    private OnnxExporter() {}

    /**
     * How to export.
     *
     * @param residualStreamOutputs add outputs {@code hidden_states.0 … hidden_states.L}
     * @param externalData where {@link #write} puts the weights (default: {@link OnnxWriter.ExternalData#ON})
     * @param force let {@link #write} replace an existing file
     * @param maxInitializerBytes split weights larger than this into row blocks (at most 2^31 − 1: one Java buffer)
     * @param toolVersion the Scion version recorded in provenance
     */
    public record Options(
            boolean residualStreamOutputs,
            OnnxWriter.ExternalData externalData,
            boolean force,
            long maxInitializerBytes,
            String toolVersion) {
        public Options {
            if (externalData == null) {
                throw new IllegalArgumentException("externalData must not be null");
            }
            if (maxInitializerBytes < 1 || maxInitializerBytes > Integer.MAX_VALUE) {
                throw new IllegalArgumentException(
                        "maxInitializerBytes must be in 1.." + Integer.MAX_VALUE + ", found " + maxInitializerBytes);
            }
            toolVersion = toolVersion == null ? "unknown" : toolVersion;
        }

        public static Options defaults() {
            return new Options(false, OnnxWriter.ExternalData.ON, false, DEFAULT_MAX_INITIALIZER_BYTES, "unknown");
        }

        public Options withResidualStreamOutputs(boolean r) {
            return new Options(r, externalData, force, maxInitializerBytes, toolVersion);
        }

        public Options withExternalData(OnnxWriter.ExternalData e) {
            return new Options(residualStreamOutputs, e, force, maxInitializerBytes, toolVersion);
        }

        public Options withForce(boolean f) {
            return new Options(residualStreamOutputs, externalData, f, maxInitializerBytes, toolVersion);
        }

        public Options withMaxInitializerBytes(long n) {
            return new Options(residualStreamOutputs, externalData, force, n, toolVersion);
        }

        public Options withToolVersion(String v) {
            return new Options(residualStreamOutputs, externalData, force, maxInitializerBytes, v);
        }
    }

    /**
     * An exported model: the graph, whose initializers are named stubs, and the weights they name.
     *
     * @param model the ONNX model (small: no weight bytes); its initializers are stubs with external-data location
     *     {@code scion-in-memory}
     * @param initializers every initializer of {@code model} by name: the checkpoint's lazy tensors (or row-block views
     *     of them), in graph order
     */
    public record Exported(ModelProto model, Map<String, Tensor> initializers) {
        public Exported {
            initializers = Collections.unmodifiableMap(new LinkedHashMap<>(initializers));
        }

        /** Graph input names, in order. */
        public List<String> inputNames() {
            List<String> out = new ArrayList<>();
            for (ValueInfoProto v : model.getGraph().getInputList()) {
                out.add(v.getName());
            }
            return out;
        }

        /** Graph output names, in order. */
        public List<String> outputNames() {
            List<String> out = new ArrayList<>();
            for (ValueInfoProto v : model.getGraph().getOutputList()) {
                out.add(v.getName());
            }
            return out;
        }

        /** {@code metadata_props} of the model. */
        public Map<String, String> metadata() {
            Map<String, String> m = new LinkedHashMap<>();
            for (StringStringEntryProto e : model.getMetadataPropsList()) {
                m.put(e.getKey(), e.getValue());
            }
            return m;
        }
    }

    /**
     * Builds the graph of {@code model}. Reads nothing but small tensors (for the provenance fingerprint).
     *
     * @throws InvalidInputException for an ONNX model, an unsupported setting or weight dtype
     */
    public static Exported export(Model model, Options options) {
        String where = model.location().getFileName().toString();
        if (model.format() == Model.Format.ONNX) {
            throw InvalidInputException.of(
                    where,
                    "export builds a graph from a safetensors checkpoint",
                    "a Hugging Face folder or .safetensors file",
                    "an ONNX model, which ONNX Runtime runs as it is");
        }
        FamilySettings settings = FamilySettings.of(model);
        TransformerGraph.Built built =
                TransformerGraph.build(model, settings, options.residualStreamOutputs(), options.maxInitializerBytes());
        Map<String, String> params = new LinkedHashMap<>();
        params.put("family", settings.family);
        params.put("residual_stream_outputs", Boolean.toString(options.residualStreamOutputs()));
        params.put("opset", Integer.toString(OPSET));
        Map<String, String> meta =
                Provenance.of(options.toolVersion(), "export", params, Map.of(where, model.checkpoint()));
        ModelProto.Builder m = ModelProto.newBuilder()
                .setIrVersion(IR_VERSION)
                .setProducerName("scion")
                .setProducerVersion(options.toolVersion())
                .addOpsetImport(OperatorSetIdProto.newBuilder().setDomain("").setVersion(OPSET))
                .setGraph(built.graph());
        for (Map.Entry<String, String> e : meta.entrySet()) {
            m.addMetadataProps(
                    StringStringEntryProto.newBuilder().setKey(e.getKey()).setValue(e.getValue()));
        }
        return new Exported(m.build(), built.initializers());
    }

    /** Exports {@code model} and writes it to {@code destination} (see {@link #write(Exported, Path, Options)}). */
    public static OnnxWriter.Written write(Model model, Path destination, Options options) {
        return write(export(model, options), destination, options);
    }

    /**
     * Writes an exported model: atomically, weights streamed from their tensors (zero-copy file transfers for
     * unchanged stored tensors), in {@code <destination>.data} unless {@link Options#externalData()} says otherwise.
     */
    public static OnnxWriter.Written write(Exported exported, Path destination, Options options) {
        OnnxWriter.Options w =
                OnnxWriter.Options.defaults().withForce(options.force()).withExternalData(options.externalData());
        return OnnxWriter.write(exported.model(), exported.initializers(), destination, w);
    }

    /** How {@link #openSession} hands the weights to ONNX Runtime. */
    public enum Handover {
        /**
         * Weights stored unchanged in files (safetensors shards) are referenced in place as ONNX external data: each
         * stub's location, offset and length point into the checkpoint file, and ONNX Runtime reads them itself (from
         * the folder named by the session option {@value #EXTERNAL_FOLDER_KEY}), exactly as from a written {@code
         * .onnx.data} file; any other weight goes {@link #MEMORY}. The process holds the weights once.
         */
        FILE_REFERENCES,
        /**
         * Every weight is handed over from memory through {@code SessionOptions.addExternalInitializers}: a read-only
         * mapping of its file region (or a direct-buffer copy of an in-memory tensor). ONNX Runtime copies them while
         * it creates the session, so the mapped pages it read stay resident besides its copy until the mappings are
         * collected: about twice the weights at the peak, half of it page cache the kernel may drop.
         */
        MEMORY
    }

    /** The ONNX Runtime session option naming the folder of external data for a model loaded from bytes. */
    public static final String EXTERNAL_FOLDER_KEY = "session.model_external_initializers_file_folder_path";

    /** {@link #openSession(OrtEnvironment, Exported, OrtSession.SessionOptions, Handover)} with file references. */
    public static OrtSession openSession(OrtEnvironment env, Exported exported, OrtSession.SessionOptions opts)
            throws OrtException {
        return openSession(env, exported, opts, Handover.FILE_REFERENCES);
    }

    /**
     * Opens an ONNX Runtime session on an exported model without writing a weight file. Measured on a 2.58 GB float32
     * checkpoint ({@code test/bench/export-large.sh}): peak RSS 2.5 GiB with {@link Handover#FILE_REFERENCES} (the
     * weights once, as when running a written file), 5.2 GiB with {@link Handover#MEMORY}.
     *
     * <p>{@code opts} is changed (the external-data folder entry, or the initializers added from memory, which refer
     * to buffers released when this returns): use it for this one session only, and close it afterwards.
     */
    public static OrtSession openSession(
            OrtEnvironment env, Exported exported, OrtSession.SessionOptions opts, Handover how) throws OrtException {
        ModelProto model = exported.model();
        Map<String, Tensor> fromMemory = new LinkedHashMap<>(exported.initializers());
        if (how == Handover.FILE_REFERENCES) {
            Optional<Path> folder = commonFolder(exported.initializers().values());
            if (folder.isPresent()) {
                ModelProto.Builder b = model.toBuilder();
                GraphProto.Builder g = b.getGraphBuilder();
                for (int i = 0; i < g.getInitializerCount(); i++) {
                    TensorProto.Builder stub = g.getInitializerBuilder(i);
                    Optional<FileRegion> r =
                            exported.initializers().get(stub.getName()).fileRegion();
                    if (r.isPresent() && folder.get().equals(folderOf(r.get()))) {
                        stub.clearExternalData()
                                .addExternalData(entry(
                                        "location", r.get().path().getFileName().toString()))
                                .addExternalData(
                                        entry("offset", Long.toString(r.get().offset())))
                                .addExternalData(
                                        entry("length", Long.toString(r.get().length())));
                        fromMemory.remove(stub.getName());
                    }
                }
                model = b.build();
                opts.addConfigEntry(EXTERNAL_FOLDER_KEY, folder.get().toString());
            }
        }
        Map<String, OnnxTensorLike> tensors = new LinkedHashMap<>();
        try {
            for (Map.Entry<String, Tensor> e : fromMemory.entrySet()) {
                tensors.put(e.getKey(), ortTensor(env, e.getKey(), e.getValue()));
            }
            opts.addExternalInitializers(tensors);
            return env.createSession(model.toByteArray(), opts);
        } finally {
            for (OnnxTensorLike t : tensors.values()) {
                t.close();
            }
        }
    }

    private static Path folderOf(FileRegion r) {
        return r.path().toAbsolutePath().normalize().getParent();
    }

    /** The folder holding the most file-backed weights (shards sit side by side), if any weight is file-backed. */
    private static Optional<Path> commonFolder(Iterable<Tensor> tensors) {
        Map<Path, Integer> count = new LinkedHashMap<>();
        for (Tensor t : tensors) {
            t.fileRegion().ifPresent(r -> count.merge(folderOf(r), 1, Integer::sum));
        }
        return count.entrySet().stream().max(Map.Entry.comparingByValue()).map(Map.Entry::getKey);
    }

    private static StringStringEntryProto entry(String k, String v) {
        return StringStringEntryProto.newBuilder().setKey(k).setValue(v).build();
    }

    private static OnnxTensor ortTensor(OrtEnvironment env, String name, Tensor t) throws OrtException {
        ByteBuffer bytes = bytesOf(name, t);
        return OnnxTensor.createTensor(env, bytes, t.shape(), javaType(t.dtype(), name));
    }

    /** The tensor's bytes as one direct buffer: a read-only mapping of its file region, else a copy. */
    static ByteBuffer bytesOf(String name, Tensor t) {
        long n = t.byteSize();
        if (n > Integer.MAX_VALUE) {
            throw new IllegalStateException("initializer '" + name + "' has " + n
                    + " bytes; export splits weights above Options.maxInitializerBytes, at most 2^31 - 1");
        }
        Optional<FileRegion> region = t.fileRegion();
        if (region.isPresent()) {
            FileRegion r = region.get();
            try {
                return r.channel()
                        .map(FileChannel.MapMode.READ_ONLY, r.offset(), r.length())
                        .order(ByteOrder.LITTLE_ENDIAN);
            } catch (IOException e) {
                throw new UncheckedIOException(r.path() + ": cannot map tensor '" + name + "'", e);
            }
        }
        ByteBuffer b = ByteBuffer.allocateDirect((int) n).order(ByteOrder.LITTLE_ENDIAN);
        t.readBytes(0, b);
        if (b.hasRemaining()) {
            throw new IllegalStateException(
                    "tensor '" + name + "' returned " + b.position() + " of its " + n + " bytes");
        }
        b.flip();
        return b;
    }

    private static OnnxJavaType javaType(DType d, String name) {
        switch (d) {
            case F32:
                return OnnxJavaType.FLOAT;
            case F16:
                return OnnxJavaType.FLOAT16;
            case BF16:
                return OnnxJavaType.BFLOAT16;
            case F64:
                return OnnxJavaType.DOUBLE;
            default:
                throw new IllegalStateException("initializer '" + name + "' has dtype " + d);
        }
    }
}
