package scion.test.lowrank;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.Model;
import scion.io.arch.WeightGraph.Weight;
import scion.io.safetensors.SafetensorsCheckpoint;
import scion.io.safetensors.SafetensorsReader;
import scion.io.safetensors.SafetensorsWriter;
import scion.io.tensor.DType;
import scion.io.tensor.Tensor;
import scion.lowrank.LowRankOps;
import scion.lowrank.LowRankOutput;
import scion.lowrank.SvdLowRank;
import scion.test.Fixtures;

/**
 * {@link LowRankOutput.Streamed}: nothing is factored before the writer reads, each weight is factored once, in write
 * order, when the writer reaches its first factor, and the written factors are the ones a direct factorisation gives.
 */
class LowRankStreamingTest {
    @Test
    void eachWeightIsFactoredOnceWhenTheWriterReachesIt(@TempDir Path dir) {
        SvdLowRank.Params params =
                SvdLowRank.Params.of(SvdLowRank.Method.SVD, new SvdLowRank.RankRule(SvdLowRank.RankRule.Kind.RANK, 4));
        try (Model m = Model.open(Fixtures.hf("llama"))) {
            Map<String, Weight> targets = new LinkedHashMap<>();
            Map<String, Integer> ranks = new LinkedHashMap<>();
            for (Weight w : SvdLowRank.targets(m.graph(), SvdLowRank.DEFAULT_TARGETS)) {
                int[] oi = SvdLowRank.outIn(w);
                int r = SvdLowRank.rankFromShape(params, oi[0], oi[1]);
                assertEquals(4, r, w.name());
                targets.put(w.name(), w);
                ranks.put(w.name(), r);
            }
            List<String> calls = new ArrayList<>();
            LowRankOutput.Streamed s = new LowRankOutput.Streamed(targets, ranks, LowRankOutput.Store.FACTORS, w -> {
                calls.add(w.name());
                return SvdLowRank.factor(w.name(), SvdLowRank.read(w), params, null, null, LowRankOps.Products.JAVA);
            });
            List<Tensor> tensors = LowRankOutput.safetensors(m, targets, s.tensors());
            assertEquals(0, calls.size(), "planning reads no weight");
            List<String> writeOrder = new ArrayList<>();
            for (Tensor t : tensors) {
                for (Map.Entry<String, List<Tensor>> e : s.tensors().entrySet()) {
                    if (e.getValue().get(0) == t) {
                        writeOrder.add(e.getKey());
                    }
                }
            }
            SafetensorsWriter.create().write(dir.resolve("out"), tensors);
            assertEquals(writeOrder, calls, "one factorisation per weight, in write order");
            assertEquals(targets.keySet(), s.results().keySet());
            for (SvdLowRank.Result r : s.results().values()) {
                assertEquals(4, r.rank());
                assertTrue(r.a() == null && r.b() == null, "only the report is kept");
            }
            try (SafetensorsCheckpoint out = SafetensorsReader.open(dir.resolve("out/model.safetensors"))) {
                String name = "model.layers.0.mlp.up_proj.weight";
                Weight w = targets.get(name);
                SvdLowRank.Result direct =
                        SvdLowRank.factor(name, SvdLowRank.read(w), params, null, null, LowRankOps.Products.JAVA);
                Tensor a =
                        out.find("model.layers.0.mlp.up_proj.lowrank_a.weight").orElseThrow();
                assertEquals(DType.F32, a.dtype());
                float[] got = a.toFloats();
                double[] exp = direct.a().data; // [r, in], as stored by a Linear weight
                assertEquals(exp.length, got.length);
                for (int i = 0; i < exp.length; i++) {
                    assertEquals((float) exp[i], got[i], 0f, "element " + i);
                }
            }
        }
    }
}
