package scion.io.safetensors;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.ObjectReader;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.InvalidPathException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.OptionalLong;
import java.util.TreeMap;
import scion.io.InvalidInputException;
import scion.io.Json;
import scion.io.tensor.FileRegion;
import scion.io.tensor.MappedTensor;
import scion.io.tensor.Tensor;

/**
 * Opens safetensors checkpoints: a single {@code .safetensors} file, a {@code *.safetensors.index.json} with its
 * shards, or a model folder holding either exactly one index or exactly one {@code .safetensors} file.
 *
 * <p>Opening reads and validates every header (see {@link SafetensorsHeader} for the format and the checks) and, for
 * a sharded checkpoint, the index: its {@code weight_map} (tensor name to shard file) must name existing files inside
 * the folder, every tensor it lists must be in the named shard's header, every tensor of a shard must be listed for
 * that shard, and no tensor may be stored in two shards. Each violation is an {@link InvalidInputException} naming
 * the file (relative to the model folder), the tensor, what was expected and what was found. No tensor data is read
 * while opening.
 */
public final class SafetensorsReader {
    /** Suffix of a safetensors file. */
    public static final String FILE_SUFFIX = ".safetensors";

    /** Suffix of a shard index, as in Hugging Face's {@code model.safetensors.index.json}. */
    public static final String INDEX_SUFFIX = ".safetensors.index.json";

    private static final long MAX_INDEX_SIZE = 100_000_000L;

