package scion.test.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onnx.proto.OnnxMl;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.function.Consumer;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.Json;
import scion.test.Fixtures;

/**
 * Malformed inputs through the real command line: each gives exit code 3, one line on stderr naming the file (and
 * the tensor where there is one) with what was expected and what was found, and writes nothing.
 */
class MalformedInputCliTest {
    @TempDir
    static Path shared;

    static Path externalMiniLm;

    @BeforeAll
    static void externalDataCopy() {
        externalMiniLm = shared.resolve("ext/minilm.onnx");
        CliRun r = CliRun.of(
                "convert", Fixtures.miniLmOnnx().toString(), externalMiniLm.toString(), "--external-data", "on");
        assertEquals(0, r.code(), r.toString());
    }

    /** Runs convert on {@code in} and checks the failure contract; returns stderr. */
    static String fails(Path in, String... mustContain) {
        Path out = in.toAbsolutePath().getParent().resolveSibling("out-" + in.getFileName());
        CliRun r = CliRun.of("convert", in.toString(), out.toString());
        assertEquals(3, r.code(), r.toString());
        String err = r.err().strip();
        // One line per problem: the first says it all; further problems follow indented. Never a stack trace.
        String first = err.lines().findFirst().orElse("");
        assertTrue(
                err.lines()
                        .skip(1)
                        .allMatch(l -> l.startsWith("  ") && !l.strip().startsWith("at ")),
                err);
        assertTrue(first.startsWith("scion: "), err);
        assertTrue(first.contains("expected") && first.contains("found"), err);
        for (String s : mustContain) {
            assertTrue(err.contains(s), "'" + s + "' in: " + err);
        }
        assertFalse(Files.exists(out), "nothing written");
        try (Stream<Path> s = Files.list(out.getParent())) {
            assertTrue(s.noneMatch(p -> p.getFileName().toString().contains("scion-staging")), "no staging left");
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        CliRun inspect = CliRun.of("inspect", in.toString());
        assertEquals(3, inspect.code(), "inspect fails the same way: " + inspect);
        return err;
    }

    /** A copy of a HF fixture folder. */
    static Path copy(String family, Path dir) throws IOException {
        Path d = dir.resolve(family + "-copy");
        Files.createDirectories(d);
        try (Stream<Path> s = Files.list(Fixtures.hf(family))) {
            for (Path p : (Iterable<Path>) s::iterator) {
                Files.copy(p, d.resolve(p.getFileName()));
            }
        }
        return d;
    }

    /** Rewrites the JSON header of a safetensors file (keeping the data bytes). */
    static void editHeader(Path file, Consumer<ObjectNode> edit) throws IOException {
        byte[] all = Files.readAllBytes(file);
        long n = ByteBuffer.wrap(all, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        ObjectNode h = (ObjectNode) Json.mapper().readTree(new String(all, 8, (int) n, StandardCharsets.UTF_8));
        edit.accept(h);
        byte[] json = h.toString().getBytes(StandardCharsets.UTF_8);
        ByteBuffer out =
                ByteBuffer.allocate(8 + json.length + all.length - 8 - (int) n).order(ByteOrder.LITTLE_ENDIAN);
        out.putLong(json.length).put(json).put(all, 8 + (int) n, all.length - 8 - (int) n);
        Files.write(file, out.array());
    }

    static ObjectNode entry(ObjectNode header, String name) {
        return (ObjectNode) header.get(name);
    }

    static final String Q0 = "model.layers.0.self_attn.q_proj.weight";

    @Test
    void truncatedFile(@TempDir Path dir) throws IOException {
        Path d = copy("llama", dir);
        Path f = d.resolve("model.safetensors");
        byte[] b = Files.readAllBytes(f);
        Files.write(f, Arrays.copyOf(b, b.length / 2));
        fails(d, "model.safetensors", "expected", "found");
    }

    @Test
    void headerLongerThanTheFile(@TempDir Path dir) throws IOException {
        Path d = copy("llama", dir);
        Path f = d.resolve("model.safetensors");
        byte[] b = Files.readAllBytes(f);
        ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).putLong(0, b.length);
        Files.write(f, b);
        fails(d, "model.safetensors", "header");
    }

    @Test
    void overlappingOffsets(@TempDir Path dir) throws IOException {
        Path d = copy("llama", dir);
        editHeader(d.resolve("model.safetensors"), h -> {
            ArrayNode o = (ArrayNode) entry(h, Q0).get("data_offsets");
            long begin = o.get(0).asLong();
            o.set(0, begin - 8);
            o.set(1, o.get(1).asLong() - 8);
        });
        fails(d, "model.safetensors");
    }

    @Test
    void unknownDtype(@TempDir Path dir) throws IOException {
        Path d = copy("llama", dir);
        editHeader(d.resolve("model.safetensors"), h -> entry(h, Q0).put("dtype", "F12"));
        fails(d, "model.safetensors", Q0, "F12");
    }

    @Test
    void shapeDoesNotMatchByteLength(@TempDir Path dir) throws IOException {
        Path d = copy("llama", dir);
        editHeader(
                d.resolve("model.safetensors"), h -> ((ArrayNode) entry(h, Q0).get("shape")).set(0, 65));
        fails(d, "model.safetensors", Q0);
    }

    @Test
    void offsetsBeyondTheBuffer(@TempDir Path dir) throws IOException {
        Path d = copy("llama", dir);
        editHeader(d.resolve("model.safetensors"), h -> {
            ArrayNode o = (ArrayNode) entry(h, "lm_head.weight").get("data_offsets");
            o.set(0, o.get(0).asLong() + 1_000_000);
            o.set(1, o.get(1).asLong() + 1_000_000);
        });
        fails(d, "model.safetensors", "lm_head.weight");
    }

    @Test
    void missingShard(@TempDir Path dir) throws IOException {
        Path d = copy("llama-sharded", dir);
        Files.delete(d.resolve("model-00002-of-00004.safetensors"));
        fails(d, "model-00002-of-00004.safetensors");
    }

    @Test
    void shardPathEscapingTheFolder(@TempDir Path dir) throws IOException {
        Path d = copy("llama-sharded", dir);
        Path index = d.resolve("model.safetensors.index.json");
        ObjectNode idx = (ObjectNode) Json.mapper().readTree(index.toFile());
        ((ObjectNode) idx.get("weight_map")).put(Q0, "../model-00001-of-00004.safetensors");
        Files.writeString(index, idx.toString());
        fails(d, "model.safetensors.index.json", Q0, "../model-00001-of-00004.safetensors");
    }

    @Test
    void configContradictsATensorShape(@TempDir Path dir) throws IOException {
        Path d = copy("llama", dir);
        Path cfg = d.resolve("config.json");
        ObjectNode c = (ObjectNode) Json.mapper().readTree(cfg.toFile());
        c.put("intermediate_size", 96);
        Files.writeString(cfg, c.toString());
        fails(
                d,
                "6 problems",
                "model.safetensors: tensor 'model.layers.0.mlp.gate_proj.weight' does not match",
                "expected [96, 64] (ffn × residual), found [128, 64]");
    }

    @Test
    void unknownArchitectureListsTheKnownOnes(@TempDir Path dir) throws IOException {
        Path d = copy("llama", dir);
        Path cfg = d.resolve("config.json");
        ObjectNode c = (ObjectNode) Json.mapper().readTree(cfg.toFile());
        c.put("model_type", "mamba");
        Files.writeString(cfg, c.toString());
        fails(d, "config.json", "unsupported architecture", "llama, mistral", "'mamba'");
    }

    @Test
    void missingTensor(@TempDir Path dir) throws IOException {
        Path d = copy("llama", dir);
        Path cfg = d.resolve("config.json");
        ObjectNode c = (ObjectNode) Json.mapper().readTree(cfg.toFile());
        c.put("num_hidden_layers", 3);
        Files.writeString(cfg, c.toString());
        fails(d, "9 problems", "missing tensor 'model.layers.2.input_layernorm.weight'");
    }

    @Test
    void configIsNotJson(@TempDir Path dir) throws IOException {
        Path d = copy("gpt2", dir);
        Files.writeString(d.resolve("config.json"), "{\"model_type\": \"gpt2\",");
        fails(d, "config.json", "not valid JSON");
    }

    @Test
    void noConfigBesideTheWeights(@TempDir Path dir) throws IOException {
        Path d = copy("gpt2", dir);
        Files.delete(d.resolve("config.json"));
        fails(d, "no config.json");
    }

    @Test
    void externalDataEscapingTheFolder(@TempDir Path dir) throws IOException {
        Path f = editOnnx(dir, t -> setLocation(t, "../minilm.onnx.data"));
        fails(f, "minilm.onnx", "../minilm.onnx.data");
    }

    @Test
    void externalDataFileMissing(@TempDir Path dir) throws IOException {
        Path f = editOnnx(dir, t -> setLocation(t, "nowhere.data"));
        fails(f, "minilm.onnx", "nowhere.data");
    }

    @Test
    void externalDataShorterThanTheTensor(@TempDir Path dir) throws IOException {
        Path f = editOnnx(dir, t -> t);
        Path data = f.resolveSibling("minilm.onnx.data");
        Files.write(data, Arrays.copyOf(Files.readAllBytes(data), 1000));
        fails(f, "minilm.onnx");
    }

    @Test
    void truncatedOnnxFile(@TempDir Path dir) throws IOException {
        Path f = dir.resolve("m/cut.onnx");
        Files.createDirectories(f.getParent());
        byte[] b = Files.readAllBytes(Fixtures.miniLmOnnx());
        Files.write(f, Arrays.copyOf(b, b.length - 5000));
        fails(f, "cut.onnx");
    }

    @Test
    void notAnOnnxFile(@TempDir Path dir) throws IOException {
        Path f = dir.resolve("m/text.onnx");
        Files.createDirectories(f.getParent());
        Files.writeString(f, "this is not a protobuf, it is a sentence long enough to be parsed as garbage");
        fails(f, "text.onnx");
    }

    @Test
    void badParametersAreNamed(@TempDir Path dir) {
        CliRun r = CliRun.of(
                "convert", Fixtures.hf("llama").toString(), dir.resolve("o").toString(), "--dtype", "f8");
        assertEquals(3, r.code(), r.toString());
        assertTrue(r.err().contains("--dtype"), r.err());
        r = CliRun.of(
                "convert", Fixtures.hf("llama").toString(), dir.resolve("o").toString(), "--shard-size", "lots");
        assertEquals(3, r.code(), r.toString());
        assertTrue(r.err().contains("--shard-size: not a size"), r.err());
        assertFalse(Files.exists(dir.resolve("o")));
        r = CliRun.of(
                "convert", dir.resolve("absent").toString(), dir.resolve("o").toString());
        assertEquals(3, r.code(), r.toString());
        assertTrue(r.err().contains("no such file or folder"), r.err());
        r = CliRun.of("convert", Fixtures.hf("llama").toString());
        assertEquals(2, r.code(), "usage error: " + r);
    }

    /** A copy of the external-data MiniLM with its first large initializer's entries edited. */
    static Path editOnnx(Path dir, java.util.function.UnaryOperator<OnnxMl.TensorProto.Builder> edit)
            throws IOException {
        Path d = dir.resolve("m");
        Files.createDirectories(d);
        Path data = externalMiniLm.resolveSibling("minilm.onnx.data");
        Files.copy(data, d.resolve("minilm.onnx.data"));
        OnnxMl.ModelProto.Builder m = OnnxMl.ModelProto.parseFrom(Files.readAllBytes(externalMiniLm)).toBuilder();
        OnnxMl.GraphProto.Builder g = m.getGraphBuilder();
        for (int i = 0; i < g.getInitializerCount(); i++) {
            if (g.getInitializer(i).getExternalDataCount() > 0) {
                g.setInitializer(i, edit.apply(g.getInitializer(i).toBuilder()));
                break;
            }
        }
        Path f = d.resolve("minilm.onnx");
        Files.write(f, m.build().toByteArray());
        return f;
    }

    static OnnxMl.TensorProto.Builder setLocation(OnnxMl.TensorProto.Builder t, String location) {
        for (int i = 0; i < t.getExternalDataCount(); i++) {
            if (t.getExternalData(i).getKey().equals("location")) {
                t.setExternalData(i, t.getExternalData(i).toBuilder().setValue(location));
            }
        }
        return t;
    }
}
