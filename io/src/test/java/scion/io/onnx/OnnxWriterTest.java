package scion.io.onnx;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static scion.io.onnx.OnnxTestSupport.bytes;
import static scion.io.onnx.OnnxTestSupport.runMiniLm;

import ai.onnx.proto.OnnxMl.NodeProto;
import ai.onnx.proto.OnnxMl.TensorProto;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.io.TempDir;
import scion.io.InvalidInputException;
import scion.io.onnx.OnnxWriter.ExternalData;
import scion.io.onnx.OnnxWriter.Options;
import scion.io.onnx.OnnxWriter.Written;
import scion.io.tensor.BufferTensor;
import scion.io.tensor.DType;
import scion.io.tensor.MappedTensor;
import scion.io.tensor.Tensor;

/** Writer tests on the real MiniLM model; ONNX Runtime judges that written models still compute the same thing. */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class OnnxWriterTest {
    private Path source;
    private OnnxModel model;
    private float[] reference; // last_hidden_state of the source model

    @BeforeAll
    void openMiniLm(@TempDir Path shared) {
        source = OnnxTestSupport.miniLm(shared, "minilm.onnx");
        model = OnnxReader.open(source);
        reference = runMiniLm(source);
    }

    @AfterAll
    void close() {
        model.close();
    }

    private static void assertSameInitializers(OnnxModel a, OnnxModel b) {
        assertEquals(a.graph().getInitializerCount(), b.graph().getInitializerCount());
        for (TensorProto t : a.graph().getInitializerList()) {
            Tensor x = a.find(t.getName()).orElseThrow();
            Tensor y = b.find(t.getName()).orElseThrow();
            assertEquals(x.dtype(), y.dtype(), t.getName());
            assertArrayEquals(x.shape(), y.shape(), t.getName());
            assertArrayEquals(bytes(x), bytes(y), t.getName());
        }
    }

    @Test
    void roundTripKeepsEveryByteAndTheOutput(@TempDir Path dir) throws IOException {
        Path out = dir.resolve("copy.onnx");
        Written w = OnnxWriter.write(model, Map.of(), out, Options.defaults());
        assertEquals(Files.size(out), w.modelBytes());
        assertTrue(w.dataFile().isEmpty());
        try (OnnxModel copy = OnnxReader.open(out)) {
            assertSameInitializers(model, copy);
            assertEquals(model.tensors().size(), copy.tensors().size());
        }
        // The source was serialized in protobuf's canonical field order, as the writer streams it: same file.
        assertArrayEquals(Files.readAllBytes(source), Files.readAllBytes(out));
        // Bit-identical output: the same weights and graph must compute the same floats.
        assertArrayEquals(reference, runMiniLm(out));
    }

    @Test
    void externalDataRunsIdentically(@TempDir Path dir) throws IOException {
        Path out = dir.resolve("ext.onnx");
        Written w = OnnxWriter.write(model, Map.of(), out, Options.defaults().withExternalData(ExternalData.ON));
        Path data = dir.resolve("ext.onnx.data");
        assertEquals(data, w.dataFile().orElseThrow());
        assertTrue(Files.size(out) < 1_000_000, "only the graph and small tensors stay in the model");
        assertEquals(Files.size(data), w.dataBytes());
        try (OnnxModel ext = OnnxReader.open(out)) {
            assertSameInitializers(model, ext);
            assertEquals(List.of(out, data.toRealPath()), ext.dataFiles());
            for (TensorProto t : ext.graph().getInitializerList()) {
                Tensor x = ext.find(t.getName()).orElseThrow();
                if (x.byteSize() >= OnnxWriter.EXTERNAL_MIN_BYTES) {
                    MappedTensor m = assertInstanceOf(MappedTensor.class, x, t.getName());
                    assertEquals(0, m.fileRegion().orElseThrow().offset() % OnnxWriter.ALIGNMENT, t.getName());
                } else {
                    assertInstanceOf(BufferTensor.class, x, t.getName());
                }
            }
            // External tensors copy through FileChannel.transferTo when re-written externally.
            Path again = dir.resolve("again.onnx");
            OnnxWriter.write(ext, Map.of(), again, Options.defaults().withExternalData(ExternalData.ON));
            assertArrayEquals(Files.readAllBytes(data), Files.readAllBytes(dir.resolve("again.onnx.data")));
            // And back inline: the original file again.
            Path inline = dir.resolve("inline.onnx");
            OnnxWriter.write(ext, Map.of(), inline, Options.defaults().withExternalData(ExternalData.OFF));
            assertArrayEquals(Files.readAllBytes(source), Files.readAllBytes(inline));
        }
        assertArrayEquals(reference, runMiniLm(out));
    }

    /** The 2 GiB protobuf limit, scaled down to 10 MB so that the 90 MB model passes it. */
    @Test
    void autoGoesExternalAboveTheProtobufLimit(@TempDir Path dir) throws IOException {
        long limit = 10_000_000;
        Path out = dir.resolve("auto.onnx");
        Written w = OnnxWriter.write(model, model.proto(), Map.of(), out, Options.defaults(), limit);
        assertTrue(w.dataFile().isPresent());
        assertTrue(Files.size(out) < limit);
        try (OnnxModel m = OnnxReader.open(out)) {
            assertSameInitializers(model, m);
        }
        Path off = dir.resolve("off.onnx");
        InvalidInputException e = assertThrows(
                InvalidInputException.class,
                () -> OnnxWriter.write(
                        model,
                        model.proto(),
                        Map.of(),
                        off,
                        Options.defaults().withExternalData(ExternalData.OFF),
                        limit));
        assertTrue(e.getMessage().contains("does not fit in one protobuf file"), e.getMessage());
        assertTrue(e.getMessage().contains("hint: --external-data on"), e.getMessage());
        assertEquals(List.of("auto.onnx", "auto.onnx.data"), listing(dir));
    }

    @Test
    void f16StorageRunsCloseToTheOriginalAtHalfTheSize(@TempDir Path dir) throws IOException {
        Path out = dir.resolve("f16.onnx");
        Written w = OnnxWriter.write(model, Map.of(), out, Options.defaults().withStoreFloatsAs(DType.F16));
        assertEquals(101, w.retyped().size(), "every float initializer; not the int64 position_ids");
        double ratio = (double) Files.size(out) / Files.size(source);
        assertTrue(ratio > 0.45 && ratio < 0.55, "size ratio " + ratio);
        try (OnnxModel f16 = OnnxReader.open(out)) {
            assertEquals(
                    DType.I64, f16.find("embeddings.position_ids").orElseThrow().dtype());
            assertEquals(
                    DType.F16, f16.find("onnx::MatMul_787_f16").orElseThrow().dtype());
            assertTrue(f16.find("onnx::MatMul_787").isEmpty(), "the Cast node now produces the original name");
            NodeProto cast = f16.graph().getNode(0);
            assertEquals("Cast", cast.getOpType());
            assertEquals(1, cast.getAttribute(0).getI(), "Cast(to=FLOAT)");
        }
        float[] got = runMiniLm(out);
        // f16 keeps 11 significant bits (relative step 2^-11 ≈ 4.9e-4 per weight); over 6 layers the errors stay
        // far below the 1e-2 relative bound, and the direction of every embedding is unchanged.
        double cos = OnnxTestSupport.cosine(reference, got);
        assertTrue(cos > 0.9999, "cosine " + cos);
        double maxRef = 0;
        double maxDiff = 0;
        for (int i = 0; i < got.length; i++) {
            maxRef = Math.max(maxRef, Math.abs(reference[i]));
            maxDiff = Math.max(maxDiff, Math.abs(reference[i] - got[i]));
        }
        assertTrue(maxDiff / maxRef < 1e-2, "max difference relative to the largest output: " + maxDiff / maxRef);
    }

    @Test
    void bf16NeedsOpset13(@TempDir Path dir) throws IOException {
        InvalidInputException e = assertThrows(
                InvalidInputException.class,
                () -> OnnxWriter.write(
                        model,
                        Map.of(),
                        dir.resolve("bf16.onnx"),
                        Options.defaults().withStoreFloatsAs(DType.BF16)));
        assertTrue(e.getMessage().contains("expected opset >= 13"), e.getMessage());
        assertTrue(e.getMessage().contains("found opset 11"), e.getMessage());
        assertEquals(0, listing(dir).size());
    }

    @Test
    void replacementsAndProvenance(@TempDir Path dir) {
        Path out = dir.resolve("changed.onnx");
        float[] zeros = new float[384 * 384];
        Map<String, Tensor> repl = Map.of(
                "onnx::MatMul_787",
                BufferTensor.ofFloats("ignored", new long[] {384, 384}, zeros),
                "/embeddings/LayerNorm/Constant_1_output_0",
                BufferTensor.ofFloats("eps", new long[] {}, new float[] {1e-5f}));
        Map<String, String> meta = new LinkedHashMap<>();
        meta.put("scion.version", "0.1.0");
        meta.put("scion.operator", "test");
        OnnxWriter.write(model, repl, out, Options.defaults().withMetadata(meta));
        try (OnnxModel m = OnnxReader.open(out)) {
            assertArrayEquals(zeros, m.find("onnx::MatMul_787").orElseThrow().toFloats());
            assertEquals(
                    1e-5f,
                    m.find("/embeddings/LayerNorm/Constant_1_output_0")
                            .orElseThrow()
                            .toFloats()[0]);
            assertArrayEquals(
                    bytes(model.find("onnx::MatMul_788").orElseThrow()),
                    bytes(m.find("onnx::MatMul_788").orElseThrow()));
            assertEquals(meta, m.metadata());
            // An existing key is replaced, not repeated.
            Path again = dir.resolve("again.onnx");
            OnnxWriter.write(m, Map.of(), again, Options.defaults().withMetadata(Map.of("scion.operator", "second")));
            try (OnnxModel m2 = OnnxReader.open(again)) {
                assertEquals(2, m2.proto().getMetadataPropsCount());
                assertEquals("0.1.0", m2.metadata().get("scion.version"));
                assertEquals("second", m2.metadata().get("scion.operator"));
            }
        }
        assertThrows(
                IllegalArgumentException.class,
                () -> OnnxWriter.write(
                        model,
                        Map.of("no.such.tensor", BufferTensor.ofFloats("x", new long[] {1}, new float[1])),
                        dir.resolve("x.onnx"),
                        Options.defaults()));
    }

    /** A tensor that fails half-way through its bytes, as a failing operator or disk would. */
    private static Tensor failing(Tensor t) {
        return new Tensor() {
            @Override
            public String name() {
                return t.name();
            }

            @Override
            public DType dtype() {
                return t.dtype();
            }

            @Override
            public long[] shape() {
                return t.shape();
            }

            @Override
            public void readBytes(long byteOffset, ByteBuffer dst) {
                throw new IllegalStateException("simulated failure reading '" + t.name() + "'");
            }
        };
    }

    @Test
    void aFailureLeavesNothingBehind(@TempDir Path dir) throws IOException {
        Tensor last = model.find("onnx::MatMul_864").orElseThrow();
        for (ExternalData mode : List.of(ExternalData.OFF, ExternalData.ON)) {
            Path out = dir.resolve("failed.onnx");
            Map<String, Tensor> repl = Map.of(last.name(), failing(last));
            IllegalStateException e = assertThrows(
                    IllegalStateException.class,
                    () -> OnnxWriter.write(model, repl, out, Options.defaults().withExternalData(mode)));
            assertTrue(e.getMessage().contains("simulated failure"), e.getMessage());
            assertEquals(List.of(), listing(dir), "no output, no staging file, no data file (" + mode + ")");
        }
        // A failure while replacing an existing output leaves the old output untouched.
        Path out = dir.resolve("kept.onnx");
        OnnxWriter.write(model, Map.of(), out, Options.defaults().withExternalData(ExternalData.ON));
        byte[] before = Files.readAllBytes(out);
        byte[] dataBefore = Files.readAllBytes(dir.resolve("kept.onnx.data"));
        assertThrows(
                IllegalStateException.class,
                () -> OnnxWriter.write(
                        model,
                        Map.of(last.name(), failing(last)),
                        out,
                        Options.defaults().withForce(true).withExternalData(ExternalData.ON)));
        assertArrayEquals(before, Files.readAllBytes(out));
        assertArrayEquals(dataBefore, Files.readAllBytes(dir.resolve("kept.onnx.data")));
        assertEquals(List.of("kept.onnx", "kept.onnx.data"), listing(dir));
    }

    @Test
    void anExistingDestinationNeedsForce(@TempDir Path dir) throws IOException {
        Path out = dir.resolve("model.onnx");
        Files.writeString(out, "precious");
        InvalidInputException e = assertThrows(
                InvalidInputException.class, () -> OnnxWriter.write(model, Map.of(), out, Options.defaults()));
        assertTrue(e.getMessage().contains("output already exists"), e.getMessage());
        assertEquals("precious", Files.readString(out));
        assertEquals(List.of("model.onnx"), listing(dir));

        // A stale data file is an existing destination too when external data will be written.
        Path out2 = dir.resolve("other.onnx");
        Files.writeString(dir.resolve("other.onnx.data"), "stale");
        e = assertThrows(
                InvalidInputException.class,
                () -> OnnxWriter.write(model, Map.of(), out2, Options.defaults().withExternalData(ExternalData.ON)));
        assertTrue(e.getMessage().contains("other.onnx.data"), e.getMessage());
        assertFalse(Files.exists(out2));

        OnnxWriter.write(model, Map.of(), out, Options.defaults().withForce(true));
        assertArrayEquals(Files.readAllBytes(source), Files.readAllBytes(out));
    }

    @Test
    void externalDataOptionParses() {
        assertEquals(ExternalData.ON, ExternalData.parse("on"));
        assertEquals(ExternalData.OFF, ExternalData.parse("OFF"));
        assertEquals(ExternalData.AUTO, ExternalData.parse("auto"));
        InvalidInputException e = assertThrows(InvalidInputException.class, () -> ExternalData.parse("maybe"));
        assertTrue(e.getMessage().startsWith("--external-data: unknown value; expected auto, on or off"));
    }

    private static List<String> listing(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).sorted().collect(Collectors.toList());
        }
    }
}
