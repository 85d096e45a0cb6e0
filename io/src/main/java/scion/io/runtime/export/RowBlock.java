package scion.io.runtime.export;

import java.nio.ByteBuffer;
import java.util.Optional;
import scion.io.tensor.DType;
import scion.io.tensor.FileRegion;
import scion.io.tensor.Tensor;

/**
 * Rows {@code [start, end)} of a tensor, as a view: a weight too large for one in-memory ONNX Runtime tensor (a Java
 * buffer holds at most 2 GiB) becomes several initializers. Its bytes are a contiguous range of the parent's (row
 * major), so a file-backed parent gives a file-backed block.
 */
final class RowBlock implements Tensor {
    private final Tensor parent;
    private final String name;
    private final long start;
    private final long[] shape;
    private final long rowBytes;

    RowBlock(Tensor parent, String name, long start, long end) {
        this.parent = parent;
        this.name = name;
        this.start = start;
        long[] p = parent.shape();
        this.shape = p.clone();
        this.shape[0] = end - start;
        long cols = 1;
        for (int i = 1; i < p.length; i++) {
            cols = Math.multiplyExact(cols, p[i]);
        }
        this.rowBytes = Math.multiplyExact(cols, (long) parent.dtype().size());
    }

    @Override
    public String name() {
        return name;
    }

    @Override
    public DType dtype() {
        return parent.dtype();
    }

    @Override
    public long[] shape() {
        return shape;
    }

    private long base() {
        return Math.multiplyExact(start, rowBytes);
    }

    @Override
    public void readBytes(long byteOffset, ByteBuffer dst) {
        long len = byteSize();
        if (byteOffset < 0 || byteOffset > len) {
            throw new IndexOutOfBoundsException("offset " + byteOffset + " outside tensor '" + name + "' of " + len);
        }
        ByteBuffer window = dst.duplicate();
        int want = (int) Math.min(dst.remaining(), len - byteOffset);
        window.limit(window.position() + want);
        parent.readBytes(base() + byteOffset, window);
        dst.position(window.position());
    }

    @Override
    public Optional<FileRegion> fileRegion() {
        return parent.fileRegion()
                .map(r -> new FileRegion(r.path(), r.channel(), Math.addExact(r.offset(), base()), byteSize()));
    }
}
