package scion.io.safetensors;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.JsonToken;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.CharBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CoderResult;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import scion.io.InvalidInputException;
import scion.io.Json;
import scion.io.tensor.DType;
import scion.io.tensor.Shapes;

/**
 * The validated header of one safetensors file: its tensor entries in storage order and its {@code __metadata__}.
 *
 * <p>Implements the format as the safetensors README states it:
 *
 * <blockquote>
 * 8 bytes: N, an unsigned little-endian 64-bit integer, containing the size of the header. N bytes: a JSON UTF-8
 * string representing the header. The header data MUST begin with a &#123; character (0x7B). The header data MAY be
 * trailing padded with whitespace (0x20). The header is a dict like &#123;"TENSOR_NAME": &#123;"dtype": "F16",
 * "shape": [1, 16, 256], "data_offsets": [BEGIN, END]&#125;, "NEXT_TENSOR_NAME": &#123;...&#125;, ...&#125;,
 * data_offsets point to the tensor data relative to the beginning of the byte buffer (i.e. not an absolute position
 * in the file), with BEGIN as the starting offset and END as the one-past offset (so total tensor byte size = END -
 * BEGIN). A special key __metadata__ is allowed to contain free form string-to-string map. Arbitrary JSON is not
 * allowed, all values must be strings. Rest of the file: byte-buffer. [...] Duplicate keys are disallowed. [...]
 * Empty tensors (tensors with 1 dimension being 0) are allowed. [...] 0-rank Tensors (tensors with shape []) are
 * allowed, they are merely a scalar. The byte buffer needs to be entirely indexed, and cannot contain holes.
 * </blockquote>
 *
 * <p>Like the reference Rust crate, a header above 100,000,000 bytes is refused before it is read. Stricter than the
 * crate: an entry with fields other than dtype, shape and data_offsets is refused. Every check runs on the header
 * bytes alone; no tensor data is touched.
 */
final class SafetensorsHeader {
    /** The header size cap of the reference implementation ({@code MAX_HEADER_SIZE} in the Rust crate). */
    static final long MAX_HEADER_SIZE = 100_000_000L;

    static final String METADATA_KEY = "__metadata__";

    private static final JsonFactory JSON = Json.mapper().getFactory();

    /** One tensor entry; {@code begin} and {@code end} are relative to the byte buffer. */
    static final class Entry {
        private final String name;
        private final DType dtype;
        private final long[] shape;
        private final long begin;
        private final long end;

        Entry(String name, DType dtype, long[] shape, long begin, long end) {
            this.name = name;
            this.dtype = dtype;
            this.shape = shape;
            this.begin = begin;
            this.end = end;
        }

        String name() {
            return name;
        }

        DType dtype() {
            return dtype;
        }

        long[] shape() {
            return shape.clone();
        }

        long begin() {
            return begin;
        }

        long end() {
            return end;
        }

        long length() {
            return end - begin;
        }
    }

    final long headerSize; // N, without the 8 length bytes
    final long dataStart; // 8 + N: file offset of the byte buffer
    final long fileSize;
    final List<Entry> entries; // storage order: sorted by begin offset
    final Map<String, String> metadata; // __metadata__, in file order

    private SafetensorsHeader(long headerSize, long fileSize, List<Entry> entries, Map<String, String> metadata) {
        this.headerSize = headerSize;
        this.dataStart = 8 + headerSize;
        this.fileSize = fileSize;
        this.entries = entries;
        this.metadata = metadata;
    }

