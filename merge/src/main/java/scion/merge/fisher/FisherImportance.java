package scion.merge.fisher;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import scion.io.Checkpoint;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.arch.Role;
import scion.io.arch.WeightGraph;
import scion.io.safetensors.SafetensorsReader;
import scion.io.tensor.Tensor;
import scion.merge.ImportanceProvider;

/**
 * The {@link ImportanceProvider} of a Fisher merge: one float32 safetensors file per input model (written by {@link
 * FisherEstimator.Result#write}, typically in the merge's staging area), memory-mapped and read back one tensor at a
 * time as the merge loop asks, so the merge stays streamed. Buffers (no parameters) get a zero Fisher.
 */
public final class FisherImportance implements ImportanceProvider, AutoCloseable {
    private final List<Checkpoint> files = new ArrayList<>();

    /** Opens the Fisher files, one per model, in the run's model order. */
    public FisherImportance(List<Path> perModel) {
        try {
            for (Path p : perModel) {
                files.add(SafetensorsReader.open(p));
            }
        } catch (RuntimeException e) {
            close();
            throw e;
        }
    }

    @Override
    public float[] importance(int modelIndex, Model model, WeightGraph.Weight weight) {
        long n = weight.tensor().numel();
        if (weight.role() == Role.BUFFER) {
            return new float[Math.toIntExact(n)];
        }
        Optional<Tensor> t = files.get(modelIndex).find(weight.name());
        if (t.isEmpty()) {
            return null;
        }
        if (t.get().numel() != n) {
            throw InvalidInputException.of(
                    files.get(modelIndex).location().toString(),
                    "Fisher tensor '" + weight.name() + "' does not match the model's weight",
                    n + " elements",
                    t.get().numel() + " elements");
        }
        return t.get().toFloats();
    }

    @Override
    public void close() {
        for (Checkpoint c : files) {
            c.close();
        }
    }
}
