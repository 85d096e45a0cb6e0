package scion.io.onnx;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static scion.io.onnx.OnnxTestSupport.floatExternal;
import static scion.io.onnx.OnnxTestSupport.floatRaw;
import static scion.io.onnx.OnnxTestSupport.model;
import static scion.io.onnx.OnnxTestSupport.save;
import static scion.io.onnx.OnnxTestSupport.writeFloats;

import ai.onnx.proto.OnnxMl.AttributeProto;
import ai.onnx.proto.OnnxMl.ModelProto;
import ai.onnx.proto.OnnxMl.NodeProto;
import ai.onnx.proto.OnnxMl.TensorProto;
import com.google.protobuf.ByteString;
import com.google.protobuf.CodedInputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.InvalidInputException;
import scion.io.tensor.BufferTensor;
import scion.io.tensor.DType;
import scion.io.tensor.MappedTensor;
import scion.io.tensor.Tensor;

class OnnxReaderTest {
    @TempDir
    Path dir;

    @Test
    void miniLmInitializersAndConstantsAreTensors() {
        Path p = OnnxTestSupport.miniLm(dir, "model.onnx");
        try (OnnxModel m = OnnxReader.open(p)) {
            assertEquals(102, m.graph().getInitializerCount());
            long constants = m.graph().getNodeList().stream()
                    .filter(n -> n.getOpType().equals("Constant"))
                    .count();
            assertEquals(102 + constants, m.tensors().size(), "every initializer and every Constant value");
            assertEquals("onnx::MatMul_787", m.tensors().get(66).name(), "storage order: initializers first");
            Tensor emb = m.find("embeddings.word_embeddings.weight").orElseThrow();
            assertEquals(DType.F32, emb.dtype());
            assertArrayEquals(new long[] {30522, 384}, emb.shape());
            Tensor ids = m.find("embeddings.position_ids").orElseThrow();
            assertEquals(DType.I64, ids.dtype());
            Tensor eps = m.find("/embeddings/LayerNorm/Constant_1_output_0").orElseThrow();
            assertFalse(m.isInitializer(eps.name()));
            assertEquals(1e-12f, eps.toFloats()[0]);
            assertEquals(11, m.opsetVersion());
            assertEquals(List.of("input_ids", "attention_mask", "token_type_ids"), m.inputNames());
            assertEquals(List.of("last_hidden_state"), m.outputNames());
            assertEquals(List.of(p), m.dataFiles());
            assertTrue(m.metadata().isEmpty());
        }
    }

    /**
     * Zero-copy, three ways: the raw_data ByteStrings are direct buffers over the mapping (not heap copies); a
     * change written to the file on disk shows through an already-open tensor (it reads the shared mapping); and
     * parsing the 90 MB model grows the heap by a few MB only.
     */
    @Test
    void rawDataAliasesTheMappedFile() throws IOException {
        Path p = OnnxTestSupport.miniLm(dir, "model.onnx");
        Runtime rt = Runtime.getRuntime();
        System.gc();
        long before = rt.totalMemory() - rt.freeMemory();
        try (OnnxModel m = OnnxReader.open(p)) {
            System.gc();
            long grown = (rt.totalMemory() - rt.freeMemory()) - before;
            assertTrue(grown < 30_000_000, "parsing a 90 MB model grew the heap by " + grown + " bytes");

            ByteString raw = m.graph().getInitializer(1).getRawData();
            assertTrue(raw.asReadOnlyByteBuffer().isDirect(), "raw_data is a slice of the mapping");
            BufferTensor emb =
                    (BufferTensor) m.find("embeddings.word_embeddings.weight").orElseThrow();
            assertTrue(emb.bytes().isDirect());

            byte[] head = new byte[64];
            emb.bytes().get(head);
            long offset = indexOf(Files.readAllBytes(p), head);
            assertTrue(offset > 0);
            float first = emb.toFloats()[0];
            try (FileChannel ch = FileChannel.open(p, StandardOpenOption.WRITE)) {
                ByteBuffer b =
                        ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putFloat(0, 1234.5f);
                ch.write(b, offset);
            }
            float[] firstNow = new float[1];
            emb.readFloats(0, firstNow, 0, 1);
            assertNotEquals(first, firstNow[0]);
            assertEquals(1234.5f, firstNow[0], "the open tensor reads the file's pages, not a copy");
        }
    }