    /** Reads and validates the header of {@code channel}; {@code where} names the file in every error. */
    static SafetensorsHeader read(FileChannel channel, String where) {
        try {
            long fileSize = channel.size();
            if (fileSize < 8) {
                throw InvalidInputException.of(
                        where,
                        "file too short to hold the 8-byte header length",
                        "at least 8 bytes",
                        fileSize + " bytes");
            }
            ByteBuffer len = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
            readFully(channel, len, 0, where);
            long n = len.getLong(0);
            if (Long.compareUnsigned(n, MAX_HEADER_SIZE) > 0) {
                throw InvalidInputException.of(
                        where,
                        "header length exceeds the safetensors limit",
                        "at most " + MAX_HEADER_SIZE + " bytes",
                        Long.toUnsignedString(n) + " bytes");
            }
            if (n > fileSize - 8) {
                throw InvalidInputException.of(
                        where,
                        "header length runs past the end of the file",
                        "at most " + (fileSize - 8) + " bytes (file size " + fileSize + " minus 8)",
                        n + " bytes");
            }
            ByteBuffer header = ByteBuffer.allocate((int) n);
            readFully(channel, header, 8, where);
            return parse(header.array(), fileSize, where);
        } catch (IOException e) {
            throw new UncheckedIOException(where + ": cannot read the safetensors header", e);
        }
    }

    private static void readFully(FileChannel ch, ByteBuffer dst, long position, String where) throws IOException {
        long pos = position;
        while (dst.hasRemaining()) {
            int r = ch.read(dst, pos);
            if (r < 0) {
                throw new IOException(where + ": file ended at byte " + pos + " while reading the header");
            }
            pos += r;
        }
    }

    /** Validates header bytes {@code header} of a file of {@code fileSize} bytes. */
    static SafetensorsHeader parse(byte[] header, long fileSize, String where) {
        long bufferSize = fileSize - 8 - header.length;
        if (header.length == 0 || header[0] != '{') {
            throw InvalidInputException.of(
                    where,
                    "header does not begin with '{'",
                    "a JSON object starting with byte 0x7B",
                    header.length == 0 ? "an empty header" : String.format("byte 0x%02X", header[0] & 0xff));
        }
        String text = decodeUtf8(header, where);
        return new Parser(where, bufferSize).run(text, header.length, fileSize);
    }

