package scion.io.runtime.calibration;

import ai.onnx.proto.OnnxMl.ModelProto;
import ai.onnx.proto.OnnxMl.TensorProto;
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
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import scion.io.onnx.OnnxModel;
import scion.io.tensor.DType;
import scion.io.tensor.MappedTensor;
import scion.io.tensor.Tensor;

/**
 * An ONNX Runtime session on a tapped graph (the model's graph with extra outputs), loaded without writing or copying
 * the model's weights on the Java side.
 *
 * <p>How the weights reach ONNX Runtime:
 *
 * <ul>
 *   <li>Weights inside the .onnx file ({@code raw_data}; models below 2 GiB such as MiniLM's 90 MB): the tapped
 *       {@link ModelProto} is serialised to one byte array and ONNX Runtime parses it. Peak: the array plus ONNX
 *       Runtime's own copy, both of the model's size, the array only until the session exists.
 *   <li>Weights in external data files: the serialised graph keeps its {@code external_data} references and every
 *       such initializer is handed to {@code SessionOptions.addExternalInitializers} as a tensor over the read-only
 *       mapping of its file (a direct buffer: no copy in Java; the OS pages it in as ONNX Runtime reads it). The
 *       tensors stay open until the session closes. ONNX Runtime checks that name, shape and type match the graph's.
 *   <li>An external tensor above one mapped chunk ({@link MappedTensor#CHUNK}, 1 GiB) cannot be one Java buffer:
 *       then the tapped graph is written next to the original model under a hidden temporary name, so that its
 *       relative external-data paths resolve (ONNX forbids absolute ones), ONNX Runtime reads the data files itself,
 *       and the file is deleted when the session closes. This needs write access to the model's folder.
 * </ul>
 */
final class TappedSession implements AutoCloseable {
    private final OrtSession session;
    private final List<OnnxTensor> external;
    private final Path tempFile;
    private final String loading;

    private TappedSession(OrtSession session, List<OnnxTensor> external, Path tempFile) {
        this.session = session;
        this.external = external;
        this.tempFile = tempFile;
        if (tempFile != null) {
            loading = "graph written beside the model (" + tempFile.getFileName() + ")";
        } else {
            loading = external.isEmpty() ? "model bytes" : "mapped external initializers (" + external.size() + ")";
        }
    }

    private TappedSession(OrtSession session, String loading) {
        this.session = session;
        this.external = List.of();
        this.tempFile = null;
        this.loading = loading;
    }

    /** A session opened elsewhere (the exporter's in-memory path). */
    static TappedSession of(OrtSession session, String loading) {
        return new TappedSession(session, loading);
    }

    OrtSession session() {
        return session;
    }

    /** How the session was built, for reports: {@code bytes}, {@code external initializers (n)} or the temp file. */
    String loading() {
        return loading;
    }

    static TappedSession open(OrtEnvironment env, OnnxModel model, ModelProto tapped, OrtSession.SessionOptions options)
            throws OrtException {
        List<TensorProto> externals = new ArrayList<>();
        for (TensorProto t : tapped.getGraph().getInitializerList()) {
            if (t.getDataLocation() == TensorProto.DataLocation.EXTERNAL) {
                externals.add(t);
            }
        }
        if (externals.isEmpty()) {
            return new TappedSession(env.createSession(tapped.toByteArray(), options), List.of(), null);
        }
        Map<String, OnnxTensorLike> mapped = new LinkedHashMap<>();
        List<OnnxTensor> opened = new ArrayList<>();
        boolean fits = true;
        try {
            for (TensorProto t : externals) {
                Tensor tensor = model.find(t.getName()).orElse(null);
                ByteBuffer buf = tensor instanceof MappedTensor mt ? singleChunk(mt) : null;
                OnnxJavaType type = tensor == null ? null : javaType(tensor.dtype());
                if (buf == null || type == null) {
                    fits = false;
                    break;
                }
                OnnxTensor ot = OnnxTensor.createTensor(env, buf, tensor.shape(), type);
                opened.add(ot);
                mapped.put(t.getName(), ot);
            }
            if (fits) {
                options.addExternalInitializers(mapped);
                OrtSession s = env.createSession(tapped.toByteArray(), options);
                return new TappedSession(s, opened, null);
            }
        } catch (OrtException | RuntimeException e) {
            closeAll(opened);
            throw e;
        }
        closeAll(opened);
        Path dir = model.location().toAbsolutePath().getParent();
        Path temp;
        try {
            temp = Files.createTempFile(dir, "." + model.location().getFileName() + ".taps-", ".onnx");
            Files.write(temp, tapped.toByteArray());
        } catch (IOException e) {
            throw new UncheckedIOException(
                    dir + ": cannot write the tapped graph beside the model (needed for external tensors above "
                            + (MappedTensor.CHUNK >> 30) + " GiB)",
                    e);
        }
        try {
            return new TappedSession(env.createSession(temp.toString(), options), List.of(), temp);
        } catch (OrtException | RuntimeException e) {
            deleteQuietly(temp);
            throw e;
        }
    }

    private static ByteBuffer singleChunk(MappedTensor t) {
        if (t.byteSize() > MappedTensor.CHUNK) {
            return null;
        }
        ByteBuffer[] chunks = t.mappedChunks();
        return chunks.length == 1 ? chunks[0].order(ByteOrder.LITTLE_ENDIAN) : null;
    }

    private static OnnxJavaType javaType(DType d) {
        return switch (d) {
            case F32 -> OnnxJavaType.FLOAT;
            case F16 -> OnnxJavaType.FLOAT16;
            case BF16 -> OnnxJavaType.BFLOAT16;
            case F64 -> OnnxJavaType.DOUBLE;
            case I64 -> OnnxJavaType.INT64;
            case I32 -> OnnxJavaType.INT32;
            case I16 -> OnnxJavaType.INT16;
            case I8 -> OnnxJavaType.INT8;
            case U8 -> OnnxJavaType.UINT8;
            case BOOL -> OnnxJavaType.BOOL;
            default -> null;
        };
    }

    private static void closeAll(List<OnnxTensor> ts) {
        for (OnnxTensor t : ts) {
            t.close();
        }
    }

    private static void deleteQuietly(Path p) {
        try {
            Files.deleteIfExists(p);
        } catch (IOException e) {
            // best effort: a hidden temp file left beside the model is harmless
        }
    }

    @Override
    public void close() {
        try {
            session.close();
        } catch (OrtException e) {
            throw new IllegalStateException("cannot close the ONNX Runtime session: " + e.getMessage(), e);
        } finally {
            closeAll(external);
            if (tempFile != null) {
                deleteQuietly(tempFile);
            }
        }
    }
}
