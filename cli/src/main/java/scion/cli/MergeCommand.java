package scion.cli;

import com.fasterxml.jackson.core.JsonProcessingException;
import java.io.IOException;
import java.io.PrintWriter;
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
import scion.io.Checkpoint;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.Provenance;
import scion.io.onnx.OnnxWriter;
import scion.io.tensor.Tensor;
import scion.io.tensor.TensorEngine;
import scion.merge.ImportanceProvider;
import scion.merge.MergeConfig;
import scion.merge.MergeMethod;
import scion.merge.MergeMethods;
import scion.merge.MergePlan;
import scion.merge.MergeStages;
import scion.merge.Merger;

/**
 * {@code scion merge CONFIG.yml OUT} (a mergekit YAML recipe) or {@code scion merge --method M [--base B] [--param
 * k=v ...] A B [C ...] OUT}: several checkpoints merged into one, streamed tensor by tensor (each output tensor is
 * read from every input, merged in float32, written and dropped). A YAML of several documents is a multi-stage recipe
 * as mergekit-multi runs it ({@link MergeStages}): stages run in dependency order, named stages into a staging area
 * beside OUT that is removed at the end, the final stage into OUT.
 */
@Command(
        name = "merge",
        description = {
            "Merge checkpoints with mergekit's methods and YAML: linear, slerp, nuslerp, multislerp, karcher,"
                    + " task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs, breadcrumbs_ties, della,"
                    + " della_linear, sce, model_stock, nearswap, arcee_fusion, ram, passthrough (slices), and fisher"
                    + " (Fisher-weighted averaging, diagonal Fisher estimated on --calib TEXT).",
            "Safetensors folders (sharded) or ONNX files (weights matched by role and layer; the base's graph is"
                    + " kept), or hub references org/name[@rev] already in the local Hugging Face cache. Streamed:"
                    + " peak memory about (models + 2) x the largest tensor.",
            "A YAML of several documents (---) runs as mergekit-multi: each stage has a name, later stages use"
                    + " earlier ones by name, the unnamed (or last) stage is written to OUT; intermediates are"
                    + " staged beside OUT and removed."
        },
        mixinStandardHelpOptions = true)
final class MergeCommand implements Callable<Integer> {
    @Parameters(
            paramLabel = "INPUTS",
            arity = "1..*",
            description = "CONFIG.yml OUT, or (with --method) the models A B ... followed by OUT.")
    List<Path> args;

    @Option(
            names = "--method",
            paramLabel = "M",
            description = "Merge the listed models with method M instead of reading a YAML config.")
    String method;

    @Option(names = "--base", paramLabel = "B", description = "The base model (with --method).")
    Path base;

    @Option(
            names = "--param",
            paramLabel = "K=V",
            description = "A top-level parameter (with --method), e.g. t=0.5, density=0.5, weight=[1,0.5] for a"
                    + " gradient. Methods with a per-model weight default it to 1.")
    List<String> params = new ArrayList<>();

    @Option(
            names = "--seed",
            paramLabel = "S",
            defaultValue = "0",
            description = "Seed of randomised methods (dare, della, arcee_fusion sampling). Default: ${DEFAULT-VALUE}.")
    long seed;

    @Mixin
    ShardOptions shards;

    @Mixin
    OutputOptions output;

    @Mixin
    CalibrationOptions calib;

    @Mixin
    ThreadOptions threads;

    @Spec
    picocli.CommandLine.Model.CommandSpec spec;

    /**
     * Per-element importance for methods that need it (Fisher merging); null for mergekit's methods. Set by options
     * that estimate it (calibration text) before {@link #call()} writes.
     */
    ImportanceProvider importance;

    @Override
    public Integer call() throws JsonProcessingException {
        if (args.size() < 2) {
            throw InvalidInputException.of(
                    "scion merge", "needs inputs and an output", "CONFIG.yml OUT or --method M A B ... OUT", args);
        }
        Path out = args.get(args.size() - 1);
        MergeConfig config;
        byte[] yaml = null;
        if (method == null) {
            if (args.size() != 2) {
                throw InvalidInputException.of(
                        "scion merge",
                        "without --method, takes a config and an output",
                        "CONFIG.yml OUT (or --method M A B ... OUT)",
                        args.size() + " arguments");
            }
            if (base != null || !params.isEmpty()) {
                throw InvalidInputException.of(
                        base != null ? "--base" : "--param",
                        "applies with --method",
                        "base_model/parameters in the YAML config",
                        "a config file");
            }
            Path cfg = args.get(0);
            MergeStages stages = MergeStages.read(cfg);
            try {
                yaml = Files.readAllBytes(cfg);
            } catch (IOException e) {
                throw InvalidInputException.of(cfg.toString(), "cannot read", "a readable file", e.getMessage());
            }
            if (stages.multiStage()) {
                return runStages(stages, yaml, out);
            }
            config = stages.last().config();
        } else {
            List<String> models = new ArrayList<>();
            for (Path p : args.subList(0, args.size() - 1)) {
                models.add(p.toString());
            }
            Map<String, String> p = new LinkedHashMap<>();
            for (String kv : params) {
                int i = kv.indexOf('=');
                if (i <= 0) {
                    throw InvalidInputException.of("--param", "not a key=value pair", "e.g. t=0.5", "'" + kv + "'");
                }
                p.put(kv.substring(0, i).trim(), kv.substring(i + 1).trim());
            }
            MergeMethod m = MergeMethods.byId(method, "--method");
            for (MergeMethod.Param mp : m.params()) {
                if (mp.name().equals("weight") && mp.required() && !p.containsKey("weight")) {
                    p.put("weight", "1");
                }
            }
            config = MergeConfig.ofModels(method, base == null ? null : base.toString(), models, p, null);
        }
        Map<String, Object> summary = runOne(config, yaml, out, output.force, "merging", Map.of(), false);
        output.print(summary, spec.commandLine().getOut(), 15);
        return ExitCodes.OK;
    }