    private static String decodeUtf8(byte[] bytes, String where) {
        CharsetDecoder dec = StandardCharsets.UTF_8
                .newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT);
        ByteBuffer in = ByteBuffer.wrap(bytes);
        CharBuffer out = CharBuffer.allocate(bytes.length);
        CoderResult r = dec.decode(in, out, true);
        if (!r.isError()) {
            r = dec.flush(out);
        }
        if (r.isError()) {
            throw InvalidInputException.of(
                    where,
                    "header is not valid UTF-8",
                    "UTF-8 JSON text",
                    "an invalid byte sequence at header byte " + in.position());
        }
        out.flip();
        return out.toString();
    }

    /** A streaming pass over the header JSON that keeps track of the entry being read, for error messages. */
    private static final class Parser {
        private final String where;
        private final long bufferSize;
        private String entry; // tensor (or __metadata__) whose value is being read; null at top level

        Parser(String where, long bufferSize) {
            this.where = where;
            this.bufferSize = bufferSize;
        }

        private String at(String name) {
            return where + ": tensor '" + name + "'";
        }

        SafetensorsHeader run(String text, long headerSize, long fileSize) {
            List<Entry> entries = new ArrayList<>();
            Map<String, String> metadata = Collections.emptyMap();
            JsonParser p = null;
            try {
                p = JSON.createParser(text);
                if (p.nextToken() != JsonToken.START_OBJECT) {
                    throw InvalidInputException.of(where, "header is not a JSON object", "'{'", found(p));
                }
                while (p.nextToken() == JsonToken.FIELD_NAME) {
                    String name = p.currentName();
                    entry = name;
                    p.nextToken();
                    if (METADATA_KEY.equals(name)) {
                        metadata = parseMetadata(p);
                    } else {
                        entries.add(parseEntry(p, name));
                    }
                    entry = null;
                }
                JsonToken after = p.nextToken();
                if (after != null) {
                    throw InvalidInputException.of(
                            where, "header has content after its JSON object", "only spaces", found(p));
                }
            } catch (JsonProcessingException e) {
                throw jsonError(p, e);
            } catch (IOException e) {
                throw new UncheckedIOException(where + ": cannot parse the header", e);
            }
            List<Entry> sorted = new ArrayList<>(entries);
            sorted.sort(Comparator.comparingLong(Entry::begin).thenComparingLong(Entry::end));
            checkCoverage(sorted, headerSize, fileSize);
            return new SafetensorsHeader(headerSize, fileSize, List.copyOf(sorted), metadata);
        }

        private InvalidInputException jsonError(JsonParser p, JsonProcessingException e) {
            String msg = e.getOriginalMessage();
            String key = null;
            if (p != null && msg != null && msg.startsWith("Duplicate")) {
                try {
                    key = p.currentName();
                } catch (IOException | RuntimeException ignored) {
                    key = null;
                }
            }
            if (key != null) {
                if (entry == null || entry.equals(key)) {
                    return InvalidInputException.of(
                            at(key), "duplicate key in header", "each tensor name once", "'" + key + "' twice");
                }
                return InvalidInputException.of(
                        at(entry), "duplicate field in header entry", "each field once", "'" + key + "' twice");
            }
            String loc = e.getLocation() == null
                    ? ""
                    : " at line " + e.getLocation().getLineNr() + ", column "
                            + e.getLocation().getColumnNr();
            return new InvalidInputException(
                    (entry == null ? where : at(entry)) + ": header is not valid JSON; expected a JSON object, found "
                            + msg + loc,
                    e);
        }

        private Map<String, String> parseMetadata(JsonParser p) throws IOException {
            if (p.currentToken() == JsonToken.VALUE_NULL) {
                return Collections.emptyMap();
            }
            if (p.currentToken() != JsonToken.START_OBJECT) {
                throw InvalidInputException.of(
                        where + ": " + METADATA_KEY, "not an object", "a map of strings to strings", found(p));
            }
            Map<String, String> m = new LinkedHashMap<>();
            while (p.nextToken() == JsonToken.FIELD_NAME) {
                String k = p.currentName();
                if (p.nextToken() != JsonToken.VALUE_STRING) {
                    throw InvalidInputException.of(
                            where + ": " + METADATA_KEY,
                            "value of key '" + k + "' is not a string",
                            "a string",
                            found(p));
                }
                m.put(k, p.getText());
            }
            return Collections.unmodifiableMap(m);
        }

        private Entry parseEntry(JsonParser p, String name) throws IOException {
            String w = at(name);
            if (p.currentToken() != JsonToken.START_OBJECT) {
                throw InvalidInputException.of(
                        w, "header entry is not an object", "{\"dtype\", \"shape\", \"data_offsets\"}", found(p));
            }
            String dtypeName = null;
            long[] shape = null;
            long[] offsets = null;
            while (p.nextToken() == JsonToken.FIELD_NAME) {
                String f = p.currentName();
                p.nextToken();
                switch (f) {
                    case "dtype":
                        if (p.currentToken() != JsonToken.VALUE_STRING) {
                            throw InvalidInputException.of(w, "'dtype' is not a string", "a dtype name", found(p));
                        }
                        dtypeName = p.getText();
                        break;
                    case "shape":
                        shape = readNonNegativeLongs(p, w, "shape");
                        break;
                    case "data_offsets":
                        offsets = readNonNegativeLongs(p, w, "data_offsets");
                        break;
                    default:
                        throw InvalidInputException.of(
                                w,
                                "unexpected field in header entry",
                                "only dtype, shape and data_offsets",
                                "'" + f + "'");
                }
            }
            List<String> missing = new ArrayList<>();
            if (dtypeName == null) {
                missing.add("dtype");
            }
            if (shape == null) {
                missing.add("shape");
            }
            if (offsets == null) {
                missing.add("data_offsets");
            }
            if (!missing.isEmpty()) {
                throw InvalidInputException.of(
                        w, "header entry lacks " + missing, "dtype, shape and data_offsets", "no " + missing);
            }
            DType dtype = DType.fromSafetensors(dtypeName, w);
            if (offsets.length != 2 || offsets[0] > offsets[1]) {
                throw InvalidInputException.of(
                        w, "bad data_offsets", "[begin, end] with begin <= end", Arrays.toString(offsets));
            }
            long begin = offsets[0];
            long end = offsets[1];
            long numel = Shapes.numel(shape, w);
            long size;
            try {
                size = Math.multiplyExact(numel, (long) dtype.size());
            } catch (ArithmeticException e) {
                throw InvalidInputException.of(
                        w, "byte size overflows", "< 2^63 bytes", numel + " elements of " + dtype);
            }
            if (size != end - begin) {
                throw InvalidInputException.of(
                        w,
                        "data_offsets " + Arrays.toString(offsets) + " do not match " + dtype + " "
                                + Shapes.format(shape),
                        size + " bytes",
                        (end - begin) + " bytes");
            }
            if (end > bufferSize) {
                throw InvalidInputException.of(
                        w,
                        "data_offsets run past the end of the file",
                        "end <= " + bufferSize + " (the byte buffer size)",
                        Arrays.toString(offsets));
            }
            return new Entry(name, dtype, shape, begin, end);
        }

        private long[] readNonNegativeLongs(JsonParser p, String w, String field) throws IOException {
            String expected = "a list of non-negative integers";
            if (p.currentToken() != JsonToken.START_ARRAY) {
                throw InvalidInputException.of(w, "'" + field + "' is not a list", expected, found(p));
            }
            long[] out = new long[4];
            int n = 0;
            while (p.nextToken() != JsonToken.END_ARRAY) {
                if (p.currentToken() != JsonToken.VALUE_NUMBER_INT
                        || p.getNumberType() == JsonParser.NumberType.BIG_INTEGER
                        || p.getLongValue() < 0) {
                    throw InvalidInputException.of(
                            w, "'" + field + "' holds a value that is not a non-negative integer", expected, found(p));
                }
                if (n == out.length) {
                    out = Arrays.copyOf(out, n * 2);
                }
                out[n++] = p.getLongValue();
            }
            return Arrays.copyOf(out, n);
        }

        /** The byte buffer must be covered exactly: sorted by offset, each tensor begins where the last ended. */
        private void checkCoverage(List<Entry> sorted, long headerSize, long fileSize) {
            long expected = 0;
            Entry prev = null;
            for (Entry e : sorted) {
                if (e.begin() < expected) {
                    throw InvalidInputException.of(
                            at(e.name()),
                            "data_offsets overlap tensor '" + prev.name() + "' "
                                    + Arrays.toString(new long[] {prev.begin(), prev.end()}),
                            "begin " + expected,
                            "begin " + e.begin());
                }
                if (e.begin() > expected) {
                    throw InvalidInputException.of(
                            at(e.name()),
                            (prev == null
                                            ? "byte buffer does not start with a tensor"
                                            : "data_offsets leave a gap after tensor '" + prev.name() + "'")
                                    + " (" + (e.begin() - expected) + " unindexed bytes)",
                            "begin " + expected,
                            "begin " + e.begin());
                }
                expected = e.end();
                prev = e;
            }
            if (expected != bufferSize) {
                long trailing = bufferSize - expected;
                if (prev == null) {
                    throw InvalidInputException.of(
                            where,
                            "file has " + trailing + " unindexed bytes after a header that lists no tensors",
                            "file size " + (8 + headerSize),
                            "file size " + fileSize);
                }
                throw InvalidInputException.of(
                        at(prev.name()),
                        "file has trailing bytes after the last tensor (" + trailing + " unindexed)",
                        "file size " + (8 + headerSize + expected),
                        "file size " + fileSize);
            }
        }

        private static String found(JsonParser p) throws IOException {
            JsonToken t = p.currentToken();
            if (t == null) {
                return "end of header";
            }
            switch (t) {
                case START_OBJECT:
                    return "an object";
                case START_ARRAY:
                    return "a list";
                case VALUE_STRING:
                    return "\"" + abbreviate(p.getText()) + "\"";
                case FIELD_NAME:
                    return "key \"" + abbreviate(p.currentName()) + "\"";
                default:
                    return abbreviate(p.getText());
            }
        }

        private static String abbreviate(String s) {
            return s.length() <= 80 ? s : s.substring(0, 77) + "...";
        }
    }
}
