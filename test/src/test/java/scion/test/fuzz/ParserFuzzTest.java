package scion.test.fuzz;

import com.code_intelligence.jazzer.junit.FuzzTest;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import scion.io.Checkpoint;
import scion.io.InvalidInputException;
import scion.io.config.ModelConfig;
import scion.io.onnx.OnnxReader;
import scion.io.safetensors.SafetensorsReader;
import scion.io.tensor.Tensor;
import scion.merge.MergeConfig;

/**
 * Fuzz targets for Scion's parsers. Each feeds raw bytes to one parser; {@link InvalidInputException} is the only
 * acceptable failure, anything else (another exception, a hang, an allocation a lying header drives) is a bug.
 *
 * <p>Plain {@code mvn verify} replays the committed corpus under {@code ParserFuzzTestInputs/<method>/} (test
 * resources, same package); {@code JAZZER_FUZZ=1} fuzzes one method (see {@code test/bench/fuzz.sh}).
 */
class ParserFuzzTest {
    /** Valid tensor data is read only up to this many elements per tensor, so a fuzz run stays fast. */
    private static final int READ_LIMIT = 64;

    @FuzzTest(maxDuration = "3m")
    void safetensorsFile(byte[] bytes) throws IOException {
        Path file = folder("safetensorsFile").resolve("model.safetensors");
        Files.write(file, bytes);
        expectOnlyInvalidInput(() -> readAll(SafetensorsReader.open(file)));
    }

    /** The bytes are a {@code model.safetensors.index.json} beside two valid one-tensor shards. */
    @FuzzTest(maxDuration = "3m")
    void safetensorsIndex(byte[] bytes) throws IOException {
        Path dir = folder("safetensorsIndex");
        Path one = dir.resolve("model-00001-of-00002.safetensors");
        if (!Files.exists(one)) {
            Files.write(one, shard("a"));
            Files.write(dir.resolve("model-00002-of-00002.safetensors"), shard("b"));
        }
        Path index = dir.resolve("model.safetensors.index.json");
        Files.write(index, bytes);
        expectOnlyInvalidInput(() -> readAll(SafetensorsReader.open(index)));
    }

    /** config.json: parsed, then every known field read the way the operators read it. */
    @FuzzTest(maxDuration = "3m")
    void configJson(byte[] bytes) throws IOException {
        Path file = folder("configJson").resolve("config.json");
        Files.write(file, bytes);
        expectOnlyInvalidInput(() -> {
            ModelConfig c = ModelConfig.read(file);
            for (ModelConfig.Field f : ModelConfig.Field.values()) {
                c.integer(f);
                c.number(f);
                c.bool(f);
                c.string(f);
            }
            ModelConfig.parse(c.toJson(), "round trip");
        });
    }

    /** A merge YAML (one document) given as text. */
    @FuzzTest(maxDuration = "3m")
    void mergeYaml(byte[] bytes) throws IOException {
        Path file = folder("mergeYaml").resolve("merge.yaml");
        Files.write(file, bytes);
        expectOnlyInvalidInput(() -> MergeConfig.read(file).references());
    }

    /** An ONNX model whose external-data references point at a valid 64-byte {@code model.onnx.data}. */
    @FuzzTest(maxDuration = "3m")
    void onnxModel(byte[] bytes) throws IOException {
        Path dir = folder("onnxModel");
        Path file = dir.resolve("model.onnx");
        Path data = dir.resolve("model.onnx.data");
        if (!Files.exists(data)) {
            Files.write(data, new byte[64]);
        }
        Files.write(file, bytes);
        expectOnlyInvalidInput(() -> readAll(OnnxReader.open(file)));
    }

    private static void readAll(Checkpoint c) {
        try (c) {
            c.metadata();
            c.dataFiles();
            for (Tensor t : c.tensors()) {
                int n = (int) Math.min(READ_LIMIT, t.numel());
                t.readFloats(0, new float[n], 0, n);
                t.describe();
            }
        }
    }

    private static void expectOnlyInvalidInput(Runnable parse) {
        try {
            parse.run();
        } catch (InvalidInputException expected) {
            String m = expected.getMessage();
            if (m == null || m.isBlank() || m.contains("\n")) {
                throw new AssertionError("an invalid-input message must be one non-empty line: " + m, expected);
            }
        }
    }

    /** A one-tensor safetensors file: {@code name} is an F32 [2] tensor. */
    static byte[] shard(String name) {
        String header = "{\"" + name + "\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
        byte[] h = header.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(8 + h.length + 8).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        b.putLong(h.length).put(h).putFloat(1f).putFloat(2f);
        return b.array();
    }

    private static Path root;

    /** One folder per target, reused by every input of a run (creating one per input halves the rate). */
    private static synchronized Path folder(String target) throws IOException {
        if (root == null) {
            root = Files.createTempDirectory("scion-fuzz");
            Runtime.getRuntime().addShutdownHook(new Thread(() -> delete(root)));
        }
        return Files.createDirectories(root.resolve(target));
    }

    private static void delete(Path dir) {
        try (var s = Files.walk(dir)) {
            s.sorted(java.util.Comparator.reverseOrder()).forEach(p -> {
                try {
                    Files.delete(p);
                } catch (IOException e) {
                    throw new UncheckedIOException(e);
                }
            });
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
