package scion.merge.fisher;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.function.LongConsumer;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.arch.WeightGraph.Weight;
import scion.io.safetensors.SafetensorsWriter;
import scion.io.tensor.BufferTensor;
import scion.io.tensor.Tensor;
import scion.merge.fisher.GradientNet.Param;

/**
 * The diagonal of a model's Fisher information, estimated on calibration sequences with {@link GradientNet}
 * (Matena &amp; Raffel 2022, "Merging Models with Fisher-Weighted Averaging", eq. 5: the diagonal of {@code
 * E_x E_{y∼p(y|x)} [∇θ log p(y|x) ∇θ log p(y|x)ᵀ]}).
 *
 * <p><b>Per-sequence squares.</b> As in the paper, each calibration sequence is one example: its score {@code gₙ =
 * ∇θ log p(yₙ | xₙ)} is computed with one backward pass, then squared element-wise. With {@code cₙ} the sequence's
 * count (below),
 *
 * <pre>  F̂ = Σₙ gₙ ⊙ gₙ / Σₙ cₙ</pre>
 *
 * <ul>
 *   <li><b>Causal LMs, true Fisher</b> (default): {@code log p(y|x) = Σₜ log softmax(zₜ)[yₜ]} with {@code yₜ} drawn
 *       from the model's own next-token distribution {@code softmax(zₜ)} at every position {@code t} (teacher-forced
 *       on the text; seeded), so {@code ∂/∂zₜ = onehot(yₜ) − softmax(zₜ)}, and {@code cₙ = Tₙ} (positions). The
 *       {@code yₜ} are independent given the text and each per-token score has zero mean, so the cross terms vanish
 *       in expectation and {@code F̂} is an unbiased estimate of the mean per-token Fisher {@code (1/T) Σₜ
 *       E[gₜ ⊙ gₜ]}.
 *   <li><b>Causal LMs, empirical Fisher</b> (option): {@code yₜ = x_{t+1}} (the text's next tokens), {@code cₙ = Tₙ −
 *       1}. Cross terms no longer vanish: this is the squared gradient of the sequence's log-likelihood.
 *   <li><b>Encoders without a head</b>: a Gaussian likelihood on the mean-pooled embedding {@code f(x) = (1/T) Σₜ
 *       hₜ}, {@code y ∼ N(f(x), I)}. Its score is {@code (y − f)ᵀ ∂f/∂θ} with {@code v = y − f ∼ N(0, I)}, so
 *       {@code F = E_x E_v [(vᵀ J)²]}: one seeded {@code v} per sequence, {@code ∂/∂hₜ = v / T}, {@code cₙ = 1}.
 * </ul>
 *
 * <p>Verified against torch autograd on the tiny llama and bert fixtures ({@code test/fixtures/fisher_reference.py}):
 * entries agree within 2e-3 relative. One deliberate difference: PyTorch never differentiates an {@code
 * nn.Embedding}'s {@code padding_idx} row (BERT's {@code [PAD]}); here every row's Fisher is the plain derivative,
 * which only matters if the calibration text contains that token (windows are never padded).
 *
 * <p>Sequences are run one at a time (no padding). Memory: the model's weights in float32, one gradient and one
 * Fisher accumulator of the same size (3× the float32 model), plus one sequence's activations. Results are in each
 * weight's <em>stored</em> element order (ONNX {@code [in, out]} weights transposed back) under its Hugging Face name.
 */
public final class FisherEstimator {
    private FisherEstimator() {}

    /** Which Fisher to estimate for causal LMs (encoders always use the Gaussian-likelihood Fisher). */
    public enum Kind {
        /** Targets sampled from the model's own softmax (Matena &amp; Raffel). */
        TRUE,
        /** Targets are the text's next tokens. */
        EMPIRICAL
    }

    /**
     * Estimation settings.
     *
     * @param kind true or empirical Fisher (causal LMs)
     * @param seed seeds the sampled targets (causal) or directions (encoders)
     * @param maxTokens stop after this many tokens have been run (0: no limit)
     */
    public record Options(Kind kind, long seed, long maxTokens) {
        public static Options defaults() {
            return new Options(Kind.TRUE, 0L, 0L);
        }

        public Options withKind(Kind k) {
            return new Options(k, seed, maxTokens);
        }

        public Options withSeed(long s) {
            return new Options(kind, s, maxTokens);
        }

