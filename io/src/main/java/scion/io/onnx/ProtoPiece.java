package scion.io.onnx;

import com.google.protobuf.CodedOutputStream;
import com.google.protobuf.MessageLite;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.List;
import scion.io.tensor.Tensor;

/**
 * A part of a protobuf message written by hand, whose serialized size is known before it is written.
 *
 * <p>Protobuf encoding (protobuf.dev/programming-guides/encoding): "a protocol buffer message is a series of
 * key-value pairs ... the key is (field_number &lt;&lt; 3) | wire_type"; length-delimited fields (wire type 2) are
 * "a varint length followed by the specified number of bytes"; and "when a message is parsed, ... fields may appear
 * in any order" and a repeated field's elements keep their relative order. So a message can be written as a
 * sequence of pieces: small sub-messages serialized by the generated code, and tensor bytes streamed from a {@link
 * Tensor} in chunks, never held in the heap as a whole.
 */
abstract class ProtoPiece {
    private static final int WIRETYPE_LENGTH_DELIMITED = 2;
    /** Bytes per chunk when streaming tensor data (a multiple of every element size). */
    static final int CHUNK = 1 << 20;

    /** Serialized size in bytes. */
    abstract long size();

    abstract void write(CodedOutputStream out) throws IOException;

    /** The fields of a generated message, serialized by its own code (its bytes fields may alias a mapped file). */
    static ProtoPiece of(MessageLite m) {
        return new ProtoPiece() {
            @Override
            long size() {
                return m.getSerializedSize();
            }

            @Override
            void write(CodedOutputStream out) throws IOException {
                m.writeTo(out);
            }
        };
    }

    /** A length-delimited field {@code number} whose content is the concatenation of {@code body}. */
    static ProtoPiece field(int number, List<ProtoPiece> body) {
        long len = 0;
        for (ProtoPiece p : body) {
            len = Math.addExact(len, p.size());
        }
        long content = len;
        long total = Math.addExact(
                CodedOutputStream.computeTagSize(number) + CodedOutputStream.computeUInt64SizeNoTag(content), content);
        return new ProtoPiece() {
            @Override
            long size() {
                return total;
            }

            @Override
            void write(CodedOutputStream out) throws IOException {
                out.writeUInt32NoTag((number << 3) | WIRETYPE_LENGTH_DELIMITED);
                out.writeUInt64NoTag(content);
                for (ProtoPiece p : body) {
                    p.write(out);
                }
            }
        };
    }

    /** A bytes field {@code number} holding the stored bytes of {@code t}, streamed; nothing when empty. */
    static ProtoPiece tensorBytes(int number, Tensor t) {
        long len = t.byteSize();
        long total = len == 0
                ? 0
                : Math.addExact(
                        CodedOutputStream.computeTagSize(number) + CodedOutputStream.computeUInt64SizeNoTag(len), len);
        return new ProtoPiece() {
            @Override
            long size() {
                return total;
            }

            @Override
            void write(CodedOutputStream out) throws IOException {
                if (len == 0) {
                    return;
                }
                out.writeUInt32NoTag((number << 3) | WIRETYPE_LENGTH_DELIMITED);
                out.writeUInt64NoTag(len);
                ByteBuffer buf = ByteBuffer.allocate((int) Math.min(CHUNK, len));
                long pos = 0;
                while (pos < len) {
                    int n = (int) Math.min(buf.capacity(), len - pos);
                    buf.clear().limit(n);
                    t.readBytes(pos, buf);
                    if (buf.hasRemaining()) {
                        throw new IllegalStateException("tensor '" + t.name() + "' returned " + (pos + buf.position())
                                + " of its " + len + " bytes");
                    }
                    // Not writeRawBytes(ByteBuffer): it writes the buffer's whole capacity, ignoring the limit.
                    out.writeRawBytes(buf.array(), 0, n);
                    pos += n;
                }
            }
        };
    }
}
