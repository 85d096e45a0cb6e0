package scion.io.runtime;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.commons.math3.stat.correlation.SpearmansCorrelation;
import scion.io.InvalidInputException;

/**
 * Runs a reference and a candidate model side by side on the same token inputs and compares their outputs: the
 * judge every operator is checked by ({@code scion validate}).
 *
 * <p>Batches stream through both models one at a time; only running statistics are kept. Outputs are paired by name
 * (by position when no names match and both have as many outputs). For every pair: {@link OutputComparison}. For
 * causal LMs additionally the top-1 agreement of the next-token predictions and both perplexities on the scored
 * tokens ({@link TokenInputs}); for encoders the cosine of the mean-pooled embeddings per sequence and their Spearman
 * rank correlation. Latency is the median of {@code latencyRuns} timed passes of the first batch per model, run
 * alternately, after the comparison pass has warmed both sessions.
 *
 * <p>Sequences are batched only with sequences of the same length, so nothing is padded: every position of every
 * output is a real token, the attention mask fed is all ones, and pooling and statistics cover exactly the tokens.
 */
public final class Validation {
    private Validation() {}

    /**
     * How to run.
     *
     * @param batchSize sequences per forward pass (sequences of equal length are batched together)
     * @param latencyRuns timed passes for the latency median (0: not timed)
     * @param expect the gate, or null for a report only
     */
    public record Options(int batchSize, int latencyRuns, Expectation expect) {
        public static Options defaults() {
            return new Options(8, 5, null);
        }
    }

    /**
     * Causal-LM agreement.
     *
     * @param positions next-token predictions compared (every position of every sequence)
     * @param top1Agreement share of positions where both models' arg-max token is the same
     * @param scoredTokens tokens scored for perplexity
     * @param refPerplexity perplexity of REF on the scored tokens
     * @param candPerplexity perplexity of CAND on the same tokens
     */
    public record LanguageModelAgreement(
            long positions, double top1Agreement, long scoredTokens, double refPerplexity, double candPerplexity) {}

    /**
     * Encoder agreement on mean-pooled (mask-aware) embeddings, per sequence and copy.
     *
     * @param sequences sequences pooled
     * @param copies copies per candidate embedding
     * @param meanCosine mean cosine between REF's and CAND's pooled embeddings
     * @param minCosine the smallest such cosine
     * @param spearman Spearman rank correlation of all pooled components (REF vs CAND)
     */
    public record EmbeddingAgreement(int sequences, int copies, double meanCosine, double minCosine, double spearman) {}

    /**
     * The whole comparison.
     *
     * @param ref the reference model
     * @param cand the candidate model
     * @param inputs what the models were run on
     * @param sequences sequences run
     * @param tokens tokens run
     * @param outputs per output pair
     * @param unmatched outputs of either model that had no partner (named {@code REF:x} or {@code CAND:x})
     * @param languageModel causal-LM agreement, or null for encoders
     * @param embeddings encoder agreement, or null for causal LMs
     * @param expect the gate, or null
     * @param verdict the gate's verdict, or null without a gate
     */
    public record Report(
            ModelSummary ref,
            ModelSummary cand,
            String inputs,
            int sequences,
            long tokens,
            List<OutputComparison.Result> outputs,
            List<String> unmatched,
            LanguageModelAgreement languageModel,
            EmbeddingAgreement embeddings,
            Expectation expect,
            Expectation.Verdict verdict) {
        public Report {
            outputs = List.copyOf(outputs);
            unmatched = List.copyOf(unmatched);
        }
    }