        public Options withMaxTokens(long t) {
            return new Options(kind, seed, t);
        }
    }

    /**
     * The derivative of one example's {@code log p(y|x)} with respect to the output rows, and the count it adds.
     *
     * @param dOutput {@code [T, outputWidth]}
     * @param count the example's weight in the mean (positions for causal LMs, 1 for encoders)
     */
    public record Score(float[] dOutput, double count) {}

    /** Draws the targets of one sequence and returns the output gradient of its log-likelihood. */
    public interface Sampler {
        /**
         * @param index the sequence's index in the run
         * @param ids its tokens
         * @param output the forward output ({@code [T, width]}: logits or last hidden state)
         * @param width the output row width
         */
        Score score(int index, long[] ids, float[] output, int width);
    }

    /** The default sampler for a model of this kind. */
    public static Sampler sampler(boolean causal, Options o) {
        if (!causal) {
            return gaussian(o.seed());
        }
        return o.kind() == Kind.TRUE ? sampled(o.seed()) : empirical();
    }

    /** Encoders: {@code v ∼ N(0, I)} per sequence from {@code Random(seed)}, spread as {@code v / T} over tokens. */
    public static Sampler gaussian(long seed) {
        Random r = new Random(seed);
        return (index, ids, output, width) -> {
            float[] v = new float[width];
            for (int j = 0; j < width; j++) {
                v[j] = (float) r.nextGaussian();
            }
            return direction(v, ids.length);
        };
    }

    /** {@code dOutput[t] = v / T}: the output gradient of {@code vᵀ mean_t hₜ}. */
    public static Score direction(float[] v, int t) {
        int width = v.length;
        float[] d = new float[t * width];
        for (int i = 0; i < t; i++) {
            for (int j = 0; j < width; j++) {
                d[i * width + j] = v[j] / t;
            }
        }
        return new Score(d, 1.0);
    }

    /** Causal LMs, true Fisher: {@code yₜ ∼ softmax(zₜ)} at every position, from {@code Random(seed)}. */
    public static Sampler sampled(long seed) {
        Random r = new Random(seed);
        return (index, ids, logits, vocab) -> {
            int t = ids.length;
            int[] y = new int[t];
            double[] p = new double[vocab];
            for (int i = 0; i < t; i++) {
                softmax(logits, i * vocab, vocab, p);
                double u = r.nextDouble();
                double c = 0;
                int pick = vocab - 1;
                for (int j = 0; j < vocab; j++) {
                    c += p[j];
                    if (u < c) {
                        pick = j;
                        break;
                    }
                }
                y[i] = pick;
            }
            return labels(logits, vocab, y);
        };
    }

    /** Causal LMs, empirical Fisher: {@code yₜ = x_{t+1}}; the last position is not scored. */
    public static Sampler empirical() {
        return (index, ids, logits, vocab) -> {
            int[] y = new int[ids.length];
            for (int i = 0; i < ids.length; i++) {
                y[i] = i + 1 < ids.length ? (int) ids[i + 1] : -1;
            }
            return labels(logits, vocab, y);
        };
    }

    /**
     * The output gradient of {@code Σₜ log softmax(zₜ)[yₜ]}: {@code onehot(yₜ) − softmax(zₜ)} per row; rows with
     * {@code yₜ < 0} are not scored. The count is the number of scored rows.
     */
    public static Score labels(float[] logits, int vocab, int[] y) {
        float[] d = new float[logits.length];
        double[] p = new double[vocab];
        int n = 0;
        for (int i = 0; i < y.length; i++) {
            if (y[i] < 0) {
                continue;
            }
            softmax(logits, i * vocab, vocab, p);
            for (int j = 0; j < vocab; j++) {
                d[i * vocab + j] = (float) -p[j];
            }
            d[i * vocab + y[i]] += 1f;
            n++;
        }
        return new Score(d, n);
    }

    private static void softmax(float[] z, int off, int n, double[] p) {
        double max = Double.NEGATIVE_INFINITY;
        for (int j = 0; j < n; j++) {
            max = Math.max(max, z[off + j]);
        }
        double s = 0;
        for (int j = 0; j < n; j++) {
            p[j] = Math.exp(z[off + j] - max);
            s += p[j];
        }
        for (int j = 0; j < n; j++) {
            p[j] /= s;
        }
    }

