package scion.io.runtime;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.apache.commons.math3.linear.Array2DRowRealMatrix;
import org.apache.commons.math3.linear.SingularValueDecomposition;
import org.apache.commons.math3.stat.descriptive.DescriptiveStatistics;
import org.apache.commons.math3.stat.descriptive.rank.Percentile;

/**
 * Evaluates one model on token inputs ({@code scion eval}): perplexity for causal LMs, embedding statistics for
 * encoders.
 *
 * <p>Perplexity: {@code exp(mean NLL)} over the scored tokens of the sliding windows ({@link TokenInputs}), where the
 * NLL of token {@code t_p} is {@code -log softmax(logits[p-1])[t_p]} computed in double precision ({@link
 * RuntimeOps#logSoftmaxAt}).
 *
 * <p>Embeddings: one mean-pooled (mask-aware) vector per sequence. Reported: the distribution of their norms (mean,
 * standard deviation, percentiles), the mean pairwise cosine similarity and its percentiles (all pairs up to {@value
 * #ALL_PAIRS} embeddings, else 10<sup>6</sup> seeded random pairs), the anisotropy as Ethayarajh (2019) defines it
 * (the expected cosine between two random embeddings, i.e. the mean pairwise cosine), and the share of the variance of
 * the centred embeddings along their first principal direction ({@code σ₁² / Σσᵢ²}, Commons Math SVD).
 */
public final class Evaluation {
    private Evaluation() {}

    static final int ALL_PAIRS = 2000;

    /**
     * Causal-LM figures.
     *
     * @param scoredTokens tokens whose NLL was measured
     * @param meanNll mean negative log-likelihood, nats per token
     * @param perplexity {@code exp(meanNll)}
     * @param bitsPerToken {@code meanNll / ln 2}
     * @param top1Accuracy share of scored tokens that were the model's arg-max prediction
     * @param nllP50 median per-token NLL
     * @param nllP90 90th percentile of per-token NLL
     * @param nllP99 99th percentile of per-token NLL
     */
    public record Perplexity(
            long scoredTokens,
            double meanNll,
            double perplexity,
            double bitsPerToken,
            double top1Accuracy,
            double nllP50,
            double nllP90,
            double nllP99) {}

    /**
     * Encoder figures over the mean-pooled embeddings.
     *
     * @param embeddings how many (one per sequence)
     * @param dimension their width
     * @param normMean mean L2 norm
     * @param normStd standard deviation of the norms
     * @param normP5 5th percentile of the norms
     * @param normP50 median norm
     * @param normP95 95th percentile of the norms
     * @param meanPairwiseCosine mean cosine over pairs of distinct embeddings
     * @param cosineP5 5th percentile of the pairwise cosines
     * @param cosineP50 median pairwise cosine
     * @param cosineP95 95th percentile of the pairwise cosines
     * @param anisotropy Ethayarajh's anisotropy: the expected cosine of two random embeddings (= meanPairwiseCosine)
     * @param firstComponentShare share of the centred embeddings' variance along the first principal direction
     */
    public record EmbeddingStatistics(
            int embeddings,
            int dimension,
            double normMean,
            double normStd,
            double normP5,
            double normP50,
            double normP95,
            double meanPairwiseCosine,
            double cosineP5,
            double cosineP50,
            double cosineP95,
            double anisotropy,
            double firstComponentShare) {}

    /**
     * The evaluation.
     *
     * @param model the model
     * @param inputs what it was run on
     * @param sequences sequences run
     * @param tokens tokens run
     * @param perplexity causal LMs, else null
     * @param embeddings encoders, else null
     */
    public record Report(
            ModelSummary model,
            String inputs,
            int sequences,
            long tokens,
            Perplexity perplexity,
            EmbeddingStatistics embeddings) {}

