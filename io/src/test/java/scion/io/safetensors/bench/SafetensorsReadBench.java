package scion.io.safetensors.bench;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import scion.io.safetensors.SafetensorsCheckpoint;
import scion.io.safetensors.SafetensorsReader;
import scion.io.safetensors.SafetensorsWriter;
import scion.io.tensor.DType;
import scion.io.tensor.MappedTensor;
import scion.io.tensor.Tensor;

/**
 * Read-throughput benchmark driven by {@code test/bench/safetensors-read-throughput.sh} (not a unit test).
 *
 * <ul>
 *   <li>{@code generate FILE BYTES}: writes a single safetensors file of about BYTES bytes of alternating F16 and
 *       BF16 {@code [8192, 4096]} tensors (64 MiB each) with {@link SafetensorsWriter}.
 *   <li>{@code floats FILE}: opens it with {@link SafetensorsReader} and converts every tensor to float32 through
 *       {@link Tensor#readFloats} (1 Mi elements per call).
 *   <li>{@code bytes FILE}: copies every tensor's raw bytes through {@link Tensor#readBytes} (4 MiB per call).
 *   <li>{@code mapped FILE}: reads every tensor in place through {@link MappedTensor#mappedChunks()} (no copy).
 * </ul>
 *
 * Each read mode prints one line {@code RESULT mode bytes seconds GB/s checksum}; seconds cover open + read.
 */
public final class SafetensorsReadBench {
    private SafetensorsReadBench() {}

    public static void main(String[] args) {
        if (args.length < 2) {
            System.err.println("usage: SafetensorsReadBench generate FILE BYTES | floats|bytes|mapped FILE");
            System.exit(2);
        }
        Path file = Path.of(args[1]);
        switch (args[0]) {
            case "generate":
                generate(file, Long.parseLong(args[2]));
                break;
            case "floats":
            case "bytes":
            case "mapped":
                read(file, args[0]);
                break;
            default:
                System.err.println("unknown mode " + args[0]);
                System.exit(2);
        }
    }

    private static void generate(Path file, long bytes) {
        long perTensor = 8192L * 4096 * 2;
        int n = (int) Math.max(1, bytes / perTensor);
        List<Tensor> ts = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            DType d = i % 2 == 0 ? DType.F16 : DType.BF16;
            ts.add(new GeneratedTensor("layers." + i + ".weight", d, new long[] {8192, 4096}, i));
        }
        long t0 = System.nanoTime();
        SafetensorsWriter.create().force(true).write(file, ts);
        double s = (System.nanoTime() - t0) / 1e9;
        System.out.printf(
                Locale.ROOT,
                "generated %s: %d tensors, %d bytes in %.2f s (%.2f GB/s, generator-bound)%n",
                file,
                n,
                n * perTensor,
                s,
                n * perTensor / s / 1e9);
    }

    private static void read(Path file, String mode) {
        long t0 = System.nanoTime();
        long bytes = 0;
        double check = 0;
        try (SafetensorsCheckpoint c = SafetensorsReader.open(file)) {
            float[] buf = new float[1 << 20];
            ByteBuffer raw = ByteBuffer.allocateDirect(4 << 20).order(ByteOrder.LITTLE_ENDIAN);
            for (Tensor t : c.tensors()) {
                long numel = t.numel();
                bytes += t.byteSize();
                switch (mode) {
                    case "floats":
                        for (long e = 0; e < numel; e += buf.length) {
                            int len = (int) Math.min(buf.length, numel - e);
                            t.readFloats(e, buf, 0, len);
                            check += buf[0] + buf[len - 1];
                        }
                        break;
                    case "bytes":
                        for (long p = 0; p < t.byteSize(); p += raw.capacity()) {
                            raw.clear().limit((int) Math.min(raw.capacity(), t.byteSize() - p));
                            t.readBytes(p, raw);
                            check += raw.getLong(0) ^ raw.getLong(raw.position() - 8);
                        }
                        break;
                    default:
                        long x = 0;
                        for (ByteBuffer m : ((MappedTensor) t).mappedChunks()) {
                            m.order(ByteOrder.LITTLE_ENDIAN);
                            int end = m.limit() & ~7;
                            for (int i = 0; i < end; i += 8) {
                                x ^= m.getLong(i);
                            }
                        }
                        check += x;
                        break;
                }
            }
        }
        double s = (System.nanoTime() - t0) / 1e9;
        System.out.printf(
                Locale.ROOT, "RESULT %s %d %.3f %.3f %s%n", mode, bytes, s, bytes / s / 1e9, Double.toString(check));
    }
}
