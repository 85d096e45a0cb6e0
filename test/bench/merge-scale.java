// Driver of test/bench/merge-scale.sh, run with Java's source launcher (java -cp CP merge-scale.java ...) so that it
// can use the io module's test classes (GeneratedTensor) without a build dependency on them.
//
//   generate DIR PRESET SEED   a llama-shaped bf16 checkpoint streamed from lazy, seeded GeneratedTensors (5 GB shards)
//                              presets: llama3-8b (vocab 128256, hidden 4096, 32 blocks, 32/8 heads, ffn 14336, 16 GB),
//                              tinyllama (32000, 2048, 22 blocks, 32/4 heads, ffn 5632, 2.2 GB),
//                              llama3-vocab (128256 × 4096 embedding and head, 1 block, 2.5 GB),
//                              gemma-vocab (256000 × 3584 embedding and head, 1 block, 3.9 GB)
//   check OUT METHOD BASE MODEL...  recomputes sampled tensors of a linear (uniform weights, normalised) or TIES
//                              (density 0.5, weights 1) merge in float64 from the inputs and compares them with OUT:
//                              the first and last 32 rows of the embedding and layer 0's k_proj whole; prints the
//                              share of elements equal to the float64 value rounded to bf16 and the largest
//                              difference in bf16 ulps (float32 arithmetic may round the other way: ≤ 1 ulp)

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import scion.io.Model;
import scion.io.safetensors.SafetensorsWriter;
import scion.io.safetensors.bench.GeneratedTensor;
import scion.io.tensor.DType;
import scion.io.tensor.HalfPrecisionOps;
import scion.io.tensor.Tensor;

final class MergeScaleBench {
    record Shape(int vocab, int hidden, int layers, int heads, int kvHeads, int ffn) {}

    static Shape preset(String name) {
        switch (name) {
            case "llama3-8b":
                return new Shape(128256, 4096, 32, 32, 8, 14336);
            case "tinyllama":
                return new Shape(32000, 2048, 22, 32, 4, 5632);
            case "llama3-vocab":
                return new Shape(128256, 4096, 1, 32, 8, 14336);
            case "gemma-vocab":
                return new Shape(256000, 3584, 1, 16, 8, 14336);
            default:
                throw new IllegalArgumentException("unknown preset " + name);
        }
    }

    public static void main(String[] args) throws Exception {
        if (args[0].equals("generate")) {
            generate(Path.of(args[1]), preset(args[2]), Long.parseLong(args[3]));
        } else if (args[0].equals("check")) {
            List<Path> in = new ArrayList<>();
            for (int i = 3; i < args.length; i++) {
                in.add(Path.of(args[i]));
            }
            System.exit(check(Path.of(args[1]), args[2], in));
        }
    }

    static void generate(Path dir, Shape s, long seed0) {
        List<Tensor> t = new ArrayList<>();
        long seed = seed0 * 1_000_003L;
        DType bf = DType.BF16;
        int headDim = s.hidden() / s.heads();
        int kv = s.kvHeads() * headDim;
        t.add(new GeneratedTensor("model.embed_tokens.weight", bf, new long[] {s.vocab(), s.hidden()}, seed++));
        for (int l = 0; l < s.layers(); l++) {
            String p = "model.layers." + l + ".";
            t.add(new GeneratedTensor(p + "input_layernorm.weight", bf, new long[] {s.hidden()}, seed++));
            t.add(new GeneratedTensor(p + "self_attn.q_proj.weight", bf, new long[] {s.hidden(), s.hidden()}, seed++));
            t.add(new GeneratedTensor(p + "self_attn.k_proj.weight", bf, new long[] {kv, s.hidden()}, seed++));
            t.add(new GeneratedTensor(p + "self_attn.v_proj.weight", bf, new long[] {kv, s.hidden()}, seed++));
            t.add(new GeneratedTensor(p + "self_attn.o_proj.weight", bf, new long[] {s.hidden(), s.hidden()}, seed++));
            t.add(new GeneratedTensor(p + "post_attention_layernorm.weight", bf, new long[] {s.hidden()}, seed++));
            t.add(new GeneratedTensor(p + "mlp.gate_proj.weight", bf, new long[] {s.ffn(), s.hidden()}, seed++));
            t.add(new GeneratedTensor(p + "mlp.up_proj.weight", bf, new long[] {s.ffn(), s.hidden()}, seed++));
            t.add(new GeneratedTensor(p + "mlp.down_proj.weight", bf, new long[] {s.hidden(), s.ffn()}, seed++));
        }
        t.add(new GeneratedTensor("model.norm.weight", bf, new long[] {s.hidden()}, seed++));
        t.add(new GeneratedTensor("lm_head.weight", bf, new long[] {s.vocab(), s.hidden()}, seed));
        String config = "{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": "
                + s.hidden() + ", \"intermediate_size\": " + s.ffn() + ", \"num_hidden_layers\": " + s.layers()
                + ", \"num_attention_heads\": " + s.heads() + ", \"num_key_value_heads\": " + s.kvHeads()
                + ", \"vocab_size\": " + s.vocab() + ", \"max_position_embeddings\": 8192, \"rms_norm_eps\": 1e-05,"
                + " \"rope_theta\": 500000.0, \"hidden_act\": \"silu\", \"tie_word_embeddings\": false,"
                + " \"torch_dtype\": \"bfloat16\"}\n";
        try (SafetensorsWriter.Output o = SafetensorsWriter.create().shardSize(5_000_000_000L).open(dir)) {
            o.writeTensors(t);
            o.addFile("config.json", config.getBytes(StandardCharsets.UTF_8));
            o.commit();
        }
    }

