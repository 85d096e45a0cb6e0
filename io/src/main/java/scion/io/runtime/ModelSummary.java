package scion.io.runtime;

/**
 * A model as a report shows it: what it is, its size on disk, where it ran and how fast.
 *
 * @param location the file or folder
 * @param format {@code onnx} or {@code safetensors}
 * @param family architecture family
 * @param kind {@code causal_lm} or {@code encoder}
 * @param vocab vocabulary size
 * @param sizeBytes bytes on disk (model and weight files)
 * @param device {@code cpu} or {@code cuda}: where it ran
 * @param deviceNote how the device was chosen ({@code auto: …}), or empty
 * @param latencyMs median wall time of one forward pass of {@code latencyBatch}, in milliseconds (NaN when not timed)
 * @param latencyRuns how many timed passes the median is over
 * @param latencyBatch the timed batch shape, e.g. {@code [8, 128]}
 */
public record ModelSummary(
        String location,
        String format,
        String family,
        String kind,
        int vocab,
        long sizeBytes,
        String device,
        String deviceNote,
        double latencyMs,
        int latencyRuns,
        String latencyBatch) {

    static ModelSummary of(RuntimeModel m, double latencyMs, int runs, String batch) {
        RuntimeModel.Info i = m.info();
        return new ModelSummary(
                i.location().toString(),
                i.format(),
                i.family(),
                i.kind().id(),
                i.vocab(),
                i.sizeBytes(),
                m.device().id(),
                m.deviceNote(),
                latencyMs,
                runs,
                batch);
    }
}
