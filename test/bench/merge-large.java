// Driver of test/bench/merge-large.sh, run with Java's source launcher (java -cp CP merge-large.java ...) so that it
// can use the io module's test classes (GeneratedTensor, MemorySampler) without a build dependency on them.
//
//   generate DIR LAYERS SEED  a llama-shaped bf16 checkpoint (hidden 2048, 16 heads, ffn 5632, vocab 32000, untied
//                             head; 17 blocks: 1.005 G parameters, 2.01 GB) streamed from lazy GeneratedTensors
//                             (deterministic per SEED) by SafetensorsWriter (2 GB shards) + config.json
//   scion ARGS...             runs the scion command line in this JVM and prints the sampled peaks of anonymous and
//                             file-backed resident memory beside its exit code

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import scion.cli.Scion;
import scion.io.safetensors.SafetensorsWriter;
import scion.io.safetensors.bench.GeneratedTensor;
import scion.io.safetensors.bench.MemorySampler;
import scion.io.tensor.DType;
import scion.io.tensor.Tensor;

final class MergeLargeBench {
    static final int HIDDEN = 2048;
    static final int HEADS = 16;
    static final int FFN = 5632;
    static final int VOCAB = 32000;

    public static void main(String[] args) {
        long t0 = System.nanoTime();
        int rc;
        try (MemorySampler mem = new MemorySampler()) {
            if (args[0].equals("generate")) {
                rc = generate(Path.of(args[1]), Integer.parseInt(args[2]), Long.parseLong(args[3]));
            } else {
                String[] rest = java.util.Arrays.copyOfRange(args, 1, args.length);
                rc = Scion.commandLine().execute(rest);
            }
            System.out.printf(
                    Locale.ROOT, "  %s: exit %d, %.1f s; %s%n", args[0], rc, (System.nanoTime() - t0) / 1e9,
                    mem.report());
        }
        System.exit(rc);
    }

    static int generate(Path dir, int layers, long seed0) {
        List<Tensor> t = new ArrayList<>();
        long seed = seed0 * 1_000_003L;
        DType bf = DType.BF16;
        t.add(new GeneratedTensor("model.embed_tokens.weight", bf, new long[] {VOCAB, HIDDEN}, seed++));
        for (int l = 0; l < layers; l++) {
            String p = "model.layers." + l + ".";
            t.add(new GeneratedTensor(p + "input_layernorm.weight", bf, new long[] {HIDDEN}, seed++));
            for (String proj : List.of("q_proj", "k_proj", "v_proj", "o_proj")) {
                t.add(new GeneratedTensor(p + "self_attn." + proj + ".weight", bf, new long[] {HIDDEN, HIDDEN}, seed++));
            }
            t.add(new GeneratedTensor(p + "post_attention_layernorm.weight", bf, new long[] {HIDDEN}, seed++));
            t.add(new GeneratedTensor(p + "mlp.gate_proj.weight", bf, new long[] {FFN, HIDDEN}, seed++));
            t.add(new GeneratedTensor(p + "mlp.up_proj.weight", bf, new long[] {FFN, HIDDEN}, seed++));
            t.add(new GeneratedTensor(p + "mlp.down_proj.weight", bf, new long[] {HIDDEN, FFN}, seed++));
        }
        t.add(new GeneratedTensor("model.norm.weight", bf, new long[] {HIDDEN}, seed++));
        t.add(new GeneratedTensor("lm_head.weight", bf, new long[] {VOCAB, HIDDEN}, seed));
        String config = "{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": "
                + HIDDEN + ", \"intermediate_size\": " + FFN + ", \"num_hidden_layers\": " + layers
                + ", \"num_attention_heads\": " + HEADS + ", \"num_key_value_heads\": " + HEADS
                + ", \"vocab_size\": " + VOCAB + ", \"max_position_embeddings\": 4096, \"rms_norm_eps\": 1e-05,"
                + " \"rope_theta\": 10000.0, \"hidden_act\": \"silu\", \"tie_word_embeddings\": false,"
                + " \"torch_dtype\": \"bfloat16\"}\n";
        try (SafetensorsWriter.Output o =
                SafetensorsWriter.create().shardSize(2_000_000_000L).open(dir)) {
            o.writeTensors(t);
            o.addFile("config.json", config.getBytes(StandardCharsets.UTF_8));
            o.commit();
        }
        return 0;
    }
}