    private static long indexOf(byte[] hay, byte[] needle) {
        outer:
        for (int i = 0; i + needle.length <= hay.length; i++) {
            for (int j = 0; j < needle.length; j++) {
                if (hay[i + j] != needle[j]) {
                    continue outer;
                }
            }
            return i;
        }
        return -1;
    }

    /** Guards the subtle part: protobuf's public ByteBuffer factory ignores aliasing and copies. */
    @Test
    void publicCodedInputFactoryWouldCopy() throws IOException {
        Path p = OnnxTestSupport.miniLm(dir, "model.onnx");
        try (FileChannel ch = FileChannel.open(p)) {
            MappedByteBuffer mb = ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size());
            CodedInputStream in = CodedInputStream.newInstance(mb);
            in.enableAliasing(true);
            ModelProto copied = ModelProto.parseFrom(in);
            assertFalse(copied.getGraph()
                    .getInitializer(1)
                    .getRawData()
                    .asReadOnlyByteBuffer()
                    .isDirect());
            ModelProto aliased = OnnxReader.parse(mb, p.toString());
            assertTrue(aliased.getGraph()
                    .getInitializer(1)
                    .getRawData()
                    .asReadOnlyByteBuffer()
                    .isDirect());
        }
    }

    @Test
    void typedFieldsAreDecoded() {
        TensorProto f = TensorProto.newBuilder()
                .setName("f")
                .setDataType(1)
                .addDims(3)
                .addFloatData(1.5f)
                .addFloatData(-2f)
                .addFloatData(3f)
                .build();
        TensorProto h = TensorProto.newBuilder()
                .setName("h")
                .setDataType(10)
                .addDims(2)
                .addInt32Data(0x3c00) // 1.0 in f16
                .addInt32Data(0xc000) // -2.0
                .build();
        TensorProto bf = TensorProto.newBuilder()
                .setName("bf")
                .setDataType(16)
                .addDims(1)
                .addInt32Data(0x3fc0) // 1.5 in bf16
                .build();
        TensorProto i8 = TensorProto.newBuilder()
                .setName("i8")
                .setDataType(3)
                .addDims(2)
                .addInt32Data(-5)
                .addInt32Data(7)
                .build();
        TensorProto l = TensorProto.newBuilder()
                .setName("l")
                .setDataType(7)
                .addDims(2)
                .addInt64Data(1L << 40)
                .addInt64Data(-3)
                .build();
        TensorProto d = TensorProto.newBuilder()
                .setName("d")
                .setDataType(11)
                .addDims(1)
                .addDoubleData(0.25)
                .build();
        NodeProto c = NodeProto.newBuilder()
                .setOpType("Constant")
                .setName("/c/Constant")
                .addOutput("c_out")
                .addAttribute(AttributeProto.newBuilder()
                        .setName("value")
                        .setType(AttributeProto.AttributeType.TENSOR)
                        .setT(floatRaw("", new long[] {2}, 4f, 5f)))
                .build();
        Path p = save(model(List.of(f, h, bf, i8, l, d), List.of(c)), dir.resolve("typed.onnx"));
        try (OnnxModel m = OnnxReader.open(p)) {
            assertArrayEquals(
                    new float[] {1.5f, -2f, 3f}, m.find("f").orElseThrow().toFloats());
            assertArrayEquals(new float[] {1f, -2f}, m.find("h").orElseThrow().toFloats());
            assertEquals(DType.F16, m.find("h").orElseThrow().dtype());
            assertArrayEquals(new float[] {1.5f}, m.find("bf").orElseThrow().toFloats());
            assertArrayEquals(new float[] {-5f, 7f}, m.find("i8").orElseThrow().toFloats());
            ByteBuffer lb = ByteBuffer.wrap(OnnxTestSupport.bytes(m.find("l").orElseThrow()))
                    .order(ByteOrder.LITTLE_ENDIAN);
            assertEquals(1L << 40, lb.getLong());
            assertEquals(-3L, lb.getLong());
            assertArrayEquals(new float[] {0.25f}, m.find("d").orElseThrow().toFloats());
            assertArrayEquals(
                    new float[] {4f, 5f}, m.find("c_out").orElseThrow().toFloats());
        }
    }

    @Test
    void externalDataIsMappedFromItsFile() {
        writeFloats(dir.resolve("w.bin"), 40);
        TensorProto w = floatExternal("w", new long[] {4, 4}, "w.bin", 64, 64L);
        TensorProto v = floatExternal("v", new long[] {2}, "w.bin", 0, null);
        Path p = save(model(List.of(w, v), List.of()), dir.resolve("ext.onnx"));
        try (OnnxModel m = OnnxReader.open(p)) {
            Tensor t = m.find("w").orElseThrow();
            assertInstanceOf(MappedTensor.class, t);
            assertEquals(16f, t.toFloats()[0], "offset 64 bytes = element 16");
            assertEquals(31f, t.toFloats()[15]);
            assertArrayEquals(new float[] {0f, 1f}, m.find("v").orElseThrow().toFloats());
            assertEquals(2, m.dataFiles().size());
        }
    }

    // ---------------------------------------------------------------------------------------------------------
    // Bad input: each message names the file, the tensor, what was expected and what was found.

    private InvalidInputException refused(TensorProto t, String tensorName) {
        Path p = save(model(List.of(t), List.of()), dir.resolve("bad.onnx"));
        InvalidInputException e = assertThrows(
                InvalidInputException.class, () -> OnnxReader.open(p).close());
        String msg = e.getMessage();
        assertTrue(msg.contains("bad.onnx"), msg);
        assertTrue(msg.contains("'" + tensorName + "'"), msg);
        assertTrue(msg.contains("expected") && msg.contains("found"), msg);
        return e;
    }

    @Test
    void externalLocationWithDotDotIsRefused() throws IOException {
        Path inner = Files.createDirectories(dir.resolve("model"));
        writeFloats(dir.resolve("x.bin"), 4);
        Path p = save(
                model(List.of(floatExternal("w", new long[] {4}, "../x.bin", 0, 16L)), List.of()),
                inner.resolve("bad.onnx"));
        InvalidInputException e = assertThrows(
                InvalidInputException.class, () -> OnnxReader.open(p).close());
        assertTrue(e.getMessage().contains("bad.onnx: tensor 'w'"), e.getMessage());
        assertTrue(e.getMessage().contains("'..'"), e.getMessage());
        assertTrue(e.getMessage().contains("expected a relative path inside the model's folder"), e.getMessage());
    }

    @Test
    void absoluteExternalLocationIsRefused() {
        Path x = writeFloats(dir.resolve("x.bin"), 4).toAbsolutePath();
        InvalidInputException e = refused(floatExternal("w", new long[] {4}, x.toString(), 0, 16L), "w");
        assertTrue(e.getMessage().contains("found an absolute path"), e.getMessage());
    }

    @Test
    void symlinkEscapingTheFolderIsRefused() throws IOException {
        Path outside = Files.createDirectories(dir.resolve("outside"));
        Path secret = writeFloats(outside.resolve("secret.bin"), 4);
        Path inner = Files.createDirectories(dir.resolve("model"));
        Files.createSymbolicLink(inner.resolve("link.bin"), secret);
        Path p = save(
                model(List.of(floatExternal("w", new long[] {4}, "link.bin", 0, 16L)), List.of()),
                inner.resolve("bad.onnx"));
        InvalidInputException e = assertThrows(
                InvalidInputException.class, () -> OnnxReader.open(p).close());
        assertTrue(e.getMessage().contains("bad.onnx: tensor 'w'"), e.getMessage());
        assertTrue(e.getMessage().contains("found a symbolic link to"), e.getMessage());
    }

    @Test
    void missingExternalFileIsAnError() {
        InvalidInputException e = refused(floatExternal("w", new long[] {4}, "nothere.bin", 0, 16L), "w");
        assertTrue(e.getMessage().contains("'nothere.bin' is missing"), e.getMessage());
        assertTrue(e.getMessage().contains("found no such file"), e.getMessage());
    }

    @Test
    void externalDataPastTheEndIsAShortRead() {
        writeFloats(dir.resolve("x.bin"), 25); // 100 bytes
        InvalidInputException e = refused(floatExternal("w", new long[] {16}, "x.bin", 64, 64L), "w");
        assertTrue(e.getMessage().contains("short read"), e.getMessage());
        assertTrue(e.getMessage().contains("expected offset + length <= 100 bytes"), e.getMessage());
        assertTrue(e.getMessage().contains("found offset 64 + length 64 = 128"), e.getMessage());
    }

    @Test
    void externalLengthMustMatchTheShape() {
        writeFloats(dir.resolve("x.bin"), 64);
        InvalidInputException e = refused(floatExternal("w", new long[] {16}, "x.bin", 0, 60L), "w");
        assertTrue(e.getMessage().contains("expected 64 bytes, found 60 bytes"), e.getMessage());
    }

    @Test
    void rawDataLengthMustMatchTheShape() {
        TensorProto t = floatRaw("w", new long[] {2, 3}, 1, 2, 3, 4, 5);
        InvalidInputException e = refused(t, "w");
        assertTrue(e.getMessage().contains("raw_data length"), e.getMessage());
        assertTrue(e.getMessage().contains("expected 24 bytes, found 20 bytes"), e.getMessage());
    }

    @Test
    void typedValueCountMustMatchTheShape() {
        TensorProto t = TensorProto.newBuilder()
                .setName("w")
                .setDataType(1)
                .addDims(3)
                .addFloatData(1f)
                .build();
        InvalidInputException e = refused(t, "w");
        assertTrue(e.getMessage().contains("expected 3 values, found 1 values"), e.getMessage());
    }

    @Test
    void unsupportedDataTypeNamesTheTensor() {
        TensorProto t = TensorProto.newBuilder()
                .setName("vocab")
                .setDataType(8) // STRING
                .addDims(1)
                .addStringData(ByteString.copyFromUtf8("hello"))
                .build();
        InvalidInputException e = refused(t, "vocab");
        assertTrue(e.getMessage().contains("unsupported ONNX data type"), e.getMessage());
        assertTrue(e.getMessage().contains("found code 8"), e.getMessage());
    }

    @Test
    void truncatedFileIsAClearError() throws IOException {
        Path p = OnnxTestSupport.miniLm(dir, "cut.onnx");
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.WRITE)) {
            ch.truncate(ch.size() / 2);
        }
        InvalidInputException e = assertThrows(
                InvalidInputException.class, () -> OnnxReader.open(p).close());
        assertTrue(e.getMessage().startsWith(p + ": not a valid ONNX protobuf (truncated or corrupt)"), e.getMessage());
        assertTrue(e.getMessage().contains("expected a serialized onnx ModelProto, found"), e.getMessage());
    }

    @Test
    void notAProtobufIsAClearError() throws IOException {
        Path text = Files.writeString(dir.resolve("notes.onnx"), "this is not an onnx model\n", StandardCharsets.UTF_8);
        InvalidInputException e = assertThrows(
                InvalidInputException.class, () -> OnnxReader.open(text).close());
        assertTrue(e.getMessage().contains("notes.onnx"), e.getMessage());
        assertTrue(e.getMessage().contains("expected") && e.getMessage().contains("found"), e.getMessage());

        Path empty = Files.write(dir.resolve("empty.onnx"), new byte[0]);
        e = assertThrows(
                InvalidInputException.class, () -> OnnxReader.open(empty).close());
        assertTrue(e.getMessage().contains("found an empty file"), e.getMessage());

        Path missing = dir.resolve("missing.onnx");
        e = assertThrows(
                InvalidInputException.class, () -> OnnxReader.open(missing).close());
        assertTrue(e.getMessage().contains("found no such file"), e.getMessage());
    }
}
