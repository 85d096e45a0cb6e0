package scion.cli;

import com.fasterxml.jackson.core.JsonProcessingException;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;
import scion.io.InvalidInputException;
import scion.io.Json;
import scion.io.Model;
import scion.io.Provenance;
import scion.io.config.ModelConfig;
import scion.io.onnx.OnnxWriter;
import scion.io.safetensors.SafetensorsWriter;
import scion.io.tensor.DType;
import scion.io.tensor.Tensor;

/**
 * {@code scion convert IN OUT}: safetensors → safetensors (re-typed, re-sharded) and ONNX → ONNX (re-typed
 * initializers behind Cast nodes, external data on or off). The output is staged, re-read and renamed into place.
 */
@Command(
        name = "convert",
        description = {
            "Re-type and re-shard a checkpoint: safetensors → safetensors, ONNX → ONNX (graph kept).",
            "Floating-point tensors are converted with round-to-nearest-even; integer tensors keep their dtype."
        },
        mixinStandardHelpOptions = true)
final class ConvertCommand implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "IN", description = "A Hugging Face folder, a .safetensors or an .onnx file.")
    Path in;

    @Parameters(
            index = "1",
            paramLabel = "OUT",
            description = "A folder (or a .safetensors file) for safetensors input; an .onnx file for ONNX input.")
    Path out;

    @Option(names = "--dtype", paramLabel = "f32|f16|bf16", description = "Store floating-point weights in this dtype.")
    String dtype;

    @Mixin
    ShardOptions shards;

    @Option(
            names = "--external-data",
            paramLabel = "auto|on|off",
            defaultValue = "auto",
            description = "ONNX: put weights in OUT.data (auto: only when the model would pass 2 GiB).")
    String externalData;

    @Mixin
    OutputOptions output;

    @Spec
    picocli.CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws JsonProcessingException {
        DType target = dtype == null ? null : parseDtype(dtype);
        Map<String, Object> summary = new LinkedHashMap<>();
        try (Model m = Model.open(in)) {
            Map<String, String> params = new LinkedHashMap<>();
            params.put("dtype", dtype == null ? "keep" : target.shortName());
            boolean outOnnx = out.getFileName().toString().endsWith(".onnx");
            if (m.format() == Model.Format.ONNX) {
                if (!outOnnx) {
                    throw InvalidInputException.of(
                            out.toString(), "ONNX input converts to ONNX", "an output path ending in .onnx", out);
                }
                shards.refuseForOnnx();
                OnnxWriter.ExternalData ext = OnnxWriter.ExternalData.parse(externalData);
                params.put("external_data", ext.shortName());
                Map<String, String> meta = Provenance.of(
                        Scion.version(),
                        "convert",
                        params,
                        Map.of(in.getFileName().toString(), m.checkpoint()));
                OnnxWriter.Options opts = OnnxWriter.Options.defaults()
                        .withForce(output.force)
                        .withExternalData(ext)
                        .withStoreFloatsAs(target == DType.F32 ? null : target)
                        .withMetadata(meta);
                OnnxWriter.Written w = OnnxWriter.write(m.onnx().orElseThrow(), Map.of(), out, opts);
                summary.put("output", w.model().toString());
                summary.put("model_bytes", w.modelBytes());
                w.dataFile().ifPresent(p -> summary.put("external_data", p.toString()));
                summary.put("data_bytes", w.dataBytes());
                summary.put("retyped_initializers", w.retyped().size());
            } else {
                if (outOnnx) {
                    throw InvalidInputException.of(
                            out.toString(),
                            "safetensors input converts to safetensors",
                            "an output folder or .safetensors file",
                            out + "; hint: a runnable ONNX graph comes from 'scion export'");
                }
                if (!"auto".equals(externalData)) {
                    throw InvalidInputException.of(
                            "--external-data",
                            "external data applies to ONNX output",
                            "no --external-data",
                            externalData);
                }
                long shard = shards.bytes();
                params.put("shard_size", shards.describe());
                writeSafetensors(m, target, shard, params, summary);
            }
        }
        output.print(summary, spec.commandLine().getOut(), 22);
        return ExitCodes.OK;
    }

    private void writeSafetensors(
            Model m, DType target, long shard, Map<String, String> params, Map<String, Object> summary) {
        List<Tensor> tensors = new ArrayList<>();
        for (Tensor t : m.checkpoint().tensors()) {
            tensors.add(target != null && t.dtype().isFloatingPoint() ? t.as(target) : t);
        }
        Map<String, String> meta = new LinkedHashMap<>(m.checkpoint().metadata());
        meta.putAll(Provenance.of(
                Scion.version(), "convert", params, Map.of(in.getFileName().toString(), m.checkpoint())));
        boolean folder = !out.getFileName().toString().endsWith(".safetensors");
        if (!folder && shard != SafetensorsWriter.UNSHARDED) {
            throw InvalidInputException.of(
                    out.toString(),
                    "a sharded checkpoint needs an output folder",
                    "a folder path",
                    "a .safetensors file");
        }
        ModelConfig cfg = m.config();
        if (target != null) {
            cfg = cfg.with(ModelConfig.Field.DTYPE, torchName(target));
        }
        CheckpointFolder.Written w = CheckpointFolder.at(out, meta)
                .force(output.force)
                .shardSize(shard)
                .companionsFrom(m.location())
                .write(tensors, cfg.toJson());
        summary.put("output", out.toString());
        summary.put("files", w.files().size());
        summary.put("tensor_bytes", w.tensorBytes());
        summary.put("dtype", target == null ? "unchanged" : target.shortName());
    }

    /** Non-weight files of a Hugging Face folder that travel with the weights (tokenizer, generation config). */
    static List<Path> companionFiles(Path location) {
        List<Path> out = new ArrayList<>();
        if (!Files.isDirectory(location)) {
            return out;
        }
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(location)) {
            for (Path p : ds) {
                String n = p.getFileName().toString();
                if (Files.isRegularFile(p)
                        && !n.endsWith(".safetensors")
                        && !n.endsWith(".safetensors.index.json")
                        && !n.equals("config.json")
                        && !n.equals("scion-recipe.json")
                        && !n.startsWith(".")) {
                    out.add(p);
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(location + ": cannot list the model folder", e);
        }
        out.sort(null);
        return out;
    }

    static byte[] recipe(Map<String, String> provenance) {
        try {
            return (Json.mapper().writeValueAsString(provenance) + "\n").getBytes(StandardCharsets.UTF_8);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("cannot serialise the recipe", e);
        }
    }

    private static String torchName(DType d) {
        switch (d) {
            case F16:
                return "float16";
            case BF16:
                return "bfloat16";
            case F64:
                return "float64";
            default:
                return "float32";
        }
    }

    private static DType parseDtype(String s) {
        DType d = DType.parse(s);
        if (d != DType.F32 && d != DType.F16 && d != DType.BF16) {
            throw InvalidInputException.of("--dtype", "unsupported target dtype", "f32, f16 or bf16", "'" + s + "'");
        }
        return d;
    }
}
