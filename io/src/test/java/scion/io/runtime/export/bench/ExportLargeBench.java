package scion.io.runtime.export.bench;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtSession;
import java.io.IOException;
import java.nio.FloatBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import scion.io.Model;
import scion.io.onnx.OnnxWriter;
import scion.io.runtime.export.OnnxExporter;
import scion.io.safetensors.SafetensorsWriter;
import scion.io.safetensors.bench.GeneratedTensor;
import scion.io.safetensors.bench.MemorySampler;
import scion.io.tensor.DType;
import scion.io.tensor.Tensor;

/**
 * Large-export benchmark driven by {@code test/bench/export-large.sh} (not a unit test): a synthetic llama-shaped
 * float32 checkpoint above 2 GiB (hidden 2048, 10 layers, 16 heads, ffn 5632, vocab 32000, untied head: 645 M
 * parameters, 2.58 GB), generated lazily ({@link GeneratedTensor}: nothing held in memory), exported and run.
 *
 * <ul>
 *   <li>{@code generate DIR}: writes the checkpoint (config.json + two safetensors shards) with {@link
 *       SafetensorsWriter}.
 *   <li>{@code export DIR OUT.onnx}: {@link OnnxExporter#write} with external data ({@code OUT.onnx.data}).
 *   <li>{@code run OUT.onnx}: one ONNX Runtime session from the file, one forward pass on 1 × 16 tokens.
 *   <li>{@code memory DIR [copy]}: no written file: {@link OnnxExporter#export} then {@link
 *       OnnxExporter#openSession} and the same forward pass; the weights are referenced in the safetensors shards
 *       ({@link OnnxExporter.Handover#FILE_REFERENCES}), or with {@code copy} handed over from their mappings ({@link
 *       OnnxExporter.Handover#MEMORY}).
 * </ul>
 *
 * Each step prints its wall time and the sampled peaks of anonymous and file-backed resident memory.
 */
public final class ExportLargeBench {
    static final int HIDDEN = 2048;
    static final int LAYERS = 10;
    static final int HEADS = 16;
    static final int FFN = 5632;
    static final int VOCAB = 32000;