    /** Runs {@code m} over {@code inputs} in batches of at most {@code batchSize} sequences of equal length. */
    public static Report run(RuntimeModel m, TokenInputs inputs, int batchSize) {
        boolean lm = m.info().kind() == RuntimeModel.Kind.CAUSAL_LM;
        List<List<TokenInputs.Sequence>> batches =
                Validation.batches(inputs.sequences(), batchSize, Validation.width(m));
        Reservoir nlls = new Reservoir(200_000, 1, 4);
        double nllSum = 0;
        long scored = 0;
        long correct = 0;
        List<double[]> pooled = new ArrayList<>();
        List<Double> times = new ArrayList<>();
        String primary = null;
        for (List<TokenInputs.Sequence> batch : batches) {
            long[][] ids = Validation.ids(batch);
            var outs = m.run(ids);
            times.add(m.lastRunNanos() / 1e6);
            if (primary == null) {
                primary =
                        Validation.primary(outs, null, m.info().kind(), m.info().vocab());
                if (primary == null) {
                    throw new scion.io.InvalidInputException(m.info().location()
                            + ": no output to evaluate; expected "
                            + (lm ? "'logits' [batch, seq, vocab]" : "'last_hidden_state' [batch, seq, hidden]")
                            + ", found " + outs.values());
                }
            }
            RuntimeModel.Output o = outs.get(primary);
            int seq = ids[0].length;
            int w = o.last();
            for (int b = 0; b < ids.length; b++) {
                if (lm) {
                    for (int p = Math.max(1, batch.get(b).scoreFrom()); p < seq; p++) {
                        int off = (b * seq + p - 1) * w;
                        int target = Math.toIntExact(ids[b][p]);
                        double nll = -RuntimeOps.logSoftmaxAt(o.data(), off, w, target);
                        nllSum += nll;
                        nlls.add(nll);
                        scored++;
                        if (RuntimeOps.argmax(o.data(), off, w) == target) {
                            correct++;
                        }
                    }
                } else {
                    pooled.add(RuntimeOps.meanPool(o.data(), b, seq, w, null));
                }
            }
        }
        double[] t = times.stream().mapToDouble(Double::doubleValue).toArray();
        List<TokenInputs.Sequence> first = batches.get(0);
        ModelSummary summary = ModelSummary.of(
                m,
                Validation.median(t),
                t.length,
                "each batch (up to " + batchSize + " sequences; the first [" + first.size() + ", "
                        + first.get(0).length() + "])");
        Perplexity ppl = null;
        EmbeddingStatistics emb = null;
        if (lm) {
            double mean = nllSum / scored;
            Percentile pc = new Percentile();
            pc.setData(nlls.column(0));
            ppl = new Perplexity(
                    scored,
                    mean,
                    Math.exp(mean),
                    mean / Math.log(2),
                    (double) correct / scored,
                    pc.evaluate(50),
                    pc.evaluate(90),
                    pc.evaluate(99));
        } else {
            emb = embeddingStatistics(pooled);
        }
        return new Report(summary, inputs.description(), inputs.sequences().size(), inputs.tokens(), ppl, emb);
    }

    /** The statistics of a set of embeddings (see the class comment); at least two are needed for the cosines. */
    public static EmbeddingStatistics embeddingStatistics(List<double[]> e) {
        int n = e.size();
        int d = e.get(0).length;
        DescriptiveStatistics norms = new DescriptiveStatistics();
        for (double[] v : e) {
            norms.addValue(RuntimeOps.norm(v));
        }
        DescriptiveStatistics cos = new DescriptiveStatistics();
        if (n <= ALL_PAIRS) {
            for (int i = 0; i < n; i++) {
                for (int j = i + 1; j < n; j++) {
                    cos.addValue(RuntimeOps.cosine(e.get(i), e.get(j)));
                }
            }
        } else {
            Random r = new Random(5);
            for (int k = 0; k < 1_000_000; k++) {
                int i = r.nextInt(n);
                int j = r.nextInt(n - 1);
                cos.addValue(RuntimeOps.cosine(e.get(i), e.get(j >= i ? j + 1 : j)));
            }
        }
        double share = Double.NaN;
        if (n >= 2) {
            double[] mean = new double[d];
            for (double[] v : e) {
                for (int j = 0; j < d; j++) {
                    mean[j] += v[j] / n;
                }
            }
            double[][] centred = new double[n][d];
            for (int i = 0; i < n; i++) {
                for (int j = 0; j < d; j++) {
                    centred[i][j] = e.get(i)[j] - mean[j];
                }
            }
            double[] sv = new SingularValueDecomposition(new Array2DRowRealMatrix(centred, false)).getSingularValues();
            double total = 0;
            for (double s : sv) {
                total += s * s;
            }
            share = total == 0 ? Double.NaN : sv[0] * sv[0] / total;
        }
        double meanCos = cos.getN() == 0 ? Double.NaN : cos.getMean();
        return new EmbeddingStatistics(
                n,
                d,
                norms.getMean(),
                norms.getStandardDeviation(),
                norms.getPercentile(5),
                norms.getPercentile(50),
                norms.getPercentile(95),
                meanCos,
                cos.getN() == 0 ? Double.NaN : cos.getPercentile(5),
                cos.getN() == 0 ? Double.NaN : cos.getPercentile(50),
                cos.getN() == 0 ? Double.NaN : cos.getPercentile(95),
                meanCos,
                share);
    }
}