    private static final ObjectMapper JSON = Json.mapper();
    private static final ObjectReader TREE =
            JSON.readerFor(JsonNode.class).without(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

    private SafetensorsReader() {}

    /**
     * Opens a {@code .safetensors} file, a {@code *.safetensors.index.json}, or a folder holding exactly one index
     * (then its shards are read) or, without an index, exactly one {@code .safetensors} file.
     */
    public static SafetensorsCheckpoint open(Path path) {
        if (Files.isDirectory(path)) {
            return openFolder(path);
        }
        if (!Files.exists(path)) {
            throw InvalidInputException.of(
                    path.toString(),
                    "no such file or folder",
                    "a .safetensors file, a " + INDEX_SUFFIX + " or a model folder",
                    "nothing at that path");
        }
        String name = path.getFileName().toString();
        if (name.endsWith(INDEX_SUFFIX)) {
            Path abs = path.toAbsolutePath();
            return openSharded(path, abs.getParent(), abs);
        }
        return openSingle(path, path, name);
    }

    /**
     * The command a refusal of a pickle-only folder suggests (followed by the folder and a new output folder): loads
     * the checkpoint with the class its config.json names and saves it again, which transformers does as safetensors.
     */
    public static final String CONVERT_PICKLES = "python -c \"import sys, json, transformers as t; a = json.load(open("
            + "sys.argv[1] + '/config.json'))['architectures'][0]; getattr(t, a).from_pretrained(sys.argv[1])"
            + ".save_pretrained(sys.argv[2])\"";

    private static SafetensorsCheckpoint openFolder(Path dir) {
        List<String> indexes = new ArrayList<>();
        List<String> files = new ArrayList<>();
        List<String> pickles = new ArrayList<>();
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir)) {
            for (Path p : ds) {
                String n = p.getFileName().toString();
                if (!Files.isRegularFile(p)) {
                    continue;
                }
                if (n.endsWith(INDEX_SUFFIX)) {
                    indexes.add(n);
                } else if (n.endsWith(FILE_SUFFIX)) {
                    files.add(n);
                } else if (n.endsWith(".bin") || n.endsWith(".pt") || n.endsWith(".pth") || n.endsWith(".ckpt")) {
                    pickles.add(n);
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(dir + ": cannot list the model folder", e);
        }
        Collections.sort(indexes);
        Collections.sort(files);
        if (indexes.size() > 1) {
            throw InvalidInputException.of(
                    dir.toString(), "ambiguous model folder", "exactly one *" + INDEX_SUFFIX, indexes);
        }
        if (indexes.size() == 1) {
            Path abs = dir.toAbsolutePath();
            return openSharded(dir, abs, abs.resolve(indexes.get(0)));
        }
        if (files.size() == 1) {
            return openSingle(dir, dir.resolve(files.get(0)), files.get(0));
        }
        if (files.isEmpty() && !pickles.isEmpty()) {
            Collections.sort(pickles);
            String shown = pickles.size() > 2
                    ? pickles.get(0) + " … " + pickles.get(pickles.size() - 1) + " (" + pickles.size() + " files)"
                    : String.join(", ", pickles);
            throw new InvalidInputException(dir + ": only PyTorch pickle weights in the folder, which Scion does not"
                    + " read (unpickling can run code); expected a *" + FILE_SUFFIX + " file or a *" + INDEX_SUFFIX
                    + ", found " + shown + "; hint: convert it once with transformers (which writes safetensors)"
                    + " into a new folder and copy the tokenizer files beside it: " + CONVERT_PICKLES + " " + dir
                    + " " + dir + "-safetensors");
        }
        if (files.isEmpty()) {
            throw InvalidInputException.of(
                    dir.toString(),
                    "no safetensors checkpoint in the folder",
                    "a *" + FILE_SUFFIX + " file or a *" + INDEX_SUFFIX,
                    "neither");
        }
        throw InvalidInputException.of(
                dir.toString(),
                "several safetensors files but no index",
                "one *" + FILE_SUFFIX + " file or a *" + INDEX_SUFFIX,
                files);
    }

    private static FileChannel openChannel(Path file, String where) {
        try {
            return FileChannel.open(file, StandardOpenOption.READ);
        } catch (IOException e) {
            throw new UncheckedIOException(where + ": cannot open " + file, e);
        }
    }

    private static SafetensorsCheckpoint openSingle(Path location, Path file, String displayName) {
        FileChannel ch = openChannel(file, displayName);
        try {
            SafetensorsHeader h = SafetensorsHeader.read(ch, displayName);
            SafetensorsCheckpoint.Shard s = shard(displayName, file, ch, h);
            return new SafetensorsCheckpoint(location, null, List.of(s), Map.of(), OptionalLong.empty(), List.of(ch));
        } catch (RuntimeException e) {
            closeAll(List.of(ch), e);
            throw e;
        }
    }

    private static SafetensorsCheckpoint.Shard shard(String name, Path file, FileChannel ch, SafetensorsHeader h) {
        List<Tensor> ts = new ArrayList<>(h.entries.size());
        for (SafetensorsHeader.Entry e : h.entries) {
            ts.add(new MappedTensor(
                    e.name(), e.dtype(), e.shape(), new FileRegion(file, ch, h.dataStart + e.begin(), e.length())));
        }
        return new SafetensorsCheckpoint.Shard(name, file, h.headerSize, h.fileSize, h.metadata, ts);
    }

    /** The parsed index: weight_map in file order plus metadata. */
    private static final class Index {
        final Map<String, String> weightMap = new LinkedHashMap<>();
        final Map<String, String> metadata = new LinkedHashMap<>();
        OptionalLong totalSize = OptionalLong.empty();
        boolean hasWeightMap;
    }

    private static SafetensorsCheckpoint openSharded(Path location, Path folder, Path indexPath) {
        String idx = folder.relativize(indexPath).toString();
        Index index = readIndex(indexPath, idx);

        // Shard file (normalised, relative to the folder) -> tensors the index places there, in index order.
        Map<String, List<String>> byShard = new TreeMap<>();
        Map<String, String> shardOf = new HashMap<>();
        for (Map.Entry<String, String> e : index.weightMap.entrySet()) {
            String rel = checkShardPath(folder, e.getValue(), idx, e.getKey());
            byShard.computeIfAbsent(rel, k -> new ArrayList<>()).add(e.getKey());
            shardOf.put(e.getKey(), rel);
        }

        List<FileChannel> channels = new ArrayList<>();
        try {
            List<SafetensorsCheckpoint.Shard> shards = new ArrayList<>();
            Map<String, String> storedIn = new HashMap<>();
            for (String rel : byShard.keySet()) {
                Path file = folder.resolve(rel);
                FileChannel ch = openChannel(file, rel);
                channels.add(ch);
                SafetensorsHeader h = SafetensorsHeader.read(ch, rel);
                for (SafetensorsHeader.Entry e : h.entries) {
                    String other = storedIn.putIfAbsent(e.name(), rel);
                    if (other != null) {
                        throw InvalidInputException.of(
                                rel + ": tensor '" + e.name() + "'",
                                "tensor is stored in two shards",
                                "each tensor in one shard",
                                "'" + other + "' and '" + rel + "'");
                    }
                    String mapped = shardOf.get(e.name());
                    if (mapped == null) {
                        throw InvalidInputException.of(
                                rel + ": tensor '" + e.name() + "'",
                                "tensor is not listed in " + idx,
                                "every stored tensor in weight_map",
                                "no weight_map entry");
                    }
                    if (!mapped.equals(rel)) {
                        throw InvalidInputException.of(
                                rel + ": tensor '" + e.name() + "'",
                                "weight_map in " + idx + " places the tensor in another shard",
                                "'" + rel + "'",
                                "'" + mapped + "'");
                    }
                }
                shards.add(shard(rel, file, ch, h));
            }
            for (Map.Entry<String, String> e : index.weightMap.entrySet()) {
                if (!storedIn.containsKey(e.getKey())) {
                    throw InvalidInputException.of(
                            idx + ": tensor '" + e.getKey() + "'",
                            "tensor listed in weight_map is missing from its shard",
                            "the tensor in the header of '" + shardOf.get(e.getKey()) + "'",
                            "no such tensor");
                }
            }
            return new SafetensorsCheckpoint(location, indexPath, shards, index.metadata, index.totalSize, channels);
        } catch (RuntimeException e) {
            closeAll(channels, e);
            throw e;
        }
    }

    /** Shard names must be plain relative paths of existing files inside the folder; returns the normalised name. */
    private static String checkShardPath(Path folder, String file, String idx, String tensor) {
        String where = idx + ": tensor '" + tensor + "'";
        String expected = "a relative file name inside the model folder";
        Path rel;
        try {
            rel = Path.of(file);
        } catch (InvalidPathException e) {
            throw InvalidInputException.of(where, "shard file name is not a valid path", expected, "'" + file + "'");
        }
        if (file.isEmpty() || rel.isAbsolute() || file.startsWith("/") || file.indexOf('\\') >= 0) {
            throw InvalidInputException.of(
                    where, "shard path is not a relative path inside the model folder", expected, "'" + file + "'");
        }
        for (Iterator<Path> it = rel.iterator(); it.hasNext(); ) {
            if ("..".equals(it.next().toString())) {
                throw InvalidInputException.of(
                        where, "shard path escapes the model folder", expected, "'" + file + "'");
            }
        }
        Path norm = rel.normalize();
        if (norm.toString().isEmpty()) {
            throw InvalidInputException.of(where, "shard path names the folder itself", expected, "'" + file + "'");
        }
        if (!Files.isRegularFile(folder.resolve(norm))) {
            throw InvalidInputException.of(
                    where,
                    "shard file is missing",
                    "'" + norm + "' in " + folder,
                    Files.exists(folder.resolve(norm)) ? "something that is not a file" : "no such file");
        }
        return norm.toString();
    }

    private static Index readIndex(Path indexPath, String idx) {
        String text;
        try {
            long size = Files.size(indexPath);
            if (size > MAX_INDEX_SIZE) {
                throw InvalidInputException.of(
                        idx, "index file too large", "at most " + MAX_INDEX_SIZE + " bytes", size + " bytes");
            }
            byte[] bytes = Files.readAllBytes(indexPath);
            text = StandardCharsets.UTF_8
                    .newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(bytes))
                    .toString();
        } catch (CharacterCodingException e) {
            throw InvalidInputException.of(idx, "index is not valid UTF-8", "UTF-8 JSON text", "invalid bytes");
        } catch (IOException e) {
            throw new UncheckedIOException(idx + ": cannot read the index", e);
        }
        Index index = new Index();
        String tensor = null; // weight_map key being read
        boolean inWeightMap = false;
        JsonParser p = null;
        try {
            p = JSON.createParser(text);
            if (p.nextToken() != JsonToken.START_OBJECT) {
                throw InvalidInputException.of(idx, "index is not a JSON object", "'{'", String.valueOf(p.getText()));
            }
            while (p.nextToken() == JsonToken.FIELD_NAME) {
                String field = p.currentName();
                JsonToken t = p.nextToken();
                if ("weight_map".equals(field)) {
                    if (t != JsonToken.START_OBJECT) {
                        throw InvalidInputException.of(
                                idx,
                                "'weight_map' is not an object",
                                "an object of tensor name to shard file",
                                p.getText());
                    }
                    index.hasWeightMap = true;
                    inWeightMap = true;
                    while (p.nextToken() == JsonToken.FIELD_NAME) {
                        tensor = p.currentName();
                        JsonToken v = p.nextToken();
                        if (v != JsonToken.VALUE_STRING) {
                            throw InvalidInputException.of(
                                    idx + ": tensor '" + tensor + "'",
                                    "weight_map value is not a file name",
                                    "a string",
                                    v == JsonToken.START_OBJECT
                                            ? "an object"
                                            : v == JsonToken.START_ARRAY ? "a list" : p.getText());
                        }
                        index.weightMap.put(tensor, p.getText());
                    }
                    inWeightMap = false;
                    tensor = null;
                } else if ("metadata".equals(field) && t == JsonToken.START_OBJECT) {
                    JsonNode node = TREE.readValue(p);
                    for (Map.Entry<String, JsonNode> m : node.properties()) {
                        JsonNode v = m.getValue();
                        index.metadata.put(m.getKey(), v.isTextual() ? v.textValue() : v.toString());
                        if ("total_size".equals(m.getKey()) && v.isIntegralNumber() && v.canConvertToLong()) {
                            index.totalSize = OptionalLong.of(v.longValue());
                        }
                    }
                } else {
                    p.skipChildren();
                }
            }
            if (p.nextToken() != null) {
                throw InvalidInputException.of(
                        idx, "index has content after its JSON object", "end of file", p.getText());
            }
        } catch (JsonProcessingException e) {
            String msg = e.getOriginalMessage();
            if (inWeightMap && msg != null && msg.startsWith("Duplicate")) {
                String key = currentName(p);
                throw InvalidInputException.of(
                        idx + ": tensor '" + key + "'",
                        "tensor listed twice in weight_map",
                        "each tensor once",
                        "'" + key + "' twice");
            }
            throw new InvalidInputException(
                    idx + (tensor == null ? "" : ": tensor '" + tensor + "'")
                            + ": index is not valid JSON; expected a JSON object, found " + msg,
                    e);
        } catch (IOException e) {
            throw new UncheckedIOException(idx + ": cannot parse the index", e);
        }
        if (!index.hasWeightMap) {
            throw InvalidInputException.of(
                    idx, "index has no 'weight_map'", "an object of tensor name to shard file", "no such field");
        }
        return index;
    }

    private static String currentName(JsonParser p) {
        try {
            return p.currentName();
        } catch (IOException e) {
            return "?";
        }
    }

    private static void closeAll(List<FileChannel> channels, RuntimeException failure) {
        for (FileChannel ch : channels) {
            try {
                ch.close();
            } catch (IOException e) {
                failure.addSuppressed(e);
            }
        }
    }
}