    /** Compares {@code cand} with {@code ref} on {@code inputs}. */
    public static Report run(RuntimeModel ref, RuntimeModel cand, TokenInputs inputs, Options o) {
        RuntimeModel.Kind kind = ref.info().kind();
        if (cand.info().kind() != kind) {
            throw InvalidInputException.of(
                    cand.info().location().toString(),
                    "CAND is a different kind of model than REF",
                    kind.id() + " like REF",
                    cand.info().kind().id());
        }
        if (cand.info().vocab() != ref.info().vocab()) {
            throw InvalidInputException.of(
                    cand.info().location().toString(),
                    "CAND's vocabulary differs from REF's, so the same token ids mean different tokens",
                    ref.info().vocab() + " tokens like REF",
                    cand.info().vocab());
        }
        List<List<TokenInputs.Sequence>> batches = batches(inputs.sequences(), o.batchSize(), width(ref, cand));
        Map<String, String> pairs = null;
        List<String> unmatched = new ArrayList<>();
        Map<String, OutputComparison> cmp = new LinkedHashMap<>();
        String primaryRef = null;
        // causal LM
        long positions = 0;
        long agree = 0;
        long scored = 0;
        double nllRef = 0;
        double nllCand = 0;
        boolean lm = kind == RuntimeModel.Kind.CAUSAL_LM;
        // encoder
        double cosSum = 0;
        double cosMin = Double.POSITIVE_INFINITY;
        long cosN = 0;
        Reservoir pooled = new Reservoir(100_000, 2, 3);
        int pooledCopies = 1;
        for (List<TokenInputs.Sequence> batch : batches) {
            long[][] ids = ids(batch);
            Map<String, RuntimeModel.Output> r = ref.run(ids);
            Map<String, RuntimeModel.Output> c = cand.run(ids);
            if (pairs == null) {
                pairs = pair(r, c, unmatched, cand);
                for (Map.Entry<String, String> e : pairs.entrySet()) {
                    cmp.put(e.getKey(), new OutputComparison(e.getKey()));
                }
                primaryRef = primary(r, pairs, kind, ref.info().vocab());
            }
            for (Map.Entry<String, String> e : pairs.entrySet()) {
                cmp.get(e.getKey()).accept(r.get(e.getKey()), c.get(e.getValue()));
            }
            if (primaryRef == null) {
                continue;
            }
            RuntimeModel.Output pr = r.get(primaryRef);
            RuntimeModel.Output pc = c.get(pairs.get(primaryRef));
            OutputComparison pcmp = cmp.get(primaryRef);
            int seq = ids[0].length;
            if (lm && pcmp.copies() == 1) {
                int v = pr.last();
                for (int b = 0; b < ids.length; b++) {
                    int from = batch.get(b).scoreFrom();
                    for (int p = 0; p < seq; p++) {
                        int off = (b * seq + p) * v;
                        positions++;
                        if (RuntimeOps.argmax(pr.data(), off, v) == RuntimeOps.argmax(pc.data(), off, v)) {
                            agree++;
                        }
                        if (p + 1 < seq && p + 1 >= from) {
                            int target = Math.toIntExact(ids[b][p + 1]);
                            nllRef -= RuntimeOps.logSoftmaxAt(pr.data(), off, v, target);
                            nllCand -= RuntimeOps.logSoftmaxAt(pc.data(), off, v, target);
                            scored++;
                        }
                    }
                }
            } else if (!lm && pr.shape().length == 3) {
                int n = pcmp.copies();
                pooledCopies = n;
                for (int b = 0; b < ids.length; b++) {
                    double[] er = RuntimeOps.meanPool(pr.data(), b, seq, pr.last(), null);
                    double[] ec = RuntimeOps.meanPool(pc.data(), b, seq, pc.last(), null);
                    for (int k = 0; k < n; k++) {
                        double[] ek = RuntimeOps.copy(ec, n, k, pcmp.interleaved());
                        double cos = RuntimeOps.cosine(er, ek);
                        cosSum += cos;
                        cosMin = Math.min(cosMin, cos);
                        cosN++;
                        for (int j = 0; j < er.length; j++) {
                            if (Double.isFinite(er[j]) && Double.isFinite(ek[j])) {
                                pooled.add(er[j], ek[j]);
                            }
                        }
                    }
                }
            }
        }
        List<OutputComparison.Result> results = new ArrayList<>();
        for (OutputComparison oc : cmp.values()) {
            results.add(oc.result());
        }
        LanguageModelAgreement lma = null;
        EmbeddingAgreement ea = null;
        if (lm && positions > 0) {
            lma = new LanguageModelAgreement(
                    positions,
                    (double) agree / positions,
                    scored,
                    scored == 0 ? Double.NaN : Math.exp(nllRef / scored),
                    scored == 0 ? Double.NaN : Math.exp(nllCand / scored));
        } else if (!lm && cosN > 0) {
            double sp = pooled.size() >= 2
                    ? new SpearmansCorrelation().correlation(pooled.column(0), pooled.column(1))
                    : Double.NaN;
            ea = new EmbeddingAgreement(inputs.sequences().size(), pooledCopies, cosSum / cosN, cosMin, sp);
        }
        long[][] first = ids(batches.get(0));
        double[] lat = latency(ref, cand, first, o.latencyRuns());
        String shape = "[" + first.length + ", " + first[0].length + "]";
        Expectation.Verdict verdict = o.expect() == null ? null : o.expect().check(results);
        return new Report(
                ModelSummary.of(ref, lat[0], o.latencyRuns(), shape),
                ModelSummary.of(cand, lat[1], o.latencyRuns(), shape),
                inputs.description(),
                inputs.sequences().size(),
                inputs.tokens(),
                results,
                unmatched,
                lma,
                ea,
                o.expect(),
                verdict);
    }

