// Generator of test/bench/grow-noise.sh, run with the io module's test classes on the classpath (GeneratedTensor):
//
//   generate DIR   a TinyLlama-shaped bf16 checkpoint (hidden 2048, 22 blocks, 32 query / 4 key-value heads, FFN
//                  5632, vocab 32000, untied head: 1.100 G parameters, 2.20 GB) streamed from lazy, seeded
//                  GeneratedTensors by SafetensorsWriter (2 GB shards) + config.json; same run, same bytes.

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import scion.io.safetensors.SafetensorsWriter;
import scion.io.safetensors.bench.GeneratedTensor;
import scion.io.tensor.DType;
import scion.io.tensor.Tensor;

final class GrowNoiseBench {
    static final int HIDDEN = 2048;
    static final int LAYERS = 22;
    static final int HEADS = 32;
    static final int KV_HEADS = 4;
    static final int HEAD_DIM = HIDDEN / HEADS;
    static final int FFN = 5632;
    static final int VOCAB = 32000;

    public static void main(String[] args) {
        if (args.length != 2 || !args[0].equals("generate")) {
            System.err.println("usage: GrowNoiseBench generate DIR");
            System.exit(2);
        }
        generate(Path.of(args[1]));
    }

    static void generate(Path dir) {
        List<Tensor> t = new ArrayList<>();
        long seed = 1;
        DType bf = DType.BF16;
        int kv = KV_HEADS * HEAD_DIM;
        t.add(new GeneratedTensor("model.embed_tokens.weight", bf, new long[] {VOCAB, HIDDEN}, seed++));
        for (int l = 0; l < LAYERS; l++) {
            String p = "model.layers." + l + ".";
            t.add(new GeneratedTensor(p + "input_layernorm.weight", bf, new long[] {HIDDEN}, seed++));
            t.add(new GeneratedTensor(p + "self_attn.q_proj.weight", bf, new long[] {HIDDEN, HIDDEN}, seed++));
            t.add(new GeneratedTensor(p + "self_attn.k_proj.weight", bf, new long[] {kv, HIDDEN}, seed++));
            t.add(new GeneratedTensor(p + "self_attn.v_proj.weight", bf, new long[] {kv, HIDDEN}, seed++));
            t.add(new GeneratedTensor(p + "self_attn.o_proj.weight", bf, new long[] {HIDDEN, HIDDEN}, seed++));
            t.add(new GeneratedTensor(p + "post_attention_layernorm.weight", bf, new long[] {HIDDEN}, seed++));
            t.add(new GeneratedTensor(p + "mlp.gate_proj.weight", bf, new long[] {FFN, HIDDEN}, seed++));
            t.add(new GeneratedTensor(p + "mlp.up_proj.weight", bf, new long[] {FFN, HIDDEN}, seed++));
            t.add(new GeneratedTensor(p + "mlp.down_proj.weight", bf, new long[] {HIDDEN, FFN}, seed++));
        }
        t.add(new GeneratedTensor("model.norm.weight", bf, new long[] {HIDDEN}, seed++));
        t.add(new GeneratedTensor("lm_head.weight", bf, new long[] {VOCAB, HIDDEN}, seed));
        String config = "{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": "
                + HIDDEN + ", \"intermediate_size\": " + FFN + ", \"num_hidden_layers\": " + LAYERS
                + ", \"num_attention_heads\": " + HEADS + ", \"num_key_value_heads\": " + KV_HEADS
                + ", \"vocab_size\": " + VOCAB + ", \"max_position_embeddings\": 2048, \"rms_norm_eps\": 1e-05,"
                + " \"rope_theta\": 10000.0, \"hidden_act\": \"silu\", \"tie_word_embeddings\": false,"
                + " \"torch_dtype\": \"bfloat16\"}\n";
        try (SafetensorsWriter.Output o =
                SafetensorsWriter.create().shardSize(2_000_000_000L).open(dir)) {
            o.writeTensors(t);
            o.addFile("config.json", config.getBytes(StandardCharsets.UTF_8));
            o.commit();
        }
    }
}
