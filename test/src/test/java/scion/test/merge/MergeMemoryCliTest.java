package scion.test.merge;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.Model;
import scion.io.safetensors.SafetensorsWriter;
import scion.io.tensor.DType;
import scion.io.tensor.HalfPrecisionOps;
import scion.io.tensor.Tensor;
import scion.test.Fixtures;

/**
 * Merges whose largest tensor does not fit the heap, in a child JVM with {@code -Xmx256m}: three llama checkpoints
 * with a 1,048,576 × 64 bf16 embedding and head (256 MiB each in float32, so a whole-tensor merge of three needs
 * about 1 GiB). A block-wise method (linear) runs within the heap and its values are right; a whole-tensor method
 * (arcee_fusion) is refused before anything is written, in one line that names the tensor and the remedy, with exit code 6 (a resource the machine refused).
 */
class MergeMemoryCliTest {
    static final long VOCAB = 1 << 20;

    @TempDir
    static Path tmp;

    static List<Path> models = new ArrayList<>();

    @BeforeAll
    static void checkpoints() throws IOException {
        Path fixture = Fixtures.hf("llama");
        String config = Files.readString(fixture.resolve("config.json"))
                .replace("\"vocab_size\": 128", "\"vocab_size\": " + VOCAB);
        for (int m = 0; m < 3; m++) {
            Path dir = tmp.resolve("m" + m);
            try (Model src = Model.open(fixture);
                    SafetensorsWriter.Output o = SafetensorsWriter.create().open(dir)) {
                List<Tensor> tensors = new ArrayList<>();
                for (Tensor t : src.checkpoint().tensors()) {
                    boolean vocab = t.name().equals("model.embed_tokens.weight")
                            || t.name().equals("lm_head.weight");
                    tensors.add(vocab ? new Pattern(t.name(), new long[] {VOCAB, 64}, m) : t);
                }
                o.writeTensors(tensors);
                o.addFile("config.json", config.getBytes(StandardCharsets.UTF_8));
                o.commit();
            }
            models.add(dir);
        }
    }

    /** A bf16 tensor whose element i is {@link #value}(i, seed), produced as it is read. */
    record Pattern(String name, long[] shape, int seed) implements Tensor {
        static float value(long i, int seed) {
            return HalfPrecisionOps.bf16ToF32(
                    HalfPrecisionOps.f32ToBf16(((i * 2654435761L + seed * 97) % 1001 - 500) / 256f));
        }

        @Override
        public DType dtype() {
            return DType.BF16;
        }

        @Override
        public void readBytes(long byteOffset, ByteBuffer dst) {
            dst.order(ByteOrder.LITTLE_ENDIAN);
            for (long i = byteOffset / 2; dst.remaining() >= 2; i++) {
                dst.putShort(HalfPrecisionOps.f32ToBf16(value(i, seed)));
            }
        }
    }

    static Process run(List<String> args) throws IOException {
        List<String> cmd = new ArrayList<>(List.of(
                Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-Xmx256m",
                "-cp",
                System.getProperty("java.class.path"),
                "scion.cli.Scion"));
        cmd.addAll(args);
        return new ProcessBuilder(cmd).redirectErrorStream(false).start();
    }

    static String[] finish(Process p) throws Exception {
        assertTrue(p.waitFor(5, TimeUnit.MINUTES), "merge finished");
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        String err = new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
        return new String[] {Integer.toString(p.exitValue()), out, err};
    }

    @Test
    void blockwiseMergeRunsInASmallHeap() throws Exception {
        Path out = tmp.resolve("linear");
        List<String> args = new ArrayList<>(List.of("merge", "--method", "linear", "--threads", "2"));
        models.forEach(m -> args.add(m.toString()));
        args.add(out.toString());
        String[] r = finish(run(args));
        assertEquals("0", r[0], String.join("\n", r));
        try (Model merged = Model.open(out)) {
            Tensor e = merged.checkpoint().find("model.embed_tokens.weight").orElseThrow();
            float[] got = new float[4096];
            for (long start : new long[] {0, VOCAB * 64 / 2 + 13, VOCAB * 64 - got.length}) {
                e.readFloats(start, got, 0, got.length);
                for (int i = 0; i < got.length; i++) {
                    long k = start + i;
                    float mean = (Pattern.value(k, 0) + Pattern.value(k, 1) + Pattern.value(k, 2)) / 3f;
                    assertEquals(HalfPrecisionOps.f32ToBf16(mean), HalfPrecisionOps.f32ToBf16(got[i]), "element " + k);
                }
            }
        }
    }

    @Test
    void wholeTensorMergeIsRefusedBeforeWriting() throws Exception {
        Path out = tmp.resolve("arcee_fusion");
        List<String> args = new ArrayList<>(List.of(
                "merge", "--method", "arcee_fusion", "--base", models.get(0).toString()));
        args.add(models.get(1).toString());
        args.add(out.toString());
        String[] r = finish(run(args));
        assertEquals("6", r[0], String.join("\n", r));
        String err = r[2].strip();
        assertEquals(1, err.lines().count(), err);
        assertTrue(
                err.matches(
                        "scion: merge_method arcee_fusion: tensor '(model.embed_tokens|lm_head).weight' \\[1048576, 64\\]"
                                + " \\(merged whole\\): needs \\d+ MiB of memory at once; .*"
                                + " SCION_JAVA_OPTS=-Xmx\\dg"),
                err);
        assertFalse(err.contains("Exception") || err.contains("\tat "), err);
        assertFalse(Files.exists(out), "nothing written");
        try (var s = Files.list(tmp)) {
            assertTrue(s.noneMatch(p -> p.getFileName().toString().contains("staging")), "no staging left");
        }
    }
}
