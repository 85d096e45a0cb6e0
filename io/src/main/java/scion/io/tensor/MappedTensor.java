package scion.io.tensor;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.util.Optional;

/**
 * A tensor stored in a region of a file: a view, never copied into the heap as a whole.
 *
 * <p>Streaming reads ({@link #readBytes}, and through it {@link #readFloats}) use positional file reads; {@link
 * #mappedChunks()} maps the region for zero-copy access. Java 17 maps at most 2 GiB per {@link MappedByteBuffer}, so
 * the region is mapped in chunks of {@link #CHUNK} bytes, lazily, per tensor.
 */
public final class MappedTensor implements Tensor {
    /** Bytes per mapped chunk (1 GiB, a multiple of every element size). */
    public static final long CHUNK = 1L << 30;

    private final String name;
    private final DType dtype;
    private final long[] shape;
    private final FileRegion region;
    private MappedByteBuffer[] chunks;

    public MappedTensor(String name, DType dtype, long[] shape, FileRegion region) {
        this.name = name;
        this.dtype = dtype;
        this.shape = shape.clone();
        this.region = region;
    }

    @Override
    public String name() {
        return name;
    }

    @Override
    public DType dtype() {
        return dtype;
    }

    @Override
    public long[] shape() {
        return shape;
    }

    @Override
    public Optional<FileRegion> fileRegion() {
        return Optional.of(region);
    }

    private synchronized MappedByteBuffer[] chunks() {
        if (chunks == null) {
            long len = region.length();
            int n = Math.toIntExact(Math.max(1, (len + CHUNK - 1) / CHUNK));
            MappedByteBuffer[] c = new MappedByteBuffer[n];
            try {
                for (int i = 0; i < n; i++) {
                    long start = i * CHUNK;
                    long size = Math.min(CHUNK, len - start);
                    c[i] = region.channel().map(FileChannel.MapMode.READ_ONLY, region.offset() + start, size);
                }
            } catch (IOException e) {
                throw new UncheckedIOException(region.path() + ": cannot map tensor '" + name + "'", e);
            }
            chunks = c;
        }
        return chunks;
    }

    /**
     * Copies bytes with positional reads ({@code pread}) rather than through the mapping: the copy is needed anyway,
     * and pages read this way stay in the page cache instead of counting toward the process's resident memory until
     * the mapping is collected (streaming a 4 GiB checkpoint this way peaks near 130 MiB, through the mapping at 4.4
     * GiB). {@link #mappedChunks()} gives zero-copy views when an operator wants the bytes in place.
     */
    @Override
    public void readBytes(long byteOffset, ByteBuffer dst) {
        long len = region.length();
        if (byteOffset < 0 || byteOffset > len) {
            throw new IndexOutOfBoundsException("offset " + byteOffset + " outside tensor '" + name + "' of " + len);
        }
        int want = (int) Math.min(dst.remaining(), len - byteOffset);
        ByteBuffer window = dst.duplicate();
        window.limit(window.position() + want);
        long pos = region.offset() + byteOffset;
        try {
            while (window.hasRemaining()) {
                int n = region.channel().read(window, pos);
                if (n < 0) {
                    throw new UncheckedIOException(
                            region.path() + ": tensor '" + name + "' ends early",
                            new java.io.EOFException("end of file at byte " + pos));
                }
                pos += n;
            }
        } catch (IOException e) {
            throw new UncheckedIOException(region.path() + ": cannot read tensor '" + name + "'", e);
        }
        dst.position(dst.position() + want);
    }

    /**
     * Read-only views of the mapped bytes, one per chunk (zero-copy). The caller must not keep them past the
     * reader's lifetime.
     */
    public ByteBuffer[] mappedChunks() {
        MappedByteBuffer[] c = chunks();
        ByteBuffer[] out = new ByteBuffer[c.length];
        for (int i = 0; i < c.length; i++) {
            out[i] = c[i].asReadOnlyBuffer();
        }
        return out;
    }
}
