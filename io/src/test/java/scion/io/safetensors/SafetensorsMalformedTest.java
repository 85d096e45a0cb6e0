package scion.io.safetensors;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.InvalidInputException;

/**
 * Malformed files built byte by byte: each is refused with an {@link InvalidInputException} whose message names the
 * file and (where there is one) the tensor, and says what was expected and what was found.
 */
class SafetensorsMalformedTest {
    @TempDir
    Path dir;

    static final String A = "{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";

    /** 8-byte little-endian {@code n}, then {@code header}, then {@code data} zero bytes. */
    static byte[] raw(long n, byte[] header, int data) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.writeBytes(
                ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(n).array());
        out.writeBytes(header);
        out.writeBytes(new byte[data]);
        return out.toByteArray();
    }

    static byte[] file(String header, int data) {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        return raw(h.length, h, data);
    }

    Path write(String name, byte[] bytes) throws IOException {
        Path p = dir.resolve(name);
        Files.createDirectories(p.getParent());
        Files.write(p, bytes);
        return p;
    }

    /** Opens {@code path}, expects a refusal, and checks the message parts. */
    static String refused(Path path, String... mustContain) {
        InvalidInputException e = assertThrows(
                InvalidInputException.class, () -> SafetensorsReader.open(path).close());
        String m = e.getMessage();
        assertTrue(m.contains("expected"), m);
        assertTrue(m.contains("found"), m);
        for (String s : mustContain) {
            assertTrue(m.contains(s), "message lacks <" + s + ">: " + m);
        }
        return m;
    }

    String refusedFile(String header, int data, String... mustContain) throws IOException {
        return refused(write("bad.safetensors", file(header, data)), prepend("bad.safetensors", mustContain));
    }

    static String[] prepend(String first, String[] rest) {
        String[] out = new String[rest.length + 1];
        out[0] = first;
        System.arraycopy(rest, 0, out, 1, rest.length);
        return out;
    }

    @Test
    void fileShorterThanEightBytes() throws IOException {
        refused(write("short.safetensors", new byte[] {1, 0, 0, 0, 0}), "short.safetensors", "5 bytes");
    }

    @Test
    void headerLongerThanTheFile() throws IOException {
        byte[] h = "{}".getBytes(StandardCharsets.UTF_8);
        refused(write("long.safetensors", raw(1000, h, 0)), "long.safetensors", "1000 bytes", "past the end");
    }

    @Test
    void headerSizeOverTheCap() throws IOException {
        refused(write("cap.safetensors", raw(200_000_000L, new byte[16], 0)), "cap.safetensors", "100000000");
        // An unsigned u64 above 2^63 is not mistaken for a negative length.
        String m = refused(write("cap2.safetensors", raw(-1L, new byte[16], 0)), "cap2.safetensors");
        assertTrue(m.contains("18446744073709551615"), m);
    }

    @Test
    void headerIsNotJson() throws IOException {
        refusedFile("{\"a\":" + A + ",\"b\":{\"dtype\":\"F32\",", 8, "'b'", "not valid JSON");
        refusedFile("[1, 2]", 0, "'{'");
        refusedFile("{\"a\":" + A + "} {}", 8, "content after");
    }

    @Test
    void headerIsNotUtf8() throws IOException {
        byte[] h = ("{\"a\":" + A + ",\"x\":\"\u00e9\"}").getBytes(StandardCharsets.UTF_8);
        int i = h.length - 4; // first byte of the two-byte é: make it an invalid continuation
        h[i + 1] = (byte) 0x28;
        refused(write("utf.safetensors", raw(h.length, h, 8)), "utf.safetensors", "UTF-8");
    }

    @Test
    void duplicateKeys() throws IOException {
        refusedFile("{\"a\":" + A + ",\"a\":" + A + "}", 8, "tensor 'a'", "duplicate", "twice");
        refusedFile(
                "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                8,
                "tensor 'a'",
                "'dtype' twice");
    }

    @Test
    void unknownDtype() throws IOException {
        refusedFile("{\"a\":{\"dtype\":\"F7\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor 'a'", "'F7'");
    }

    @Test
    void shapeDoesNotMatchTheByteRange() throws IOException {
        refusedFile(
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}",
                8,
                "tensor 'a'",
                "expected 12 bytes",
                "found 8 bytes");
    }

    @Test
    void overlappingOffsets() throws IOException {
        refusedFile(
                "{\"a\":" + A + ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                12,
                "tensor 'b'",
                "overlap tensor 'a'",
                "begin 8",
                "begin 4");
    }

    @Test
    void gapBetweenTensors() throws IOException {
        refusedFile(
                "{\"a\":" + A + ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
                20,
                "tensor 'b'",
                "gap after tensor 'a'",
                "begin 8",
                "begin 12");
        refusedFile(
                "{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                12,
                "tensor 'b'",
                "does not start",
                "begin 0");
    }

    @Test
    void trailingBytes() throws IOException {
        refusedFile("{\"a\":" + A + "}", 9, "tensor 'a'", "trailing bytes", "(1 unindexed)");
        refusedFile("{}", 3, "3 unindexed bytes after a header that lists no tensors");
    }

    @Test
    void offsetsOutOfBounds() throws IOException {
        refusedFile(
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
                8,
                "tensor 'a'",
                "past the end",
                "[8, 16]");
    }

    @Test
    void badDataOffsets() throws IOException {
        refusedFile("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8, "tensor 'a'", "[8, 0]");
        refusedFile("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", 8, "tensor 'a'", "[0, 8, 8]");
        refusedFile(
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}",
                8,
                "tensor 'a'",
                "non-negative",
                "-8");
    }

    @Test
    void negativeOrNonIntegerDimensions() throws IOException {
        refusedFile(
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}",
                8,
                "tensor 'a'",
                "non-negative integers",
                "found -2");
        refusedFile("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8, "tensor 'a'", "found 2.0");
        refusedFile(
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8, "tensor 'a'", "found \"2\"");
        refusedFile(
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,8]}}",
                8,
                "tensor 'a'",
                "99999999999999999999");
        refusedFile("{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8, "tensor 'a'", "not a list");
    }

    @Test
    void shapeOverflowsTheElementCount() throws IOException {
        refusedFile(
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}",
                8,
                "tensor 'a'",
                "overflow");
        refusedFile(
                "{\"a\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,8]}}",
                8,
                "tensor 'a'",
                "overflow");
    }

    @Test
    void entryFieldsMustBeExactlyDtypeShapeAndOffsets() throws IOException {
        refusedFile("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 0, "tensor 'a'", "data_offsets");
        refusedFile(
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"stride\":[1]}}",
                8,
                "tensor 'a'",
                "'stride'");
        refusedFile("{\"a\":[1,2]}", 0, "tensor 'a'", "not an object", "found a list");
        refusedFile("{\"a\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor 'a'", "found 32");
    }

    @Test
    void metadataValuesMustBeStrings() throws IOException {
        refusedFile(
                "{\"__metadata__\":{\"format\":\"pt\",\"n\":3},\"a\":" + A + "}",
                8,
                "__metadata__",
                "key 'n'",
                "found 3");
        refusedFile("{\"__metadata__\":[\"pt\"],\"a\":" + A + "}", 8, "__metadata__", "found a list");
    }

    @Test
    void validEdgeCasesAreAccepted() throws IOException {
        // Padding with spaces, null metadata, empty tensors sharing an offset, a scalar, no tensors at all.
        String h = "{\"__metadata__\":null,\"e\":{\"dtype\":\"F16\",\"shape\":[0,3],\"data_offsets\":[0,0]},"
                + "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                + "\"z\":{\"dtype\":\"BF16\",\"shape\":[4,0],\"data_offsets\":[4,4]}}      ";
        try (SafetensorsCheckpoint c = SafetensorsReader.open(write("ok.safetensors", file(h, 4)))) {
            assertEquals(3, c.tensors().size());
            assertEquals("s", c.tensors().get(1).name());
            assertEquals(1, c.find("s").orElseThrow().numel());
        }
        try (SafetensorsCheckpoint c = SafetensorsReader.open(write("empty.safetensors", file("{}", 0)))) {
            assertEquals(0, c.tensors().size());
        }
    }

    // ---- sharded folders ----

    static final String IDX = "model.safetensors.index.json";

    Path sharded(String name, String index, String shard1Header, String shard2Header) throws IOException {
        Path m = dir.resolve(name);
        Files.createDirectories(m);
        Files.write(m.resolve("s1.safetensors"), file(shard1Header, 8));
        if (shard2Header != null) {
            Files.write(m.resolve("s2.safetensors"), file(shard2Header, 8));
        }
        Files.writeString(m.resolve(IDX), index);
        return m;
    }

    static String idx(String weightMap) {
        return "{\"metadata\":{\"total_size\":16},\"weight_map\":{" + weightMap + "}}";
    }

    @Test
    void wellFormedShardedFolderOpens() throws IOException {
        Path m = sharded(
                "ok",
                idx("\"a\":\"s1.safetensors\",\"b\":\"./s2.safetensors\""),
                "{\"a\":" + A + "}",
                "{\"b\":" + A + "}");
        try (SafetensorsCheckpoint c = SafetensorsReader.open(m)) {
            assertEquals(2, c.tensors().size());
            assertEquals("s2.safetensors", c.shardLayout().get("b"));
            assertEquals(16, c.totalSize().orElseThrow());
        }
    }

    @Test
    void missingShard() throws IOException {
        Path m = sharded(
                "missing",
                idx("\"a\":\"s1.safetensors\",\"b\":\"s3.safetensors\""),
                "{\"a\":" + A + "}",
                "{\"b\":" + A + "}");
        refused(m, IDX, "tensor 'b'", "s3.safetensors", "missing", "no such file");
    }

    @Test
    void shardPathEscapingTheFolder() throws IOException {
        Files.write(dir.resolve("outside.safetensors"), file("{\"b\":" + A + "}", 8));
        Path m = sharded(
                "escape", idx("\"a\":\"s1.safetensors\",\"b\":\"../outside.safetensors\""), "{\"a\":" + A + "}", null);
        refused(m, IDX, "tensor 'b'", "escapes", "'../outside.safetensors'");
        Path abs = sharded(
                "absolute",
                idx("\"a\":\"s1.safetensors\",\"b\":\"" + dir.resolve("outside.safetensors") + "\""),
                "{\"a\":" + A + "}",
                null);
        refused(abs, IDX, "tensor 'b'", "relative path");
    }

    @Test
    void tensorInIndexButNotInShard() throws IOException {
        Path m = sharded(
                "notinshard", idx("\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\""), "{\"a\":" + A + "}", null);
        refused(m, IDX, "tensor 'b'", "missing from its shard", "s1.safetensors");
    }

    @Test
    void tensorInShardButNotInIndex() throws IOException {
        Path m = sharded(
                "notinindex",
                idx("\"a\":\"s1.safetensors\""),
                "{\"a\":" + A + ",\"c\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,8]}}",
                null);
        refused(m, "s1.safetensors", "tensor 'c'", "not listed", IDX);
    }

    @Test
    void tensorInTwoShards() throws IOException {
        Path m = sharded(
                "twice",
                idx("\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\""),
                "{\"a\":" + A + "}",
                "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]},\"b\":" + A + "}");
        refused(m, "s2.safetensors", "tensor 'a'", "two shards", "'s1.safetensors' and 's2.safetensors'");
    }

    @Test
    void indexPlacesTensorInAnotherShard() throws IOException {
        Path m = sharded(
                "wrongshard",
                idx("\"a\":\"s2.safetensors\",\"b\":\"s1.safetensors\""),
                "{\"a\":" + A + "}",
                "{\"b\":" + A + "}");
        refused(m, "s1.safetensors", "tensor 'a'", "another shard", "found 's2.safetensors'");
    }

    @Test
    void badIndexes() throws IOException {
        refused(sharded("nomap", "{\"metadata\":{}}", "{\"a\":" + A + "}", null), IDX, "weight_map", "no such field");
        refused(
                sharded("dupmap", idx("\"a\":\"s1.safetensors\",\"a\":\"s1.safetensors\""), "{\"a\":" + A + "}", null),
                IDX,
                "tensor 'a'",
                "twice");
        refused(sharded("valmap", idx("\"a\":1"), "{\"a\":" + A + "}", null), IDX, "tensor 'a'", "found 1");
        refused(sharded("json", "{\"weight_map\":{\"a\":", "{\"a\":" + A + "}", null), IDX, "not valid JSON");
    }

    @Test
    void brokenShardHeaderNamesTheShard() throws IOException {
        Path m = sharded(
                "brokenshard",
                idx("\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\""),
                "{\"a\":" + A + "}",
                "{\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}");
        refused(m, "s2.safetensors", "tensor 'b'", "expected 12 bytes");
    }

    @Test
    void ambiguousFolders() throws IOException {
        Path m = sharded("twoindexes", idx("\"a\":\"s1.safetensors\""), "{\"a\":" + A + "}", null);
        Files.writeString(m.resolve("other.safetensors.index.json"), idx("\"a\":\"s1.safetensors\""));
        refused(m, "twoindexes", "exactly one", "other.safetensors.index.json");

        Path two = dir.resolve("twofiles");
        Files.createDirectories(two);
        Files.write(two.resolve("x.safetensors"), file("{}", 0));
        Files.write(two.resolve("y.safetensors"), file("{}", 0));
        refused(two, "twofiles", "several", "x.safetensors");

        Path none = dir.resolve("none");
        Files.createDirectories(none);
        refused(none, "none", "no safetensors");
        refused(dir.resolve("absent.safetensors"), "absent.safetensors", "no such file");
    }
}