    /**
     * A finished estimate.
     *
     * @param diagonal HF weight name → Fisher diagonal in the weight's stored element order
     * @param shapes HF weight name → stored shape
     * @param sequences examples run
     * @param tokens tokens run forward and backward
     * @param count {@code Σ cₙ}, the divisor
     * @param seconds wall time of the passes
     * @param flops matrix-product floating-point operations of the passes
     */
    public record Result(
            Map<String, float[]> diagonal,
            Map<String, long[]> shapes,
            int sequences,
            long tokens,
            double count,
            double seconds,
            long flops) {
        /** Writes the diagonal as float32 safetensors (one tensor per weight, HF names, stored shapes). */
        public Path write(Path file, Map<String, String> metadata) {
            List<Tensor> ts = new ArrayList<>();
            for (Map.Entry<String, float[]> e : diagonal.entrySet()) {
                ts.add(BufferTensor.ofFloats(e.getKey(), shapes.get(e.getKey()), e.getValue()));
            }
            SafetensorsWriter.create().force(true).metadata(metadata).write(file, ts);
            return file;
        }
    }

    /**
     * Estimates the diagonal Fisher of {@code model} on {@code sequences} (token ids, each already wrapped in the
     * tokenizer's special tokens and at most the model's length).
     *
     * @param progress receives the tokens done after each sequence (may be null)
     * @throws InvalidInputException for an unsupported family or when no sequence is given
     */
    public static Result estimate(Model model, Iterator<long[]> sequences, Options o, LongConsumer progress) {
        GradientNet net = GradientNet.load(model);
        return estimate(net, sequences, sampler(net.causal(), o), o.maxTokens(), progress, model.toString());
    }

    /** The estimate with an explicit sampler (tests feed externally drawn targets or directions). */
    public static Result estimate(
            GradientNet net,
            Iterator<long[]> sequences,
            Sampler sampler,
            long maxTokens,
            LongConsumer progress,
            String where) {
        List<Param> params = net.params();
        float[][] acc = new float[params.size()][];
        for (int i = 0; i < acc.length; i++) {
            acc[i] = new float[params.get(i).value().length];
        }
        long flops0 = FisherOps.flops();
        long start = System.nanoTime();
        int n = 0;
        long tokens = 0;
        double count = 0;
        while (sequences.hasNext() && (maxTokens <= 0 || tokens < maxTokens)) {
            long[] ids = sequences.next();
            if (ids.length == 0) {
                continue;
            }
            if (ids.length > net.maxLength()) {
                ids = java.util.Arrays.copyOf(ids, net.maxLength());
            }
            GradientNet.Pass pass = net.forward(ids);
            Score s = sampler.score(n, ids, pass.output(), net.outputWidth());
            net.backward(pass, s.dOutput());
            for (int i = 0; i < acc.length; i++) {
                float[] g = params.get(i).grad();
                float[] a = acc[i];
                for (int j = 0; j < g.length; j++) {
                    a[j] += g[j] * g[j];
                    g[j] = 0f;
                }
            }
            count += s.count();
            tokens += ids.length;
            n++;
            if (progress != null) {
                progress.accept(tokens);
            }
        }
        if (n == 0 || count == 0) {
            throw InvalidInputException.of(
                    where, "no calibration tokens for the Fisher estimate", "at least one sequence", "none");
        }
        double seconds = (System.nanoTime() - start) / 1e9;
        Map<String, float[]> diag = new LinkedHashMap<>();
        Map<String, long[]> shapes = new LinkedHashMap<>();
        float inv = (float) (1.0 / count);
        for (int i = 0; i < acc.length; i++) {
            Weight w = params.get(i).weight();
            float[] a = acc[i];
            for (int j = 0; j < a.length; j++) {
                a[j] *= inv;
            }
            long[] stored = w.tensor().shape();
            if (w.transposed() && stored.length == 2) {
                // acc is [out, in] (spec order); stored is [in, out] = [stored0, stored1], spec = [stored1, stored0].
                a = FisherOps.transpose(a, Math.toIntExact(stored[1]), Math.toIntExact(stored[0]));
            }
            acc[i] = null;
            diag.put(w.name(), a);
            shapes.put(w.name(), stored.clone());
        }
        return new Result(diag, shapes, n, tokens, count, seconds, FisherOps.flops() - flops0);
    }
}
