package scion.io.safetensors;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Random;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import java.util.zip.CRC32C;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.safetensors.bench.GeneratedTensor;
import scion.io.tensor.BufferTensor;
import scion.io.tensor.DType;
import scion.io.tensor.FileRegion;
import scion.io.tensor.HalfPrecisionOps;
import scion.io.tensor.MappedTensor;
import scion.io.tensor.Tensor;

/** Writer → reader round trips: bit-exact bytes, header layout, sharding, re-typing, determinism, zero-copy. */
class SafetensorsRoundTripTest {
    @TempDir
    Path dir;

    static final DType[] WRITABLE = {
        DType.F64, DType.F32, DType.F16, DType.BF16, DType.I64, DType.I32, DType.I16, DType.I8, DType.U8, DType.BOOL
    };

    static BufferTensor random(String name, DType dtype, long[] shape, long seed) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        byte[] b = new byte[Math.toIntExact(n * dtype.size())];
        Random r = new Random(seed);
        r.nextBytes(b);
        if (dtype == DType.BOOL) {
            for (int i = 0; i < b.length; i++) {
                b[i] &= 1;
            }
        }
        return new BufferTensor(name, dtype, shape, ByteBuffer.wrap(b));
    }

    static byte[] bytesOf(Tensor t) {
        ByteBuffer b = ByteBuffer.allocate(Math.toIntExact(t.byteSize()));
        t.readBytes(0, b);
        assertFalse(b.hasRemaining(), "tensor " + t.name() + " yields all its bytes");
        return b.array();
    }

    /** Several tensors of every writable dtype, including a scalar and empty tensors. */
    static List<Tensor> sample() {
        List<Tensor> ts = new ArrayList<>();
        long seed = 1;
        for (DType d : WRITABLE) {
            String n = d.shortName();
            ts.add(random("m." + n + ".matrix", d, new long[] {3, 5}, seed++));
            ts.add(random("m." + n + ".scalar", d, new long[] {}, seed++));
            ts.add(random("m." + n + ".empty", d, new long[] {0, 4}, seed++));
            ts.add(random("m." + n + ".vector", d, new long[] {7}, seed++));
        }
        return ts;
    }

    static void assertSameTensors(List<Tensor> expected, List<Tensor> actual) {
        assertEquals(names(expected), names(actual));
        for (int i = 0; i < expected.size(); i++) {
            Tensor e = expected.get(i);
            Tensor a = actual.get(i);
            assertEquals(e.dtype(), a.dtype(), e.name());
            assertArrayEquals(e.shape(), a.shape(), e.name());
            assertArrayEquals(bytesOf(e), bytesOf(a), e.name());
            assertTrue(a instanceof MappedTensor, "reader yields mapped tensors");
        }
    }

    static List<String> names(List<Tensor> ts) {
        return ts.stream().map(Tensor::name).collect(Collectors.toList());
    }

    @Test
    void singleFileRoundTripIsBitExactForEveryWritableDtype() {
        List<Tensor> ts = sample();
        Map<String, String> meta = Map.of("format", "pt", "scion.operator", "test ✓");
        Path file = dir.resolve("out.safetensors");
        List<Path> written = SafetensorsWriter.create().metadata(meta).write(file, ts);
        assertEquals(List.of(file.toAbsolutePath().normalize()), written);
        try (SafetensorsCheckpoint c = SafetensorsReader.open(file)) {
            assertSameTensors(ts, c.tensors());
            assertEquals(meta, c.metadata());
            assertFalse(c.isSharded());
            assertEquals(List.of(file), c.dataFiles());
            assertEquals(DType.BF16, c.find("m.bf16.scalar").orElseThrow().dtype());
            assertEquals(Optional.empty(), c.find("nope"));
            assertEquals(0, c.find("m.f32.empty").orElseThrow().byteSize());
        }
    }

    @Test
    void headerIsCompactInGivenOrderMetadataFirstAndPaddedToEightBytes() throws IOException {
        List<Tensor> ts = List.of(
                BufferTensor.ofFloats("b", new long[] {2}, new float[] {1f, 2f}),
                BufferTensor.ofFloats("a", new long[] {}, new float[] {3f}));
        Path file = dir.resolve("h.safetensors");
        SafetensorsWriter.create().metadata(Map.of("z", "1", "format", "pt")).write(file, ts);
        byte[] all = Files.readAllBytes(file);
        ByteBuffer b = ByteBuffer.wrap(all).order(ByteOrder.LITTLE_ENDIAN);
        long n = b.getLong();
        assertEquals(0, n % 8, "data is 8-byte aligned");
        String header = new String(all, 8, (int) n, StandardCharsets.UTF_8);
        String json = "{\"__metadata__\":{\"format\":\"pt\",\"z\":\"1\"},"
                + "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                + "\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[8,12]}}";
        assertEquals(json, header.stripTrailing());
        assertTrue(header.length() - json.length() < 8
                && header.substring(json.length()).isBlank());
        assertEquals(8 + n + 12, all.length);
        assertEquals(1f, b.position(8 + (int) n).getFloat());
    }

    @Test
    void shardedRoundTripFollowsHuggingFaceLayout() throws IOException {
        List<Tensor> ts = sample();
        Path out = dir.resolve("model");
        // 64-byte budget: many shards; the 15-element F64/I64 matrices (120 bytes) exceed it and stand alone.
        AtomicLong progress = new AtomicLong();
        List<Path> written = SafetensorsWriter.create()
                .shardSize(64)
                .metadata(Map.of("format", "pt"))
                .progress(progress::addAndGet)
                .write(out, ts);
        long total = ts.stream().mapToLong(Tensor::byteSize).sum();
        assertEquals(total, progress.get(), "progress deltas add up to the tensor bytes");

        List<List<Tensor>> plan = SafetensorsWriter.planShards(ts, 64);
        int count = plan.size();
        assertTrue(count > 5, "many shards: " + count);
        for (List<Tensor> shard : plan) {
            long bytes = shard.stream().mapToLong(Tensor::byteSize).sum();
            assertTrue(bytes <= 64 || shard.size() == 1, "budget kept or a lone oversized tensor");
        }
        assertEquals(count + 1, written.size());
        for (int i = 1; i <= count; i++) {
            assertTrue(Files.isRegularFile(out.resolve(String.format("model-%05d-of-%05d.safetensors", i, count))));
        }
        try (Stream<Path> s = Files.list(out)) {
            assertEquals(count + 1, s.count(), "only shards and the index");
        }
        String index = Files.readString(out.resolve("model.safetensors.index.json"));
        assertTrue(index.startsWith("{\n  \"metadata\": {\n    \"total_size\": " + total + "\n  },\n"), index);

        try (SafetensorsCheckpoint c = SafetensorsReader.open(out)) {
            assertTrue(c.isSharded());
            assertSameTensors(ts, c.tensors());
            assertEquals(count, c.dataFiles().size());
            assertEquals(total, c.totalSize().orElseThrow());
            assertEquals(Long.toString(total), c.indexMetadata().get("total_size"));
            assertEquals(Map.of("format", "pt"), c.metadata());
            Map<String, String> layout = c.shardLayout();
            int i = 1;
            for (List<Tensor> shard : plan) {
                for (Tensor t : shard) {
                    assertEquals(SafetensorsWriter.shardFileName(i, count), layout.get(t.name()));
                    assertEquals(
                            out.resolve(layout.get(t.name())),
                            c.shardOf(t.name()).orElseThrow().path());
                }
                i++;
            }
        }
        // The index file itself opens the same checkpoint.
        try (SafetensorsCheckpoint c = SafetensorsReader.open(out.resolve("model.safetensors.index.json"))) {
            assertEquals(ts.size(), c.tensors().size());
        }
    }

    @Test
    void folderWithinBudgetGetsOneModelSafetensorsAndNoIndex() throws IOException {
        List<Tensor> ts = sample();
        Path out = dir.resolve("small");
        SafetensorsWriter.create().shardSize(1 << 20).write(out, ts);
        try (Stream<Path> s = Files.list(out)) {
            assertEquals(
                    List.of("model.safetensors"),
                    s.map(p -> p.getFileName().toString()).collect(Collectors.toList()));
        }
        try (SafetensorsCheckpoint c = SafetensorsReader.open(out)) {
            assertSameTensors(ts, c.tensors());
            assertEquals(Map.of(), c.indexMetadata());
        }
    }

    @Test
    void planShardsKeepsOrderAndIsolatesOversizedTensors() {
        List<Tensor> ts = List.of(
                random("a", DType.U8, new long[] {40}, 1),
                random("b", DType.U8, new long[] {40}, 2),
                random("big", DType.U8, new long[] {300}, 3),
                random("c", DType.U8, new long[] {100}, 4),
                random("d", DType.U8, new long[] {0}, 5));
        List<List<String>> plan = SafetensorsWriter.planShards(ts, 100).stream()
                .map(SafetensorsRoundTripTest::names)
                .collect(Collectors.toList());
        assertEquals(List.of(List.of("a", "b"), List.of("big"), List.of("c", "d")), plan);
        assertEquals(List.of(List.of()), SafetensorsWriter.planShards(List.of(), 100));
    }

    @Test
    void retypingThroughAsRoundsLikeHalfPrecisionOps() {
        float[] values = new float[4099];
        Random r = new Random(42);
        for (int i = 0; i < values.length; i++) {
            values[i] = (float) (r.nextGaussian() * Math.pow(2, r.nextInt(40) - 20));
        }
        // Edge values: ties, overflow, subnormals, signed zero, infinity, NaN.
        float[] edges = {
            0f, -0f, 65504f, 65520f, 1e-8f, 6.1e-5f, Float.POSITIVE_INFINITY, Float.NaN, 1.0009765625f, 3.4e38f
        };
        System.arraycopy(edges, 0, values, 0, edges.length);
        Tensor src = BufferTensor.ofFloats("w", new long[] {values.length}, values);
        Path file = dir.resolve("half.safetensors");
        SafetensorsWriter.create().write(file, List.of(src.as(DType.F16), rename(src.as(DType.BF16), "w_bf16")));
        try (SafetensorsCheckpoint c = SafetensorsReader.open(file)) {
            ByteBuffer f16 = ByteBuffer.wrap(bytesOf(c.find("w").orElseThrow())).order(ByteOrder.LITTLE_ENDIAN);
            ByteBuffer bf16 =
                    ByteBuffer.wrap(bytesOf(c.find("w_bf16").orElseThrow())).order(ByteOrder.LITTLE_ENDIAN);
            for (int i = 0; i < values.length; i++) {
                assertEquals(HalfPrecisionOps.f32ToF16(values[i]), f16.getShort(), "f16 element " + i);
                assertEquals(HalfPrecisionOps.f32ToBf16(values[i]), bf16.getShort(), "bf16 element " + i);
            }
            float[] back = c.find("w").orElseThrow().toFloats();
            assertEquals(HalfPrecisionOps.f16ToF32(HalfPrecisionOps.f32ToF16(values[100]) & 0xffff), back[100]);
        }
    }

    static Tensor rename(Tensor t, String name) {
        return new Tensor() {
            @Override
            public String name() {
                return name;
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
                t.readBytes(byteOffset, dst);
            }

            @Override
            public Optional<FileRegion> fileRegion() {
                return t.fileRegion();
            }
        };
    }

    @Test
    void sameInputsGiveSameBytes() throws IOException {
        List<Tensor> ts = sample();
        Map<String, String> meta = new LinkedHashMap<>();
        meta.put("b", "2");
        meta.put("a", "1");
        Map<String, String> metaReversed = new LinkedHashMap<>();
        metaReversed.put("a", "1");
        metaReversed.put("b", "2");
        Path one = dir.resolve("one");
        Path two = dir.resolve("two");
        SafetensorsWriter.create().shardSize(100).metadata(meta).write(one, ts);
        SafetensorsWriter.create().shardSize(100).metadata(metaReversed).write(two, ts);
        List<String> files;
        try (Stream<Path> s = Files.list(one)) {
            files = s.map(p -> p.getFileName().toString()).sorted().collect(Collectors.toList());
        }
        assertTrue(files.size() > 2);
        for (String f : files) {
            assertArrayEquals(Files.readAllBytes(one.resolve(f)), Files.readAllBytes(two.resolve(f)), f);
        }
        Path a = dir.resolve("a.safetensors");
        Path b = dir.resolve("b.safetensors");
        SafetensorsWriter.create().metadata(meta).write(a, ts);
        SafetensorsWriter.create().metadata(meta).write(b, ts);
        assertArrayEquals(Files.readAllBytes(a), Files.readAllBytes(b));
    }

    @Test
    void rewritingMappedTensorsUsesTheirFileRegionAndIsByteIdentical() throws IOException {
        List<Tensor> ts = sample();
        Path first = dir.resolve("first.safetensors");
        SafetensorsWriter.create().metadata(Map.of("format", "pt")).write(first, ts);
        Path second = dir.resolve("second.safetensors");
        try (SafetensorsCheckpoint c = SafetensorsReader.open(first)) {
            // Tensors whose readBytes fails: only the zero-copy transfer from the file region can write them.
            List<Tensor> regionOnly = new ArrayList<>();
            for (Tensor t : c.tensors()) {
                regionOnly.add(new Tensor() {
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
                        throw new AssertionError("zero-copy path expected for " + t.name());
                    }

                    @Override
                    public Optional<FileRegion> fileRegion() {
                        return t.fileRegion();
                    }
                });
            }
            SafetensorsWriter.create().metadata(c.metadata()).write(second, regionOnly);
        }
        assertArrayEquals(Files.readAllBytes(first), Files.readAllBytes(second));
    }

    @Test
    void streamsLargeGeneratedTensorsAcrossChunkBoundaries() {
        // 9 MiB + 6 bytes: crosses the writer's 4 MiB chunks and ends mid-chunk.
        List<Tensor> ts = List.of(
                new GeneratedTensor("g.f16", DType.F16, new long[] {3, 1572865}, 7),
                new GeneratedTensor("g.i8", DType.I8, new long[] {1001}, 8));
        Path out = dir.resolve("gen");
        SafetensorsWriter.create().shardSize(5 << 20).write(out, ts);
        try (SafetensorsCheckpoint c = SafetensorsReader.open(out)) {
            for (Tensor t : ts) {
                assertEquals(crc(t), crc(c.find(t.name()).orElseThrow()), t.name());
            }
            float[] f = new float[5];
            c.find("g.f16").orElseThrow().readFloats(3_000_000, f, 0, 5);
            GeneratedTensor g = (GeneratedTensor) ts.get(0);
            for (int i = 0; i < 5; i++) {
                assertEquals(HalfPrecisionOps.f16ToF32((int) g.bits(3_000_000 + i)), f[i]);
            }
        }
    }

    static long crc(Tensor t) {
        CRC32C crc = new CRC32C();
        ByteBuffer b = ByteBuffer.allocate(1 << 20);
        long pos = 0;
        while (pos < t.byteSize()) {
            b.clear().limit((int) Math.min(b.capacity(), t.byteSize() - pos));
            t.readBytes(pos, b);
            b.flip();
            pos += b.remaining();
            crc.update(b);
        }
        return crc.getValue();
    }

    @Test
    void outputFolderTakesExtraFiles() throws IOException {
        Path config = dir.resolve("config.json");
        Files.writeString(config, "{\"model_type\":\"llama\"}");
        Path out = dir.resolve("with-config");
        SafetensorsWriter writer = SafetensorsWriter.create();
        try (SafetensorsWriter.Output o = writer.open(out)) {
            assertTrue(o.isFolder());
            o.copyFile(config);
            o.addFile("tokenizer/tokenizer.json", "{}".getBytes(StandardCharsets.UTF_8));
            assertThrows(IllegalArgumentException.class, () -> o.addFile("model.safetensors", new byte[0]));
            assertThrows(IllegalArgumentException.class, () -> o.addFile("../escape.json", new byte[0]));
            assertThrows(IllegalStateException.class, () -> o.addFile("config.json", new byte[0]));
            assertEquals(List.of("model.safetensors"), o.writeTensors(sample()));
            assertThrows(IllegalStateException.class, () -> o.writeTensors(sample()));
            o.commit();
        }
        assertEquals("{\"model_type\":\"llama\"}", Files.readString(out.resolve("config.json")));
        assertEquals("{}", Files.readString(out.resolve("tokenizer/tokenizer.json")));
        try (SafetensorsCheckpoint c = SafetensorsReader.open(out)) {
            assertEquals(sample().size(), c.tensors().size());
        }
        try (SafetensorsWriter.Output o = writer.open(dir.resolve("single.safetensors"))) {
            assertThrows(IllegalStateException.class, () -> o.addFile("config.json", new byte[0]));
        }
    }

    @Test
    void opensAFolderWithOneSafetensorsFile() {
        Path out = dir.resolve("folder");
        SafetensorsWriter.create().write(out.resolve("weights.safetensors"), sample());
        try (SafetensorsCheckpoint c = SafetensorsReader.open(out)) {
            assertEquals(out, c.location());
            assertEquals("weights.safetensors", c.shards().get(0).fileName());
        }
    }

    /**
     * A 7B-style checkpoint (LLaMA-7B tensor names and shapes, F16, 2 shards, 291 tensors) in sparse files: opening
     * parses and validates two ~20 KB headers and the index. Bound: 250 ms per open after warm-up (it measures a few
     * ms; the bound leaves room for a loaded 2-core CI machine).
     */
    @Test
    void openingASevenBillionStyleIndexTakesMilliseconds() throws IOException {
        List<long[]> shapes = new ArrayList<>();
        List<String> names = new ArrayList<>();
        names.add("model.embed_tokens.weight");
        shapes.add(new long[] {32000, 4096});
        for (int l = 0; l < 32; l++) {
            String p = "model.layers." + l + ".";
            for (String s : new String[] {"q_proj", "k_proj", "v_proj", "o_proj"}) {
                names.add(p + "self_attn." + s + ".weight");
                shapes.add(new long[] {4096, 4096});
            }
            names.add(p + "mlp.gate_proj.weight");
            shapes.add(new long[] {11008, 4096});
            names.add(p + "mlp.up_proj.weight");
            shapes.add(new long[] {11008, 4096});
            names.add(p + "mlp.down_proj.weight");
            shapes.add(new long[] {4096, 11008});
            names.add(p + "input_layernorm.weight");
            shapes.add(new long[] {4096});
            names.add(p + "post_attention_layernorm.weight");
            shapes.add(new long[] {4096});
        }
        names.add("model.norm.weight");
        shapes.add(new long[] {4096});
        names.add("lm_head.weight");
        shapes.add(new long[] {32000, 4096});
        assertEquals(291, names.size());

        Path model = dir.resolve("llama7b");
        Files.createDirectory(model);
        int half = 146;
        StringBuilder index = new StringBuilder("{\"metadata\":{\"total_size\":0},\"weight_map\":{");
        for (int s = 0; s < 2; s++) {
            String file = SafetensorsWriter.shardFileName(s + 1, 2);
            StringBuilder h = new StringBuilder("{\"__metadata__\":{\"format\":\"pt\"}");
            long off = 0;
            for (int i = s * half; i < (s == 0 ? half : names.size()); i++) {
                long size = 2;
                for (long d : shapes.get(i)) {
                    size *= d;
                }
                h.append(",\"")
                        .append(names.get(i))
                        .append("\":{\"dtype\":\"F16\",\"shape\":")
                        .append(Arrays.toString(shapes.get(i)).replace(" ", ""))
                        .append(",\"data_offsets\":[")
                        .append(off)
                        .append(',')
                        .append(off + size)
                        .append("]}");
                off += size;
                index.append(index.charAt(index.length() - 1) == '{' ? "" : ",")
                        .append('"')
                        .append(names.get(i))
                        .append("\":\"")
                        .append(file)
                        .append('"');
            }
            h.append('}');
            byte[] hb = h.toString().getBytes(StandardCharsets.UTF_8);
            try (RandomAccessFile f = new RandomAccessFile(model.resolve(file).toFile(), "rw")) {
                ByteBuffer len =
                        ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(hb.length);
                f.write(len.array());
                f.write(hb);
                f.setLength(8 + hb.length + off); // sparse: no data blocks
            }
        }
        index.append("}}");
        Files.writeString(model.resolve("model.safetensors.index.json"), index);

        long best = Long.MAX_VALUE;
        for (int run = 0; run < 20; run++) {
            long t0 = System.nanoTime();
            try (SafetensorsCheckpoint c = SafetensorsReader.open(model)) {
                assertEquals(291, c.tensors().size());
                assertEquals(2, c.dataFiles().size());
            }
            best = Math.min(best, System.nanoTime() - t0);
        }
        System.out.printf("open 7B-style sharded index (291 tensors, 2 shards): best of 20 = %.2f ms%n", best / 1e6);
        assertTrue(best < 250_000_000L, "open took " + best / 1e6 + " ms");
    }
}
