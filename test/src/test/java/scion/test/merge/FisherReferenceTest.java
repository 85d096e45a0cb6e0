package scion.test.merge;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import scion.io.Model;
import scion.merge.fisher.FisherEstimator;
import scion.merge.fisher.FisherEstimator.Sampler;
import scion.merge.fisher.GradientNet;
import scion.test.Fixtures;

/**
 * Diagonal Fisher entries against torch autograd: {@code test/fixtures/fisher_reference.py} computed them with
 * transformers on the tiny llama (true Fisher with its sampled targets, and the empirical Fisher) and bert (Gaussian
 * likelihood on the mean-pooled embedding, with its drawn directions) fixtures and wrote {@code
 * fixtures/fisher/expected.json}; the estimator is fed the same sequences, targets and directions. Both sides are
 * float32: per-entry tolerance 2e-3 relative plus 1e-6 of the tensor's largest entry (gradients agree to ~1e-5
 * relative, squares to twice that; tiny entries are dominated by rounding).
 */
class FisherReferenceTest {
    private static JsonNode expected() throws Exception {
        return new ObjectMapper()
                .readTree(Fixtures.resource("fisher/expected.json").toFile());
    }

    private static List<long[]> ids(JsonNode node) {
        List<long[]> out = new ArrayList<>();
        for (JsonNode s : node) {
            long[] a = new long[s.size()];
            for (int i = 0; i < a.length; i++) {
                a[i] = s.get(i).asLong();
            }
            out.add(a);
        }
        return out;
    }

    private static void compare(FisherEstimator.Result r, JsonNode params, String what) {
        int compared = 0;
        for (Iterator<Map.Entry<String, JsonNode>> it = params.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            float[] f = r.diagonal().get(e.getKey());
            double refSum = e.getValue().get("sum").asDouble();
            if (f == null) {
                assertEquals(0.0, refSum, what + ": " + e.getKey() + " has no Java estimate but a non-zero reference");
                continue;
            }
            double sum = 0;
            double max = 0;
            for (float v : f) {
                sum += v;
                max = Math.max(max, v);
            }
            assertEquals(refSum, sum, 2e-3 * Math.abs(refSum) + 1e-12, what + ": sum of F over " + e.getKey());
            for (JsonNode entry : e.getValue().get("entries")) {
                int i = entry.get(0).asInt();
                double ref = entry.get(1).asDouble();
                assertEquals(
                        ref, f[i], 2e-3 * Math.abs(ref) + 1e-6 * max + 1e-15, what + ": F[" + i + "] of " + e.getKey());
                compared++;
            }
        }
        assertTrue(compared > 50, what + ": only " + compared + " entries compared");
    }

    @Test
    void llamaTrueFisherMatchesTorch() throws Exception {
        JsonNode c = expected().get("llama").get("true");
        List<long[]> seqs = ids(c.get("ids"));
        List<long[]> targets = ids(c.get("targets"));
        try (Model m = Model.open(Fixtures.hf("llama"))) {
            GradientNet net = GradientNet.load(m);
            Sampler s = (index, ids, logits, vocab) -> {
                long[] y = targets.get(index);
                int[] yi = new int[y.length];
                for (int i = 0; i < y.length; i++) {
                    yi[i] = (int) y[i];
                }
                return FisherEstimator.labels(logits, vocab, yi);
            };
            FisherEstimator.Result r = FisherEstimator.estimate(net, seqs.iterator(), s, 0, null, "llama");
            assertEquals(60.0, r.count());
            compare(r, c.get("params"), "llama true Fisher");
        }
    }

    @Test
    void llamaEmpiricalFisherMatchesTorch() throws Exception {
        JsonNode c = expected().get("llama").get("empirical");
        try (Model m = Model.open(Fixtures.hf("llama"))) {
            FisherEstimator.Result r = FisherEstimator.estimate(
                    m,
                    ids(c.get("ids")).iterator(),
                    FisherEstimator.Options.defaults().withKind(FisherEstimator.Kind.EMPIRICAL),
                    null);
            assertEquals(57.0, r.count());
            compare(r, c.get("params"), "llama empirical Fisher");
        }
    }

    @Test
    void bertGaussianEmbeddingFisherMatchesTorch() throws Exception {
        JsonNode c = expected().get("bert");
        JsonNode vs = c.get("v");
        try (Model m = Model.open(Fixtures.hf("bert"))) {
            GradientNet net = GradientNet.load(m);
            Sampler s = (index, ids, out, width) -> {
                float[] v = new float[width];
                for (int j = 0; j < width; j++) {
                    v[j] = (float) vs.get(index).get(j).asDouble();
                }
                return FisherEstimator.direction(v, ids.length);
            };
            FisherEstimator.Result r =
                    FisherEstimator.estimate(net, ids(c.get("ids")).iterator(), s, 0, null, "bert");
            assertEquals(3.0, r.count());
            compare(r, c.get("params"), "bert Gaussian-embedding Fisher");
        }
    }

    @Test
    void referenceScriptIsCommitted() {
        Path script = Fixtures.repoRoot().resolve("test/fixtures/fisher_reference.py");
        assertTrue(script.toFile().isFile(), script + " regenerates fixtures/fisher/expected.json");
    }
}