    private ExportLargeBench() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println(
                    "usage: ExportLargeBench generate DIR | export DIR OUT.onnx | run OUT.onnx | memory DIR [copy]");
            System.exit(2);
        }
        int rc;
        long t0 = System.nanoTime();
        try (MemorySampler mem = new MemorySampler()) {
            switch (args[0]) {
                case "generate":
                    rc = generate(Path.of(args[1]));
                    break;
                case "export":
                    rc = export(Path.of(args[1]), Path.of(args[2]));
                    break;
                case "run":
                    rc = runFile(Path.of(args[1]));
                    break;
                case "memory":
                    rc = runInMemory(
                            Path.of(args[1]),
                            args.length > 2 && args[2].equals("copy")
                                    ? OnnxExporter.Handover.MEMORY
                                    : OnnxExporter.Handover.FILE_REFERENCES);
                    break;
                default:
                    System.err.println("unknown step " + args[0]);
                    rc = 2;
            }
            System.out.printf(Locale.ROOT, "  %s: %.1f s; %s%n", args[0], (System.nanoTime() - t0) / 1e9, mem.report());
        }
        System.exit(rc);
    }

    static List<Tensor> tensors() {
        List<Tensor> t = new ArrayList<>();
        long seed = 1;
        t.add(new GeneratedTensor("model.embed_tokens.weight", DType.F32, new long[] {VOCAB, HIDDEN}, seed++));
        for (int l = 0; l < LAYERS; l++) {
            String p = "model.layers." + l + ".";
            t.add(new GeneratedTensor(p + "input_layernorm.weight", DType.F32, new long[] {HIDDEN}, seed++));
            for (String proj : List.of("q_proj", "k_proj", "v_proj", "o_proj")) {
                t.add(new GeneratedTensor(
                        p + "self_attn." + proj + ".weight", DType.F32, new long[] {HIDDEN, HIDDEN}, seed++));
            }
            t.add(new GeneratedTensor(p + "post_attention_layernorm.weight", DType.F32, new long[] {HIDDEN}, seed++));
            t.add(new GeneratedTensor(p + "mlp.gate_proj.weight", DType.F32, new long[] {FFN, HIDDEN}, seed++));
            t.add(new GeneratedTensor(p + "mlp.up_proj.weight", DType.F32, new long[] {FFN, HIDDEN}, seed++));
            t.add(new GeneratedTensor(p + "mlp.down_proj.weight", DType.F32, new long[] {HIDDEN, FFN}, seed++));
        }
        t.add(new GeneratedTensor("model.norm.weight", DType.F32, new long[] {HIDDEN}, seed++));
        t.add(new GeneratedTensor("lm_head.weight", DType.F32, new long[] {VOCAB, HIDDEN}, seed));
        return t;
    }

    static String config() {
        return "{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": " + HIDDEN
                + ", \"intermediate_size\": " + FFN + ", \"num_hidden_layers\": " + LAYERS
                + ", \"num_attention_heads\": " + HEADS + ", \"num_key_value_heads\": " + HEADS
                + ", \"vocab_size\": " + VOCAB + ", \"max_position_embeddings\": 4096, \"rms_norm_eps\": 1e-05,"
                + " \"rope_theta\": 10000.0, \"hidden_act\": \"silu\", \"tie_word_embeddings\": false,"
                + " \"torch_dtype\": \"float32\"}\n";
    }

    static int generate(Path dir) {
        List<Tensor> ts = tensors();
        long bytes = 0;
        for (Tensor t : ts) {
            bytes += t.byteSize();
        }
        try (SafetensorsWriter.Output out =
                SafetensorsWriter.create().shardSize(2_000_000_000L).open(dir)) {
            out.writeTensors(ts);
            out.addFile("config.json", config().getBytes(StandardCharsets.UTF_8));
            List<Path> files = out.commit();
            System.out.printf(
                    Locale.ROOT,
                    "  generated %d tensors, %.2f GB (%.2f GiB) in %d files%n",
                    ts.size(),
                    bytes / 1e9,
                    bytes / (double) (1L << 30),
                    files.size());
        }
        return 0;
    }

    static int export(Path dir, Path out) throws IOException {
        try (Model m = Model.open(dir)) {
            OnnxWriter.Written w = OnnxExporter.write(
                    m, out, OnnxExporter.Options.defaults().withExternalData(OnnxWriter.ExternalData.ON));
            System.out.printf(
                    Locale.ROOT,
                    "  wrote %s (%d bytes) + %s (%.2f GB)%n",
                    w.model().getFileName(),
                    w.modelBytes(),
                    w.dataFile().map(p -> p.getFileName().toString()).orElse("-"),
                    w.dataBytes() / 1e9);
        }
        return Files.size(out) < (1 << 20) ? 0 : 1;
    }

    static int runFile(Path onnx) throws Exception {
        OrtEnvironment env = OrtEnvironment.getEnvironment();
        try (OrtSession.SessionOptions o = new OrtSession.SessionOptions()) {
            long t = System.nanoTime();
            try (OrtSession s = env.createSession(onnx.toString(), o)) {
                System.out.printf(Locale.ROOT, "  session created in %.1f s%n", (System.nanoTime() - t) / 1e9);
                return forward(env, s);
            }
        }
    }

    static int runInMemory(Path dir, OnnxExporter.Handover how) throws Exception {
        OrtEnvironment env = OrtEnvironment.getEnvironment();
        try (Model m = Model.open(dir);
                OrtSession.SessionOptions o = new OrtSession.SessionOptions()) {
            long t = System.nanoTime();
            OnnxExporter.Exported e = OnnxExporter.export(m, OnnxExporter.Options.defaults());
            try (OrtSession s = OnnxExporter.openSession(env, e, o, how)) {
                System.out.printf(
                        Locale.ROOT,
                        "  exported and session created (%s) in %.1f s%n",
                        how,
                        (System.nanoTime() - t) / 1e9);
                return forward(env, s);
            }
        }
    }

    /** One forward pass on 1 × 16 tokens; fails on a wrong shape or a non-finite logit. */
    static int forward(OrtEnvironment env, OrtSession s) throws Exception {
        long[][] ids = new long[1][16];
        long[][] mask = new long[1][16];
        for (int i = 0; i < 16; i++) {
            ids[0][i] = (17 + 131L * i) % VOCAB;
            mask[0][i] = 1;
        }
        long t = System.nanoTime();
        try (OnnxTensor a = OnnxTensor.createTensor(env, ids);
                OnnxTensor b = OnnxTensor.createTensor(env, mask);
                OrtSession.Result r = s.run(Map.of("input_ids", a, "attention_mask", b))) {
            OnnxTensor logits = (OnnxTensor) r.get("logits").orElseThrow();
            long[] shape = logits.getInfo().getShape();
            FloatBuffer f = logits.getFloatBuffer();
            double maxAbs = 0;
            boolean finite = true;
            while (f.hasRemaining()) {
                float v = f.get();
                finite &= Float.isFinite(v);
                maxAbs = Math.max(maxAbs, Math.abs(v));
            }
            System.out.printf(
                    Locale.ROOT,
                    "  forward 1x16 tokens in %.2f s: logits %s, max |logit| %.3g, finite %b%n",
                    (System.nanoTime() - t) / 1e9,
                    java.util.Arrays.toString(shape),
                    maxAbs,
                    finite);
            return finite && shape[2] == VOCAB ? 0 : 1;
        }
    }
}
