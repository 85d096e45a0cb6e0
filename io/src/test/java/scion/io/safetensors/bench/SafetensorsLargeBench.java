package scion.io.safetensors.bench;

import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.atomic.AtomicLong;
import java.util.zip.CRC32C;
import scion.io.safetensors.SafetensorsCheckpoint;
import scion.io.safetensors.SafetensorsReader;
import scion.io.safetensors.SafetensorsWriter;
import scion.io.tensor.DType;
import scion.io.tensor.Tensor;

/**
 * Large-checkpoint benchmark driven by {@code test/bench/safetensors-large.sh} (not a unit test): a synthetic
 * checkpoint of 4.5 GB with one 2.46 GB tensor, streamed from {@link GeneratedTensor}s, never held in memory.
 *
 * <ul>
 *   <li>{@code write DIR SHARD_BYTES}: writes it sharded with {@link SafetensorsWriter} (default 2,000,000,000-byte
 *       shards: the big tensor gets a shard of its own).
 *   <li>{@code verify DIR}: opens {@code DIR} with {@link SafetensorsReader} and compares each tensor's CRC32C, read
 *       back through the tensor ({@link Tensor#readBytes}, positional reads), with the CRC32C of the generator's bytes. Exit
 *       code 1 on a mismatch.
 * </ul>
 */
public final class SafetensorsLargeBench {
    private SafetensorsLargeBench() {}

    /** The synthetic checkpoint: {@code huge.f32} is 2,457,600,000 bytes (> 2 GiB, 614 M elements). */
    static List<Tensor> tensors() {
        return List.of(
                new GeneratedTensor("huge.f32", DType.F32, new long[] {600_000, 1024}, 1),
                new GeneratedTensor("embed.bf16", DType.BF16, new long[] {256_000, 2048}, 2),
                new GeneratedTensor("mlp.f16", DType.F16, new long[] {400_000, 1024}, 3),
                new GeneratedTensor("norm.f32", DType.F32, new long[] {1024}, 4),
                new GeneratedTensor("empty.f16", DType.F16, new long[] {0, 1024}, 5),
                new GeneratedTensor("scalar.f32", DType.F32, new long[] {}, 6),
                new GeneratedTensor("proj.bf16", DType.BF16, new long[] {100_000, 1024}, 7));
    }

    public static void main(String[] args) {
        if (args.length < 2) {
            System.err.println("usage: SafetensorsLargeBench write DIR [SHARD_BYTES] | verify DIR");
            System.exit(2);
        }
        Path dir = Path.of(args[1]);
        int rc;
        try (MemorySampler mem = new MemorySampler()) {
            if ("write".equals(args[0])) {
                long shard = args.length > 2 ? Long.parseLong(args[2]) : 2_000_000_000L;
                rc = write(dir, shard);
            } else {
                rc = verify(dir);
            }
            System.out.println(mem.report());
        }
        System.exit(rc);
    }

    private static int write(Path dir, long shardBytes) {
        List<Tensor> ts = tensors();
        long total = ts.stream().mapToLong(Tensor::byteSize).sum();
        AtomicLong done = new AtomicLong();
        AtomicLong nextReport = new AtomicLong(1L << 30);
        long t0 = System.nanoTime();
        List<Path> files = SafetensorsWriter.create()
                .force(true)
                .shardSize(shardBytes)
                .metadata(java.util.Map.of("format", "pt", "generator", "SafetensorsLargeBench"))
                .progress(n -> {
                    long d = done.addAndGet(n);
                    if (d >= nextReport.get()) {
                        nextReport.addAndGet(1L << 30);
                        System.out.printf(Locale.ROOT, "  written %.2f / %.2f GB%n", d / 1e9, total / 1e9);
                    }
                })
                .write(dir, ts);
        double s = (System.nanoTime() - t0) / 1e9;
        System.out.printf(
                Locale.ROOT,
                "wrote %d tensor bytes (%.2f GiB) into %s in %.1f s (%.2f GB/s incl. generation, fsync, re-read of"
                        + " headers)%n",
                total,
                total / (double) (1L << 30),
                files,
                s,
                total / s / 1e9);
        return done.get() == total ? 0 : 1;
    }

    private static int verify(Path dir) {
        long t0 = System.nanoTime();
        int bad = 0;
        long bytes = 0;
        try (SafetensorsCheckpoint c = SafetensorsReader.open(dir)) {
            System.out.println(
                    "shards: " + c.shardLayout().values().stream().distinct().count() + ", total_size "
                            + c.totalSize().orElse(-1));
            for (Tensor g : tensors()) {
                Tensor t = c.find(g.name()).orElse(null);
                if (t == null || t.dtype() != g.dtype() || !java.util.Arrays.equals(t.shape(), g.shape())) {
                    System.out.println("MISMATCH spec " + g.describe() + " vs " + (t == null ? "none" : t.describe()));
                    bad++;
                    continue;
                }
                long want = crc(g);
                long got = crc(t);
                bytes += t.byteSize();
                System.out.printf(
                        Locale.ROOT,
                        "  %-12s %-28s in %s crc32c %08x %s%n",
                        t.name(),
                        t.dtype() + java.util.Arrays.toString(t.shape()),
                        c.shardOf(t.name()).orElseThrow().fileName(),
                        got,
                        want == got ? "ok" : "MISMATCH (expected " + Long.toHexString(want) + ")");
                if (want != got) {
                    bad++;
                }
            }
        }
        double s = (System.nanoTime() - t0) / 1e9;
        System.out.printf(
                Locale.ROOT,
                "verified %d bytes in %.1f s (reading back and regenerating): %s%n",
                bytes,
                s,
                bad == 0 ? "all checksums match" : bad + " MISMATCHES");
        return bad == 0 ? 0 : 1;
    }

    private static long crc(Tensor t) {
        CRC32C crc = new CRC32C();
        ByteBuffer b = ByteBuffer.allocateDirect(4 << 20);
        long size = t.byteSize();
        for (long pos = 0; pos < size; pos += b.capacity()) {
            b.clear().limit((int) Math.min(b.capacity(), size - pos));
            t.readBytes(pos, b);
            b.flip();
            crc.update(b);
        }
        return crc.getValue();
    }
}
