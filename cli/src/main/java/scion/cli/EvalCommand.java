package scion.cli;

import com.fasterxml.jackson.core.JsonProcessingException;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;
import scion.io.runtime.Device;
import scion.io.runtime.Evaluation;
import scion.io.runtime.RuntimeModel;
import scion.io.runtime.TokenInputs;

/**
 * {@code scion eval MODEL --text FILE}: perplexity of a causal LM (sliding windows, next-token NLL in double
 * precision), or statistics of an encoder's mean-pooled sentence embeddings.
 */
@Command(
        name = "eval",
        description = {
            "Evaluate a model in ONNX Runtime on text (or random tokens).",
            "Causal LMs: perplexity over sliding windows (mean next-token NLL, log-softmax in double precision).",
            "Encoders: mean-pooled embedding per sentence: norms, pairwise cosines, anisotropy, first-component share."
        },
        mixinStandardHelpOptions = true)
final class EvalCommand implements Callable<Integer> {
    @Parameters(
            index = "0",
            paramLabel = "MODEL",
            description = "An .onnx file, or a safetensors folder / file (exported in memory).")
    Path model;

    @Mixin
    ValidateCommand.InputOptions inputs;

    @Option(names = "--json", description = "Print one JSON object instead of text.")
    boolean json;

    @Spec
    picocli.CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws JsonProcessingException {
        if ((inputs.text == null) == (inputs.randomTokens == null)) {
            throw new ParameterException(spec.commandLine(), "give exactly one of --text FILE or --random-tokens N");
        }
        Device device = inputs.device();
        Evaluation.Report report;
        try (RuntimeModel m = RuntimeModel.open(model, device)) {
            TokenInputs in = inputs.request().build(List.of(m));
            report = Evaluation.run(m, in, inputs.batch);
        }
        PrintWriter out = spec.commandLine().getOut();
        if (json) {
            out.println(ValidateCommand.jsonMapper().writeValueAsString(report));
        } else {
            printText(report, out);
        }
        out.flush();
        return ExitCodes.OK;
    }

    static void printText(Evaluation.Report r, PrintWriter o) {
        ValidateCommand.model(o, "model", r.model());
        o.printf(Locale.ROOT, "  %-10s %s%n", "inputs", r.inputs());
        if (r.perplexity() != null) {
            Evaluation.Perplexity p = r.perplexity();
            o.printf(
                    Locale.ROOT,
                    "  %-10s %.6g   (mean NLL %.6f nats = %.4f bits per token over %,d scored tokens)%n",
                    "perplexity",
                    p.perplexity(),
                    p.meanNll(),
                    p.bitsPerToken(),
                    p.scoredTokens());
            o.printf(
                    Locale.ROOT,
                    "  %-10s NLL p50 %.4f  p90 %.4f  p99 %.4f   top-1 accuracy %.2f %%%n",
                    "",
                    p.nllP50(),
                    p.nllP90(),
                    p.nllP99(),
                    100 * p.top1Accuracy());
        }
        if (r.embeddings() != null) {
            Evaluation.EmbeddingStatistics e = r.embeddings();
            o.printf(
                    Locale.ROOT,
                    "  %-10s %d mean-pooled embeddings of width %d (one per sequence)%n",
                    "embeddings",
                    e.embeddings(),
                    e.dimension());
            o.printf(
                    Locale.ROOT,
                    "  %-10s mean %.4f  std %.4f   p5 %.4f  p50 %.4f  p95 %.4f%n",
                    "norm",
                    e.normMean(),
                    e.normStd(),
                    e.normP5(),
                    e.normP50(),
                    e.normP95());
            o.printf(
                    Locale.ROOT,
                    "  %-10s mean %.4f   p5 %.4f  p50 %.4f  p95 %.4f   (pairs of distinct embeddings)%n",
                    "cosine",
                    e.meanPairwiseCosine(),
                    e.cosineP5(),
                    e.cosineP50(),
                    e.cosineP95());
            o.printf(
                    Locale.ROOT,
                    "  %-10s %.4f (expected cosine of two embeddings)   first principal component: %.2f %% of"
                            + " variance%n",
                    "anisotropy",
                    e.anisotropy(),
                    100 * e.firstComponentShare());
        }
    }
}