    /** The widest output row to expect: the vocabulary of causal LMs (their logits), else 0 (no cap). */
    static int width(RuntimeModel... models) {
        int w = 0;
        for (RuntimeModel m : models) {
            if (m.info().kind() == RuntimeModel.Kind.CAUSAL_LM) {
                w = Math.max(w, m.info().vocab());
            }
        }
        return w;
    }

    /** Median latency in ms of {@code runs} alternating passes of {@code ids} through each model. */
    private static double[] latency(RuntimeModel a, RuntimeModel b, long[][] ids, int runs) {
        if (runs <= 0) {
            return new double[] {Double.NaN, Double.NaN};
        }
        double[] ta = new double[runs];
        double[] tb = new double[runs];
        for (int i = 0; i < runs; i++) {
            a.run(ids);
            ta[i] = a.lastRunNanos() / 1e6;
            b.run(ids);
            tb[i] = b.lastRunNanos() / 1e6;
        }
        return new double[] {median(ta), median(tb)};
    }

    static double median(double[] v) {
        double[] s = v.clone();
        Arrays.sort(s);
        int n = s.length;
        return n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    }

    /** Pairs REF outputs with CAND outputs: by name, else by position when the counts agree. */
    private static Map<String, String> pair(
            Map<String, RuntimeModel.Output> r,
            Map<String, RuntimeModel.Output> c,
            List<String> unmatched,
            RuntimeModel cand) {
        Map<String, String> pairs = new LinkedHashMap<>();
        for (String n : r.keySet()) {
            if (c.containsKey(n)) {
                pairs.put(n, n);
            }
        }
        if (pairs.isEmpty() && r.size() == c.size()) {
            List<String> cn = new ArrayList<>(c.keySet());
            int i = 0;
            for (String n : r.keySet()) {
                pairs.put(n, cn.get(i++));
            }
        }
        if (pairs.isEmpty()) {
            throw InvalidInputException.of(
                    cand.info().location().toString(),
                    "no output of CAND matches one of REF",
                    "outputs named like REF's " + r.keySet(),
                    c.keySet());
        }
        for (String n : r.keySet()) {
            if (!pairs.containsKey(n)) {
                unmatched.add("REF:" + n);
            }
        }
        for (String n : c.keySet()) {
            if (!pairs.containsValue(n)) {
                unmatched.add("CAND:" + n);
            }
        }
        return pairs;
    }

    /** The output the model-level metrics use: {@code logits} / {@code last_hidden_state}, else by shape. */
    static String primary(
            Map<String, RuntimeModel.Output> outs, Map<String, String> among, RuntimeModel.Kind kind, int vocab) {
        String want = kind == RuntimeModel.Kind.CAUSAL_LM ? "logits" : "last_hidden_state";
        if (outs.containsKey(want) && (among == null || among.containsKey(want))) {
            return want;
        }
        for (RuntimeModel.Output o : outs.values()) {
            if (among != null && !among.containsKey(o.name())) {
                continue;
            }
            if (o.shape().length == 3 && (kind != RuntimeModel.Kind.CAUSAL_LM || o.last() == vocab)) {
                return o.name();
            }
        }
        return null;
    }

    /** Output values one batch may produce per model (128 MiB of float32): caps the batch for large vocabularies. */
    static final long MAX_BATCH_VALUES = 32L << 20;

    /**
     * Groups sequences of equal length (in order of first appearance) into batches of at most {@code size}, fewer when
     * {@code rows × length × width} would pass {@link #MAX_BATCH_VALUES} ({@code width}: the widest output row, e.g.
     * the vocabulary of a causal LM).
     */
    static List<List<TokenInputs.Sequence>> batches(List<TokenInputs.Sequence> seqs, int size, int width) {
        if (size < 1) {
            throw InvalidInputException.of("--batch", "out of range", "at least 1", Integer.toString(size));
        }
        Map<Integer, List<TokenInputs.Sequence>> byLength = new LinkedHashMap<>();
        for (TokenInputs.Sequence s : seqs) {
            byLength.computeIfAbsent(s.length(), k -> new ArrayList<>()).add(s);
        }
        List<List<TokenInputs.Sequence>> out = new ArrayList<>();
        for (List<TokenInputs.Sequence> group : byLength.values()) {
            long perRow = (long) group.get(0).length() * Math.max(1, width);
            int rows = (int) Math.max(1, Math.min(size, MAX_BATCH_VALUES / perRow));
            for (int i = 0; i < group.size(); i += rows) {
                out.add(List.copyOf(group.subList(i, Math.min(group.size(), i + rows))));
            }
        }
        return out;
    }

    /** The ids of a batch as {@code [batch][seq]}. */
    static long[][] ids(List<TokenInputs.Sequence> batch) {
        long[][] ids = new long[batch.size()][];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = batch.get(i).ids();
        }
        return ids;
    }
}