    /**
     * Runs a multi-stage recipe ({@link MergeStages}): each named stage into a staging area next to {@code out}
     * (removed at the end, whatever happens), the final stage into {@code out}. Every reference was checked when the
     * recipe was read; an existing {@code out} without {@code --force} is refused before the first stage runs.
     */
    private Integer runStages(MergeStages stages, byte[] yaml, Path out) throws JsonProcessingException {
        Path dest = out.toAbsolutePath().normalize();
        if (Files.exists(dest, java.nio.file.LinkOption.NOFOLLOW_LINKS) && !output.force) {
            throw InvalidInputException.of(
                    dest.toString(), "output already exists", "a new path (or --force)", "an existing file or folder");
        }
        Path staging;
        try {
            Files.createDirectories(dest.getParent());
            staging = Files.createTempDirectory(dest.getParent(), "." + dest.getFileName() + ".stages-");
        } catch (IOException e) {
            throw InvalidInputException.of(
                    dest.getParent().toString(),
                    "cannot create the staging area for intermediate stages",
                    "a writable folder",
                    e.getMessage());
        }
        PrintWriter err = spec.commandLine().getErr();
        Map<String, Path> produced = new LinkedHashMap<>();
        Map<String, String> display = new LinkedHashMap<>();
        List<String> report = new ArrayList<>();
        Map<String, Object> summary = null;
        int n = stages.stages().size();
        try {
            for (int i = 0; i < n; i++) {
                MergeStages.Stage st = stages.stages().get(i);
                boolean last = i == n - 1;
                String label = "stage " + (i + 1) + "/" + n + " " + st.label();
                err.println("scion merge: " + label + " (" + st.config().method() + ")" + (last ? " -> " + out : ""));
                err.flush();
                MergeConfig bound = MergeStages.bind(st, produced);
                Path target = last ? out : staging.resolve("stage-" + (i + 1));
                Map<String, Object> s;
                try {
                    s = runOne(bound, yaml, target, last && output.force, label + ": merging", display, !last);
                } catch (InvalidInputException e) {
                    throw new InvalidInputException(label + ": " + e.getMessage(), e);
                }
                if (!last) {
                    Path written = Path.of(s.get("output").toString());
                    produced.put(st.name(), written);
                    display.put(written.toString(), "stage " + st.label());
                }
                report.add(
                        label + ": " + st.config().method() + ", " + s.get("models") + ", " + s.get("seconds") + " s");
                summary = s;
            }
        } finally {
            deleteTree(staging);
        }
        summary.put("stages", report);
        output.print(summary, spec.commandLine().getOut(), 15);
        return ExitCodes.OK;
    }