    static int check(Path out, String method, List<Path> inputs) {
        List<Model> in = new ArrayList<>();
        for (Path p : inputs) {
            in.add(Model.open(p));
        }
        try (Model o = Model.open(out)) {
            Tensor emb = o.checkpoint().find("model.embed_tokens.weight").orElseThrow();
            long rows = emb.shape()[0];
            int cols = (int) emb.shape()[1];
            long[] ranges = {0, 32, rows - 32, rows};
            long equal = 0;
            long total = 0;
            int worst = 0;
            for (int r = 0; r < ranges.length; r += 2) {
                long[] e = compare(o, in, method, "model.embed_tokens.weight", ranges[r] * cols,
                        (int) ((ranges[r + 1] - ranges[r]) * cols));
                equal += e[0];
                total += e[1];
                worst = Math.max(worst, (int) e[2]);
            }
            Tensor k = o.checkpoint().find("model.layers.0.self_attn.k_proj.weight").orElseThrow();
            long[] e = compare(o, in, method, k.name(), 0, (int) k.numel());
            equal += e[0];
            total += e[1];
            worst = Math.max(worst, (int) e[2]);
            System.out.printf(Locale.ROOT, "  check %s: %d sampled elements, %.4f%% equal to float64 rounded to bf16,"
                    + " max difference %d bf16 ulp%n", method, total, 100.0 * equal / total, worst);
            return worst <= 1 ? 0 : 1;
        } finally {
            in.forEach(Model::close);
        }
    }

    /** [equal, count, max ulp] of out's elements [start, start + n) of {@code name} against float64. */
    static long[] compare(Model out, List<Model> in, String method, String name, long start, int n) {
        double[][] v = new double[in.size()][];
        for (int m = 0; m < in.size(); m++) {
            float[] f = new float[n];
            in.get(m).checkpoint().find(name).orElseThrow().readFloats(start, f, 0, n);
            v[m] = new double[n];
            for (int i = 0; i < n; i++) {
                v[m][i] = f[i];
            }
        }
        double[] ref = new double[n];
        if (method.equals("linear")) {
            for (int i = 0; i < n; i++) {
                double s = 0;
                for (double[] x : v) {
                    s += x[i];
                }
                ref[i] = s / v.length;
            }
        } else if (method.equals("ties")) {
            if (start != 0 || n != out.checkpoint().find(name).orElseThrow().numel()) {
                return new long[] {0, 0, 0}; // TIES thresholds need the whole tensor: whole tensors only
            }
            double[] base = v[0];
            double[][] d = new double[v.length - 1][n];
            for (int m = 1; m < v.length; m++) {
                for (int i = 0; i < n; i++) {
                    d[m - 1][i] = v[m][i] - base[i];
                }
                // keep the ⌊0.5·n⌋ largest |δ|; ties by index (a stable sort)
                Integer[] idx = new Integer[n];
                for (int i = 0; i < n; i++) {
                    idx[i] = i;
                }
                double[] dm = d[m - 1];
                Arrays.sort(idx, (a, b) -> {
                    int c = Double.compare(Math.abs(dm[a]), Math.abs(dm[b]));
                    return c != 0 ? c : Integer.compare(a, b);
                });
                int drop = n - (int) (0.5 * n);
                for (int r = 0; r < drop; r++) {
                    dm[idx[r]] = 0;
                }
            }
            for (int i = 0; i < n; i++) {
                double s = 0;
                for (double[] x : d) {
                    s += x[i];
                }
                double mixed = 0;
                double div = 0;
                for (double[] x : d) {
                    if (s >= 0 ? x[i] > 0 : x[i] < 0) {
                        mixed += x[i];
                        div += 1;
                    }
                }
                ref[i] = base[i] + (div == 0 ? mixed : mixed / div);
            }
        } else {
            throw new IllegalArgumentException("check supports linear and ties, not " + method);
        }
        float[] got = new float[n];
        out.checkpoint().find(name).orElseThrow().readFloats(start, got, 0, n);
        long equal = 0;
        int worst = 0;
        for (int i = 0; i < n; i++) {
            int want = HalfPrecisionOps.f32ToBf16((float) ref[i]) & 0xffff;
            int have = HalfPrecisionOps.f32ToBf16(got[i]) & 0xffff;
            if (want == have) {
                equal++;
            } else {
                worst = Math.max(worst, Math.abs((short) want - (short) have)); // same sign: ulps apart
            }
        }
        return new long[] {equal, n, worst};
    }
}
