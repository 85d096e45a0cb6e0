package scion.io.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

class EvaluationTest {

    /** Scaled orthogonal axes: norms known, pairwise cosine 0; centred, they spread over n - 1 equal directions. */
    @Test
    void embeddingStatisticsOfOrthogonalVectors() {
        List<double[]> e = new ArrayList<>();
        for (int i = 0; i < 4; i++) {
            double[] v = new double[6];
            v[i] = 2;
            e.add(v);
        }
        Evaluation.EmbeddingStatistics s = Evaluation.embeddingStatistics(e);
        assertEquals(4, s.embeddings());
        assertEquals(6, s.dimension());
        assertEquals(2, s.normMean(), 1e-12);
        assertEquals(0, s.normStd(), 1e-12);
        assertEquals(0, s.meanPairwiseCosine(), 1e-12);
        assertEquals(s.meanPairwiseCosine(), s.anisotropy());
        assertEquals(1.0 / 3, s.firstComponentShare(), 1e-9);
    }

    /** Vectors along one direction plus a shared offset: cosines near 1, one principal direction. */
    @Test
    void anisotropicEmbeddings() {
        List<double[]> e = new ArrayList<>();
        for (int i = 1; i <= 5; i++) {
            e.add(new double[] {10 + i, 10 + i, 0});
        }
        Evaluation.EmbeddingStatistics s = Evaluation.embeddingStatistics(e);
        assertEquals(1.0, s.meanPairwiseCosine(), 1e-12);
        assertEquals(1.0, s.firstComponentShare(), 1e-12);
        assertEquals(Math.sqrt(2) * 13, s.normP50(), 1e-9);
    }
}