    /**
     * Plans and writes one merge into {@code out}. {@code display} renames model references (an intermediate stage's
     * staged path → its stage name) in the report and provenance; {@code intermediate} lets an ONNX merge choose its
     * own file name ({@code out + ".onnx"}).
     */
    private Map<String, Object> runOne(
            MergeConfig config,
            byte[] yaml,
            Path out,
            boolean force,
            String label,
            Map<String, String> display,
            boolean intermediate) {
        Map<String, Object> summary = new LinkedHashMap<>();
        ImportanceProvider importance = this.importance;
        try (MergePlan plan = MergePlan.open(config);
                FisherRun fisher = FisherRun.ifNeeded(
                        plan,
                        config,
                        calib,
                        spec.commandLine().getParseResult(),
                        seed,
                        out,
                        spec.commandLine().getErr());
                TensorEngine engine = TensorEngine.of(threads.threads())) {
            if (fisher != null) {
                importance = fisher.importance();
                summary.put("fisher", fisher.report());
            }
            Merger merger = new Merger(plan.models(), importance, seed, engine);
            merger.checkMemory(plan.jobs());
            Map<String, String> prov = new LinkedHashMap<>();
            for (Map.Entry<String, String> e : plan.describe().entrySet()) {
                String v = e.getValue();
                for (Map.Entry<String, String> d : display.entrySet()) {
                    v = v.replace(d.getKey(), d.getValue());
                }
                prov.put(e.getKey(), v);
            }
            prov.put("seed", Long.toString(seed));
            Map<String, Checkpoint> inputs = new LinkedHashMap<>();
            List<String> names = new ArrayList<>();
            for (int i = 0; i < plan.models().size(); i++) {
                String name = plan.modelNames().get(i);
                name = display.getOrDefault(name, name);
                names.add(name);
                inputs.put(name, plan.models().get(i).checkpoint());
            }
            Map<String, String> meta = Provenance.of(Scion.version(), "merge", prov, inputs);
            Model ref = plan.reference();
            long total = 0;
            for (Merger.Job j : plan.jobs()) {
                total += Math.multiplyExact(j.dtype().size(), numel(j.shape()));
            }
            long start = System.nanoTime();
            if (ref.format() == Model.Format.ONNX) {
                if (intermediate) {
                    out = out.resolveSibling(out.getFileName() + ".onnx");
                }
                if (!out.getFileName().toString().endsWith(".onnx")) {
                    throw InvalidInputException.of(
                            out.toString(), "ONNX models merge into an ONNX file", "a path ending in .onnx", out);
                }
                shards.refuseForOnnx();
                OnnxWriter.Written w;
                try (Progress bar = Progress.forTerminal(label, total)) {
                    Map<String, Tensor> repl = plan.replacements(merger);
                    w = OnnxWriter.write(
                            ref.onnx().orElseThrow(),
                            progress(repl, bar),
                            out,
                            OnnxWriter.Options.defaults().withForce(force).withMetadata(meta));
                }
                summary.put("output", w.model().toString());
                w.dataFile().ifPresent(p -> summary.put("external_data", p.toString()));
            } else {
                if (out.getFileName().toString().endsWith(".onnx")
                        || out.getFileName().toString().endsWith(".safetensors")) {
                    throw InvalidInputException.of(
                            out.toString(), "a merged model needs its own config.json", "an output folder", out);
                }
                long shard = shards.bytes();
                CheckpointFolder folder = CheckpointFolder.at(out, meta)
                        .force(force)
                        .shardSize(shard)
                        .companionsFrom(plan.tokenizerFrom())
                        .skipCompanion("mergekit_config.yml")
                        .label(label);
                if (yaml != null) {
                    folder.file("mergekit_config.yml", yaml);
                }
                CheckpointFolder.Written w =
                        folder.write(plan.tensors(merger), plan.outputConfig().toJson());
                summary.put("output", out.toString());
                summary.put("files", w.files().size());
            }
            double secs = (System.nanoTime() - start) / 1e9;
            summary.put("method", plan.method().id());
            summary.put("models", names);
            summary.put("family", ref.graph().architecture().family());
            summary.put("layers", plan.layers());
            summary.put("merged_tensors", plan.jobs().size());
            summary.put("copied_tensors", plan.copied());
            summary.put("tensor_bytes", total);
            summary.put("seconds", Math.round(secs * 100) / 100.0);
            String tok = plan.tokenizerFrom().toString();
            summary.put("tokenizer_from", display.getOrDefault(tok, tok));
            if (!plan.notes().isEmpty()) {
                summary.put("notes", plan.notes());
            }
        }
        return summary;
    }

    /** Removes a staging area and everything in it (best effort: a file that cannot go is left). */
    private static void deleteTree(Path root) {
        if (!Files.exists(root, java.nio.file.LinkOption.NOFOLLOW_LINKS)) {
            return;
        }
        try (java.util.stream.Stream<Path> walk = Files.walk(root)) {
            List<Path> all = new ArrayList<>();
            walk.forEach(all::add);
            java.util.Collections.reverse(all);
            for (Path p : all) {
                Files.deleteIfExists(p);
            }
        } catch (IOException e) {
            // best effort: what remains is named in no output; the next run uses a fresh staging area
        }
    }

    private static long numel(long[] shape) {
        long n = 1;
        for (long d : shape) {
            n = Math.multiplyExact(n, d);
        }
        return n;
    }

    /** Wraps each replacement so the bar advances as the writer reads it (the ONNX writer has no progress hook). */
    private static Map<String, Tensor> progress(Map<String, Tensor> repl, Progress bar) {
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (Map.Entry<String, Tensor> e : repl.entrySet()) {
            Tensor t = e.getValue();
            out.put(e.getKey(), new Tensor() {
                @Override
                public String name() {
                    return t.name();
                }

                @Override
                public scion.io.tensor.DType dtype() {
                    return t.dtype();
                }

                @Override
                public long[] shape() {
                    return t.shape();
                }

                @Override
                public void readBytes(long byteOffset, java.nio.ByteBuffer dst) {
                    int before = dst.position();
                    t.readBytes(byteOffset, dst);
                    bar.advance(dst.position() - before);
                }
            });
        }
        return out;
    }
}
