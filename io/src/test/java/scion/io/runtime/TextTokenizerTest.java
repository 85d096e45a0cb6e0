package scion.io.runtime;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.InvalidInputException;

class TextTokenizerTest {

    @Test
    void byteFallbackMapsAsciiForA128Vocabulary(@TempDir Path dir) {
        try (TextTokenizer t = TextTokenizer.forModel(dir.resolve("m.onnx"), null, 128)) {
            assertEquals(TextTokenizer.Kind.BYTES, t.kind());
            assertArrayEquals(new long[] {72, 105, 33, 10}, t.encode("Hi!\n"));
            assertArrayEquals(new long[] {72}, t.wrap(new long[] {72}), "bytes add no special tokens");
        }
    }

    @Test
    void byteFallbackRefusesBytesOutsideTheVocabulary() {
        try (TextTokenizer t = TextTokenizer.bytes(128)) {
            InvalidInputException e = assertThrows(InvalidInputException.class, () -> t.encode("café", "notes.txt"));
            assertEquals(
                    "notes.txt: byte 195 at offset 3 has no token in a 128-token byte vocabulary; expected bytes below"
                            + " 128 (ASCII text), found byte 195; hint: --random-tokens N, or a tokenizer.json beside"
                            + " the model",
                    e.getMessage());
        }
        try (TextTokenizer t = TextTokenizer.bytes(256)) {
            assertArrayEquals(new long[] {99, 97, 102, 0xC3, 0xA9}, t.encode("café"));
        }
    }

    @Test
    void aLargeVocabularyWithoutTokenizerIsRefused(@TempDir Path dir) {
        InvalidInputException e = assertThrows(
                InvalidInputException.class, () -> TextTokenizer.forModel(dir.resolve("m.onnx"), null, 32000));
        assertTrue(e.getMessage().contains("no tokenizer.json beside the model"), e.getMessage());
        assertTrue(e.getMessage().contains("hint: --tokenizer FILE, or --random-tokens N"), e.getMessage());
    }

    /** MiniLM's tokenizer from the langchain4j jar, found as {@code <name>-tokenizer.json} beside the model. */
    @Test
    void miniLmTokenizerIsFoundBesideTheModelAndWrapsClsSep(@TempDir Path dir) throws Exception {
        Path model = dir.resolve("all-minilm-l6-v2.onnx");
        Files.writeString(model, "not read");
        try (InputStream in = TextTokenizerTest.class.getResourceAsStream("/all-minilm-l6-v2-tokenizer.json")) {
            Files.copy(in, dir.resolve("all-minilm-l6-v2-tokenizer.json"));
        }
        assertEquals(
                dir.resolve("all-minilm-l6-v2-tokenizer.json"),
                TextTokenizer.findTokenizerJson(model).get());
        try (TextTokenizer t = TextTokenizer.forModel(model, null, 30522)) {
            assertEquals(TextTokenizer.Kind.HUGGING_FACE, t.kind());
            long[] ids = t.encode("Hello world, this is a test.");
            // bert-base-uncased ids, as in ConvertCliTest's fixed input: hello world , this is a test .
            assertArrayEquals(new long[] {7592, 2088, 1010, 2023, 2003, 1037, 3231, 1012}, ids);
            assertArrayEquals(new long[] {101, 7592, 102}, t.wrap(new long[] {7592}));
            assertEquals(2, t.specialCount());
            // no truncation at the tokenizer.json's 128 and no padding: sequences are cut by TokenInputs
            assertEquals(1000, t.encode("word ".repeat(1000)).length);

            TokenInputs in = TokenInputs.fromText("One bridge. Two bridges!", "t.txt", t, false, 128, 64);
            assertEquals(2, in.sequences().size());
            assertArrayEquals(
                    new long[] {101, 2028, 2958, 1012, 102},
                    in.sequences().get(0).ids());
        }
        try (TextTokenizer t = TextTokenizer.forModel(model, null, 1000)) {
            InvalidInputException e = assertThrows(InvalidInputException.class, () -> t.encode("hello"));
            assertTrue(e.getMessage().contains("outside the model's vocabulary"), e.getMessage());
        }
    }

    @Test
    void aFolderLooksForTokenizerJson(@TempDir Path dir) throws Exception {
        Files.writeString(dir.resolve("tokenizer.json"), "{}");
        assertEquals(
                List.of(dir.resolve("tokenizer.json")),
                TextTokenizer.findTokenizerJson(dir).stream().toList());
        Files.writeString(dir.resolve("bad.json"), "not json");
        assertThrows(InvalidInputException.class, () -> TextTokenizer.huggingFace(dir.resolve("bad.json"), 10));
    }
}
