package scion.io.safetensors;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.InvalidInputException;
import scion.io.safetensors.bench.GeneratedTensor;
import scion.io.tensor.BufferTensor;
import scion.io.tensor.DType;
import scion.io.tensor.Tensor;

/** The writer never leaves a partial output: existing destinations, failing tensors, unwritable dtypes. */
class SafetensorsWriterFailureTest {
    @TempDir
    Path dir;

    List<String> listing() throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).sorted().collect(Collectors.toList());
        }
    }

    static final class Boom extends RuntimeException {
        private static final long serialVersionUID = 1L;

        Boom() {
            super("tensor source failed");
        }
    }

    /** A generated tensor whose source fails once {@code failAt} bytes have been read. */
    static Tensor failingAfter(String name, long[] shape, long failAt) {
        GeneratedTensor g = new GeneratedTensor(name, DType.F16, shape, 3);
        return new Tensor() {
            @Override
            public String name() {
                return name;
            }

            @Override
            public DType dtype() {
                return DType.F16;
            }

            @Override
            public long[] shape() {
                return g.shape();
            }

            @Override
            public void readBytes(long byteOffset, ByteBuffer dst) {
                if (byteOffset >= failAt) {
                    throw new Boom();
                }
                g.readBytes(byteOffset, dst);
            }
        };
    }

    @Test
    void existingDestinationWithoutForceIsAnErrorAndStaysUntouched() throws IOException {
        Path file = dir.resolve("exists.safetensors");
        Files.writeString(file, "precious");
        List<Tensor> ts = SafetensorsRoundTripTest.sample();
        InvalidInputException e = assertThrows(
                InvalidInputException.class, () -> SafetensorsWriter.create().write(file, ts));
        assertTrue(e.getMessage().contains("already exists"), e.getMessage());
        assertTrue(e.getMessage().contains("expected") && e.getMessage().contains("found"), e.getMessage());
        assertEquals("precious", Files.readString(file));

        Path folder = dir.resolve("existing-folder");
        Files.createDirectory(folder);
        Files.writeString(folder.resolve("keep.txt"), "keep");
        assertThrows(
                InvalidInputException.class, () -> SafetensorsWriter.create().write(folder, ts));
        assertEquals("keep", Files.readString(folder.resolve("keep.txt")));
        assertEquals(List.of("existing-folder", "exists.safetensors"), listing());

        // With force the destination is replaced, at commit time.
        SafetensorsWriter.create().force(true).write(file, ts);
        try (SafetensorsCheckpoint c = SafetensorsReader.open(file)) {
            assertEquals(ts.size(), c.tensors().size());
        }
        SafetensorsWriter.create().force(true).write(folder, ts);
        assertFalse(Files.exists(folder.resolve("keep.txt")));
        assertEquals(List.of("existing-folder", "exists.safetensors"), listing());
    }

    @Test
    void aTensorFailingMidWriteLeavesNothingBehind() throws IOException {
        // 6 MiB tensor failing on its second 4 MiB chunk, after other tensors were written.
        List<Tensor> ts = new ArrayList<>(SafetensorsRoundTripTest.sample());
        ts.add(failingAfter("failing", new long[] {3, 1 << 20}, SafetensorsWriter.CHUNK_BYTES));
        ts.add(BufferTensor.ofFloats("after", new long[] {1}, new float[] {1f}));

        Path file = dir.resolve("single.safetensors");
        assertThrows(Boom.class, () -> SafetensorsWriter.create().write(file, ts));
        assertEquals(List.of(), listing(), "no destination, no staging file");

        Path sharded = dir.resolve("sharded");
        assertThrows(Boom.class, () -> SafetensorsWriter.create().shardSize(100).write(sharded, ts));
        assertEquals(List.of(), listing(), "no destination, no staging folder");
    }

    @Test
    void aFailureWithForceKeepsTheOldOutput() throws IOException {
        Path folder = dir.resolve("out");
        SafetensorsWriter.create().write(folder, SafetensorsRoundTripTest.sample());
        byte[] before = Files.readAllBytes(folder.resolve("model.safetensors"));
        List<Tensor> ts = List.of(failingAfter("failing", new long[] {3, 1 << 20}, 0));
        assertThrows(Boom.class, () -> SafetensorsWriter.create().force(true).write(folder, ts));
        assertArrayEquals(before, Files.readAllBytes(folder.resolve("model.safetensors")));
        assertEquals(List.of("out"), listing());
    }

    @Test
    void aCallerFailureBeforeCommitRemovesTheStagingFolder() throws IOException {
        Path folder = dir.resolve("out");
        Boom boom = new Boom();
        Boom thrown = assertThrows(Boom.class, () -> {
            try (SafetensorsWriter.Output o = SafetensorsWriter.create().open(folder)) {
                o.writeTensors(SafetensorsRoundTripTest.sample());
                o.addFile("config.json", "{}".getBytes(StandardCharsets.UTF_8));
                assertTrue(Files.isDirectory(o.staging()));
                throw boom;
            }
        });
        assertSame(boom, thrown);
        assertEquals(List.of(), listing());
    }

    @Test
    void unwritableDtypesAndBadNamesAreAllReportedBeforeAnythingIsWritten() throws IOException {
        ByteBuffer one = ByteBuffer.wrap(new byte[4]);
        List<Tensor> ts = List.of(
                new BufferTensor("fp8", DType.F8_E4M3, new long[] {4}, one),
                BufferTensor.ofFloats("x", new long[] {1}, new float[] {1f}),
                BufferTensor.ofFloats("x", new long[] {1}, new float[] {2f}),
                BufferTensor.ofFloats("__metadata__", new long[] {1}, new float[] {2f}));
        Path file = dir.resolve("bad.safetensors");
        InvalidInputException e = assertThrows(
                InvalidInputException.class, () -> SafetensorsWriter.create().write(file, ts));
        String m = e.getMessage();
        assertTrue(m.contains("bad.safetensors: tensor 'fp8': dtype cannot be written"), m);
        assertTrue(m.contains("found F8_E4M3"), m);
        assertTrue(m.contains("tensor 'x': duplicate tensor name"), m);
        assertTrue(m.contains("tensor '__metadata__': tensor name is reserved"), m);
        assertEquals(List.of(), listing());
    }

    @Test
    void aSingleFileCannotBeSharded() throws IOException {
        Path file = dir.resolve("one.safetensors");
        InvalidInputException e = assertThrows(
                InvalidInputException.class,
                () -> SafetensorsWriter.create().shardSize(10).write(file, SafetensorsRoundTripTest.sample()));
        assertTrue(e.getMessage().contains("one.safetensors: a single .safetensors file cannot be sharded"));
        assertEquals(List.of(), listing());
        assertThrows(
                InvalidInputException.class, () -> SafetensorsWriter.create().shardSize(0));
    }

    @Test
    void aTensorYieldingTooFewBytesIsCaught() throws IOException {
        Tensor shortOne = new Tensor() {
            @Override
            public String name() {
                return "short";
            }

            @Override
            public DType dtype() {
                return DType.F32;
            }

            @Override
            public long[] shape() {
                return new long[] {4};
            }

            @Override
            public void readBytes(long byteOffset, ByteBuffer dst) {
                dst.putInt(7); // 4 of 16 bytes
            }
        };
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> SafetensorsWriter.create()
                .write(dir.resolve("s.safetensors"), List.of(shortOne)));
        assertTrue(e.getMessage().contains("tensor 'short' yielded 4 bytes"), e.getMessage());
        assertEquals(List.of(), listing());
    }
}
