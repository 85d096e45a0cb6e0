package scion.io.runtime.calibration;

import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Consumer;
import org.ejml.data.DMatrixRMaj;

/**
 * Statistics of the inputs X ({@code [tokens, in]}) of linear layers, accumulated batch by batch over every real
 * token: what activation-aware factorisation and neuron importance need.
 *
 * <ul>
 *   <li>mean |x_j| per input column j (ASVD, Yuan et al. 2023: the scaling diag(mean|x|^α)); for an MLP down
 *       projection the input columns are the FFN neurons, so this is also the per-neuron mean |activation| used by
 *       subcloning (request the inputs with {@code Request.withLinearInputs(Role.MLP_DOWN)});
 *   <li>optionally XᵀX ({@code [in, in]}, float64 products and sums), the matrix SVD-LLM (Wang et al. 2024) whitens
 *       with. It is the sum over tokens; divide by {@link #rows(String)} for the second moment.
 * </ul>
 *
 * <p>XᵀX is computed per batch by ONNX Runtime's float64 MatMul ({@link OrtGram}, about 4× the pure-Java kernel
 * {@link CalibrationOps#addGramUpper}) and summed in float64 across batches. It costs tokens × in² multiply-adds per
 * weight: on a 2-core machine it can exceed the model's forward, so ask for it only on the weights being factored.
 * Memory: {@code in} doubles per tracked weight, plus 2·{@code in²} doubles per Gram width and weight (the sum and
 * one reused output; 128 MiB each for in = 4096), whatever the token count. Close it to release the Gram sessions.
 */
public final class LinearInputStats implements Consumer<Calibration.Batch>, AutoCloseable {
    private static final class Acc {
        double[] absSums;
        double[] gram; // [in, in]
        long rows;
    }

    private final Map<String, Acc> acc = new LinkedHashMap<>();
    private final Set<String> gramWeights;
    private final int threads;
    private OrtGram ortGram;

    /**
     * @param weights the linear weights (Hugging Face names) whose inputs to average; each must be in the request
     * @param gramWeights the subset that also accumulates XᵀX
     */
    public LinearInputStats(Collection<String> weights, Collection<String> gramWeights) {
        this(weights, gramWeights, Runtime.getRuntime().availableProcessors());
    }

    /** As {@link #LinearInputStats(Collection, Collection)}, with {@code threads} ONNX Runtime threads for XᵀX. */
    public LinearInputStats(Collection<String> weights, Collection<String> gramWeights, int threads) {
        this.threads = threads;
        this.gramWeights = Set.copyOf(gramWeights);
        Set<String> all = new LinkedHashSet<>(weights);
        all.addAll(gramWeights);
        for (String w : all) {
            acc.put(w, new Acc());
        }
    }

    /** Mean |x| only, for these weights. */
    public static LinearInputStats meanAbs(Collection<String> weights) {
        return new LinearInputStats(weights, List.of());
    }

    /** Mean |x| and XᵀX for these weights. */
    public static LinearInputStats withGram(Collection<String> weights) {
        return new LinearInputStats(weights, weights);
    }

    @Override
    public void accept(Calibration.Batch batch) {
        for (Map.Entry<String, Acc> e : acc.entrySet()) {
            Rows x = batch.linearInput(e.getKey());
            Acc a = e.getValue();
            int w = x.width();
            if (a.absSums == null) {
                a.absSums = new double[w];
                if (gramWeights.contains(e.getKey())) {
                    a.gram = new double[Math.multiplyExact(w, w)];
                }
            } else if (a.absSums.length != w) {
                throw new IllegalStateException(
                        "input of '" + e.getKey() + "' changed width from " + a.absSums.length + " to " + w);
            }
            CalibrationOps.addAbsColumnSums(x.data(), x.rows(), w, a.absSums);
            if (a.gram != null) {
                if (ortGram == null) {
                    ortGram = new OrtGram(threads);
                }
                ortGram.add(x.data(), x.rows(), w, a.gram);
            }
            a.rows += x.rows();
        }
    }

    /** The weights tracked. */
    public Set<String> weights() {
        return acc.keySet();
    }

    /** Tokens seen for {@code weight}. */
    public long rows(String weight) {
        return get(weight).rows;
    }

    /** Mean |x_j| per input column j of {@code weight}. */
    public double[] meanAbs(String weight) {
        Acc a = get(weight);
        if (a.absSums == null) {
            return new double[0];
        }
        double[] m = a.absSums.clone();
        for (int j = 0; j < m.length; j++) {
            m[j] /= a.rows;
        }
        return m;
    }

    /** XᵀX of {@code weight}'s input, {@code [in, in]}, summed over tokens in float64 (a copy). */
    public DMatrixRMaj gram(String weight) {
        Acc a = get(weight);
        if (!gramWeights.contains(weight)) {
            throw new IllegalArgumentException("XᵀX of '" + weight + "' was not requested");
        }
        if (a.gram == null) {
            throw new IllegalStateException("no activations of '" + weight + "' seen yet");
        }
        int w = a.absSums.length;
        return new DMatrixRMaj(w, w, true, a.gram);
    }

    /** Releases the ONNX Runtime sessions of the XᵀX kernel; the statistics stay readable. */
    @Override
    public void close() {
        if (ortGram != null) {
            ortGram.close();
            ortGram = null;
        }
    }

    private Acc get(String weight) {
        Acc a = acc.get(weight);
        if (a == null) {
            throw new IllegalArgumentException("'" + weight + "' is not tracked; tracked: " + acc.keySet());
        }
        return a;
    }
}
