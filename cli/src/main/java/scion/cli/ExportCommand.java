package scion.cli;

import com.fasterxml.jackson.core.JsonProcessingException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.onnx.OnnxWriter;
import scion.io.runtime.export.OnnxExporter;

/** {@code scion export MODEL OUT.onnx}: a runnable ONNX graph from a safetensors checkpoint of a known family. */
@Command(
        name = "export",
        description = {
            "Build a runnable ONNX model (opset 17) from a safetensors checkpoint: causal LMs output 'logits',",
            "encoders 'last_hidden_state' (and 'pooler_output' with a pooler); dynamic batch and sequence axes; weights in OUT.onnx.data by default."
        },
        mixinStandardHelpOptions = true)
final class ExportCommand implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "MODEL", description = "A Hugging Face safetensors folder.")
    Path model;

    @Parameters(index = "1", paramLabel = "OUT.onnx", description = "The ONNX file to write.")
    Path out;

    @Option(
            names = "--residual-stream",
            description =
                    "Also output hidden_states.0..L: the residual stream entering every layer and after the last.")
    boolean residualStream;

    @Option(
            names = "--external-data",
            paramLabel = "auto|on|off",
            defaultValue = "on",
            description = "Weights in OUT.onnx.data (on, default), inline (off), or only above 2 GiB (auto).")
    String externalData;

    @Mixin
    OutputOptions output;

    @Spec
    picocli.CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws JsonProcessingException {
        if (!out.getFileName().toString().endsWith(".onnx")) {
            throw InvalidInputException.of(out.toString(), "export writes an ONNX file", "a path ending in .onnx", out);
        }
        Map<String, Object> summary = new LinkedHashMap<>();
        try (Model m = Model.open(model)) {
            OnnxExporter.Options o = OnnxExporter.Options.defaults()
                    .withResidualStreamOutputs(residualStream)
                    .withExternalData(OnnxWriter.ExternalData.parse(externalData))
                    .withForce(output.force)
                    .withToolVersion(Scion.version());
            OnnxExporter.Exported e = OnnxExporter.export(m, o);
            OnnxWriter.Written w = OnnxExporter.write(e, out, o);
            summary.put("family", m.graph().architecture().family());
            summary.put("output", w.model().toString());
            summary.put("model_bytes", w.modelBytes());
            w.dataFile().ifPresent(p -> summary.put("external_data", p.toString()));
            summary.put("data_bytes", w.dataBytes());
            summary.put(
                    "outputs",
                    String.join(
                            ", ",
                            e.outputNames().stream()
                                    .filter(n -> !n.startsWith("hidden_states."))
                                    .collect(java.util.stream.Collectors.toList())));
            if (residualStream) {
                summary.put("residual_stream_outputs", m.graph().dims().layers() + 1);
            }
        }
        output.print(summary, spec.commandLine().getOut(), 24);
        return ExitCodes.OK;
    }
}
