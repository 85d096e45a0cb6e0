package scion.io.runtime.calibration;

import ai.onnx.proto.OnnxMl.ModelProto;
import ai.onnxruntime.NodeInfo;
import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxValue;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import ai.onnxruntime.TensorInfo;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.nio.LongBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Collections;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.function.Consumer;
import scion.io.InvalidInputException;
import scion.io.Model;
import scion.io.arch.Role;
import scion.io.config.ModelConfig.Field;
import scion.io.onnx.OnnxModel;
import scion.io.runtime.Device;
import scion.io.runtime.SessionFactory;
import scion.io.runtime.export.OnnxExporter;

/**
 * Calibration activations of a model, streamed batch by batch through ONNX Runtime: the residual stream entering
 * every layer (and after the last) and the inputs of chosen linear weights, for the operators that need them (layer
 * pruning, subcloning, activation-aware SVD).
 *
 * <p>Usage: {@code try (Calibration c = Calibration.open(model, request, options)) { c.run(sequences, consumer); }}.
 * The caller gives already tokenised sequences (token ids, one {@code long[]} per sequence, from any source,
 * read lazily); they are grouped into batches of at most {@link Options#batchTokens()} padded tokens (see {@link
 * TokenBatcher}), right-padded, and run once each. The consumer gets one {@link Batch} per run, whose {@link Rows}
 * hold only real tokens (padding is never counted); the batch is invalid once the consumer returns, and this class
 * keeps nothing from it. Peak memory is therefore one batch's activations (taps × batchTokens × width floats) plus
 * what the consumer accumulates, whatever the total token count. Ready-made consumers: {@link ResidualStats}, {@link
 * LinearInputStats}.
 *
 * <p>Inputs fed to the model: {@code input_ids} (padded with 0), {@code attention_mask} (1 real, 0 padding), {@code
 * token_type_ids} (0) and {@code position_ids} (0..len−1) when the graph has them. Right padding is exact for causal
 * models without a mask input (a causal model never attends to later positions); an encoder without a mask input only
 * accepts batches of equal lengths.
 *
 * <p>Taps come from {@link OnnxTaps}; the tapped graph is loaded as {@link TappedSession} describes (weights are not
 * copied on the Java side; external data is handed over as mapped buffers), on the device of {@link
 * Options#device()} through {@link SessionFactory}. Not thread-safe: one {@code run} at a time.
 */
public final class Calibration implements AutoCloseable {
    /** Which tokens of a sequence the residual-stream rows hold. */
    public enum Positions {
        /** The last real token of each sequence (the pruning paper's choice for causal LMs). */
        LAST_TOKEN,
        /** Every real token. */
        ALL_TOKENS
    }

    /**
     * What to capture. Residual positions are 0..L (L = after the last layer, before the final norm); linear inputs
     * are named by their weights' Hugging Face names, or chosen by role. Linear inputs always hold every real token.
     */
    public static final class Request {
        private final Positions positions;
        private final boolean allResidual;
        private final List<Integer> residual;
        private final List<String> linear;
        private final Set<Role> linearRoles;

        private Request(
                Positions positions,
                boolean allResidual,
                List<Integer> residual,
                List<String> linear,
                Set<Role> linearRoles) {
            this.positions = positions;
            this.allResidual = allResidual;
            this.residual = List.copyOf(residual);
            this.linear = List.copyOf(linear);
            this.linearRoles =
                    linearRoles.isEmpty() ? Set.of() : Collections.unmodifiableSet(EnumSet.copyOf(linearRoles));
        }

        /** Nothing captured yet; residual rows at {@code positions}. */
        public static Request of(Positions positions) {
            return new Request(positions, false, List.of(), List.of(), Set.of());
        }

        /** Adds the residual stream at every position 0..L. */
        public Request withResidualStream() {
            return new Request(positions, true, residual, linear, linearRoles);
        }

        /** Adds the residual stream at these positions (0..L). */
        public Request withResidualStream(int... streamPositions) {
            List<Integer> r = new ArrayList<>(residual);
            for (int p : streamPositions) {
                r.add(p);
            }
            return new Request(positions, allResidual, r, linear, linearRoles);
        }

        /** Adds the inputs of these linear weights (Hugging Face names). */
        public Request withLinearInputs(Collection<String> weights) {
            List<String> l = new ArrayList<>(linear);
            l.addAll(weights);
            return new Request(positions, allResidual, residual, l, linearRoles);
        }

        /**
         * Adds the inputs of every linear weight with one of these roles. {@link Role#MLP_DOWN}'s input is the FFN
         * intermediate activation (one column per neuron), which neuron importance needs.
         */
        public Request withLinearInputs(Role... roles) {
            Set<Role> r = linearRoles.isEmpty() ? EnumSet.noneOf(Role.class) : EnumSet.copyOf(linearRoles);
            r.addAll(Arrays.asList(roles));
            return new Request(positions, allResidual, residual, linear, r);
        }

        public Positions positions() {
            return positions;
        }
    }

    /**
     * How to batch.
     *
     * @param batchTokens the token budget of one run: sequences × padded length ≤ batchTokens
     * @param maxTokens stop after this many real tokens (the {@code --tokens T} budget); {@link Long#MAX_VALUE} for all
     * @param maxLength longer sequences are cut to their first {@code maxLength} tokens; 0 = the model's maximum
     *     positions when known, else {@code batchTokens}
     * @param threads ONNX Runtime intra-op threads
     * @param device where ONNX Runtime runs ({@link SessionFactory}: {@code cuda} fails clearly when unavailable)
     */
    public record Options(int batchTokens, long maxTokens, int maxLength, int threads, Device device) {
        public Options {
            if (device == null) {
                throw new IllegalArgumentException("device must not be null");
            }
            if (batchTokens < 1) {
                throw new InvalidInputException("calibration: batchTokens must be positive; found " + batchTokens);
            }
            if (maxTokens < 1) {
                throw new InvalidInputException("calibration: tokens must be positive; found " + maxTokens);
            }
            if (maxLength < 0 || threads < 1) {
                throw new InvalidInputException(
                        "calibration: maxLength must be ≥ 0 and threads ≥ 1; found " + maxLength + " and " + threads);
            }
        }

        /** 2048 tokens per run, every token, model's maximum length, one thread per core, CPU. */
        public static Options defaults() {
            return new Options(2048, Long.MAX_VALUE, 0, Runtime.getRuntime().availableProcessors(), Device.CPU);
        }

        public Options withBatchTokens(int n) {
            return new Options(n, maxTokens, maxLength, threads, device);
        }

        public Options withMaxTokens(long n) {
            return new Options(batchTokens, n, maxLength, threads, device);
        }

        public Options withMaxLength(int n) {
            return new Options(batchTokens, maxTokens, n, threads, device);
        }

        public Options withThreads(int n) {
            return new Options(batchTokens, maxTokens, maxLength, n, device);
        }

        public Options withDevice(Device d) {
            return new Options(batchTokens, maxTokens, maxLength, threads, d);
        }
    }

    /**
     * What a run did.
     *
     * @param batches model runs
     * @param sequences sequences seen (after cutting)
     * @param tokens real tokens
     * @param paddedTokens tokens including padding
     * @param truncatedSequences sequences cut to the maximum length
     * @param seconds wall time of the whole run, consumer included
     * @param forwardSeconds time inside ONNX Runtime
     */
    public record Summary(
            long batches,
            long sequences,
            long tokens,
            long paddedTokens,
            long truncatedSequences,
            double seconds,
            double forwardSeconds) {
        /** Real tokens per second of wall time. */
        public double tokensPerSecond() {
            return seconds > 0 ? tokens / seconds : 0;
        }
    }

    /**
     * One model run's activations. Valid only inside the consumer call; afterwards every accessor throws {@link
     * IllegalStateException}.
     */
    public final class Batch {
        private final int index;
        private final int[] lengths;
        private final int padded;
        private final OrtSession.Result result;
        private final Map<String, Rows> packed = new HashMap<>();
        private boolean open = true;

        private Batch(int index, int[] lengths, int padded, OrtSession.Result result) {
            this.index = index;
            this.lengths = lengths;
            this.padded = padded;
            this.result = result;
        }

        void checkOpen() {
            if (!open) {
                throw new IllegalStateException(
                        "calibration batch " + index + " is no longer valid: activations live only during the"
                                + " consumer call; copy what you need");
            }
        }

        /** 0-based index of this run. */
        public int index() {
            return index;
        }

        public int sequences() {
            checkOpen();
            return lengths.length;
        }

        /** Real tokens of sequence {@code s}. */
        public int length(int s) {
            checkOpen();
            return lengths[s];
        }

        /** The padded sequence length of the run. */
        public int paddedLength() {
            checkOpen();
            return padded;
        }

        /** Real tokens in the batch. */
        public long tokens() {
            checkOpen();
            long n = 0;
            for (int l : lengths) {
                n += l;
            }
            return n;
        }

        /** The residual-stream positions captured (0..L). */
        public List<Integer> residualPositions() {
            return residualPositions;
        }

        /** The linear weights whose inputs were captured. */
        public List<String> linearInputs() {
            return linearNames;
        }

        /** The residual stream at position {@code i} (0..L), rows as the request's {@link Positions}. */
        public Rows residual(int i) {
            checkOpen();
            OnnxTaps.Tap t = residualTaps.get(i);
            if (t == null) {
                throw new IllegalArgumentException(
                        "residual position " + i + " was not requested; requested " + residualPositions);
            }
            return packed.computeIfAbsent(
                    "residual." + i, k -> pack(k, t.tensor(), request.positions() == Positions.LAST_TOKEN));
        }

        /** The input of linear weight {@code weight} (Hugging Face name), every real token. */
        public Rows linearInput(String weight) {
            checkOpen();
            OnnxTaps.Tap t = linearTaps.get(weight);
            if (t == null) {
                throw new IllegalArgumentException("linear input of '" + weight + "' was not requested");
            }
            return packed.computeIfAbsent(weight, k -> pack(k, t.tensor(), false));
        }

        private Rows pack(String name, String tensor, boolean lastOnly) {
            Optional<OnnxValue> v = result.get(tensor);
            if (v.isEmpty() || !(v.get() instanceof OnnxTensor ot)) {
                throw new IllegalStateException("tap '" + tensor + "' missing from the ONNX Runtime result");
            }
            TensorInfo info = ot.getInfo();
            long[] shape = info.getShape();
            int b = lengths.length;
            long width = shape.length == 0 ? 0 : shape[shape.length - 1];
            long numel = info.getNumElements();
            if (shape.length < 2 || width <= 0 || numel != (long) b * padded * width) {
                throw new IllegalStateException(
                        "tap '" + tensor + "' (" + name + ") has shape " + Arrays.toString(shape) + "; expected [" + b
                                + ", " + padded + ", width] or [" + b * padded + ", width]");
            }
            if (info.type != OnnxJavaType.FLOAT
                    && info.type != OnnxJavaType.FLOAT16
                    && info.type != OnnxJavaType.BFLOAT16) {
                throw new IllegalStateException("tap '" + tensor + "' holds " + info.type + "; expected floats");
            }
            FloatBuffer fb = ot.getFloatBuffer();
            int w = Math.toIntExact(width);
            int rows = 0;
            for (int l : lengths) {
                rows += lastOnly ? 1 : l;
            }
            int[] seq = new int[rows];
            int[] pos = new int[rows];
            float[] out;
            boolean dense = !lastOnly
                    && rows == b * padded
                    && fb.hasArray()
                    && fb.arrayOffset() == 0
                    && fb.array().length == rows * w;
            out = dense ? fb.array() : new float[Math.multiplyExact(rows, w)];
            int r = 0;
            for (int s = 0; s < b; s++) {
                int from = lastOnly ? lengths[s] - 1 : 0;
                for (int t = from; t < lengths[s]; t++, r++) {
                    seq[r] = s;
                    pos[r] = t;
                    if (!dense) {
                        fb.get((s * padded + t) * w, out, r * w, w);
                    }
                }
            }
            return new Rows(this, name, out, rows, w, seq, pos);
        }

        private void close() {
            open = false;
            packed.clear();
        }
    }

    private final OnnxTaps taps;
    private final Request request;
    private final Options options;
    private final OrtEnvironment env;
    private final TappedSession session;
    private final Device device;
    private final String deviceNote;
    private final boolean causal;
    private final int maxLength;
    private final List<Integer> residualPositions;
    private final List<String> linearNames;
    private final Map<Integer, OnnxTaps.Tap> residualTaps = new LinkedHashMap<>();
    private final Map<String, OnnxTaps.Tap> linearTaps = new LinkedHashMap<>();
    private final Set<String> fetch = new LinkedHashSet<>();
    private final Map<String, NodeInfo> inputs;
    private final String where;

    /** Opens the session on the tapped graph. */
    private interface Opener {
        TappedSession open(OrtEnvironment env, ModelProto tapped, OrtSession.SessionOptions options)
                throws OrtException;
    }

    private Calibration(Model model, OnnxTaps taps, Opener opener, Request request, Options options)
            throws OrtException {
        this.taps = taps;
        this.request = request;
        this.options = options;
        this.where = model.location().getFileName().toString();
        this.causal = model.graph().architecture().isCausalLm();
        int layers = taps.layers();
        List<Integer> positions = new ArrayList<>();
        if (request.allResidual) {
            for (int i = 0; i <= layers; i++) {
                positions.add(i);
            }
        }
        for (int p : request.residual) {
            if (p < 0 || p > layers) {
                throw InvalidInputException.of(
                        where, "residual position " + p + " requested", "0.." + layers + " (L = " + layers + ")", p);
            }
            if (!positions.contains(p)) {
                positions.add(p);
            }
        }
        Collections.sort(positions);
        for (int p : positions) {
            residualTaps.put(p, taps.residual(p));
        }
        List<OnnxTaps.Tap> linear = new ArrayList<>();
        if (!request.linearRoles.isEmpty()) {
            linear.addAll(taps.linearInputs(request.linearRoles));
        }
        for (String w : request.linear) {
            linear.add(taps.linearInput(w));
        }
        for (OnnxTaps.Tap t : linear) {
            linearTaps.putIfAbsent(t.weight(), t);
        }
        this.residualPositions = List.copyOf(positions);
        this.linearNames = List.copyOf(linearTaps.keySet());
        List<OnnxTaps.Tap> all = new ArrayList<>(residualTaps.values());
        all.addAll(linearTaps.values());
        for (OnnxTaps.Tap t : all) {
            fetch.add(t.tensor());
        }
        if (fetch.isEmpty()) {
            throw InvalidInputException.of(
                    where, "empty calibration request", "residual positions or linear inputs", "nothing requested");
        }
        int maxPos = model.config().integer(Field.MAX_POSITIONS).orElse(0);
        int len = options.maxLength() > 0 ? options.maxLength() : (maxPos > 0 ? maxPos : options.batchTokens());
        this.maxLength = Math.min(len, options.batchTokens());
        ModelProto tapped = OnnxTaps.withOutputs(taps.proto(), all);
        this.env = OrtEnvironment.getEnvironment();
        TappedSession[] opened = new TappedSession[1];
        SessionFactory.Opened o = SessionFactory.open(options.device(), where, so -> {
            so.setIntraOpNumThreads(options.threads());
            so.setInterOpNumThreads(1);
            opened[0] = opener.open(env, tapped, so);
            return opened[0].session();
        });
        this.session = opened[0]; // closed by close(), with the buffers it handed to ONNX Runtime
        this.device = o.device();
        this.deviceNote = o.note();
        try {
            this.inputs = session.session().getInputInfo();
        } catch (OrtException | RuntimeException e) {
            session.close();
            throw e;
        }
        for (String in : inputs.keySet()) {
            if (!KNOWN_INPUTS.contains(in)) {
                close();
                throw InvalidInputException.of(
                        where, "model input '" + in + "' cannot be fed by calibration", KNOWN_INPUTS, inputs.keySet());
            }
        }
        if (!inputs.containsKey("input_ids")) {
            close();
            throw InvalidInputException.of(where, "no 'input_ids' input", "a token-id input", inputs.keySet());
        }
    }

    private static final List<String> KNOWN_INPUTS =
            List.of("input_ids", "attention_mask", "token_type_ids", "position_ids");

    /**
     * Locates the taps of {@code model} and loads its tapped graph in ONNX Runtime on {@code options.device()} with
     * {@code options.threads()} intra-op threads. A safetensors checkpoint is exported first ({@link OnnxExporter}, in
     * memory, with its {@code hidden_states.*} residual outputs); an ONNX model runs as it is.
     *
     * @throws InvalidInputException for a request the model cannot serve (unknown weight, position out of range,
     *     graph inputs calibration cannot feed, residual stream not found)
     * @throws scion.io.UnavailableException for {@code cuda} without CUDA
     */
    public static Calibration open(Model model, Request request, Options options) {
        OnnxTaps taps;
        Opener opener;
        Optional<OnnxModel> onnx = model.onnx();
        if (onnx.isPresent()) {
            taps = OnnxTaps.locate(model);
            opener = (env, tapped, so) -> TappedSession.open(env, onnx.get(), tapped, so);
        } else {
            OnnxExporter.Exported exported =
                    OnnxExporter.export(model, OnnxExporter.Options.defaults().withResidualStreamOutputs(true));
            taps = OnnxTaps.locate(
                    exported.model(),
                    model.graph(),
                    model.location().getFileName().toString());
            opener = (env, tapped, so) -> TappedSession.of(
                    OnnxExporter.openSession(env, new OnnxExporter.Exported(tapped, exported.initializers()), so),
                    "exported in memory (" + exported.initializers().size() + " weights handed over)");
        }
        try {
            return new Calibration(model, taps, opener, request, options);
        } catch (OrtException e) {
            throw new IllegalStateException(
                    model.location() + ": ONNX Runtime cannot load the tapped graph: " + e.getMessage(), e);
        }
    }

    /** Where the activations come from. */
    public OnnxTaps taps() {
        return taps;
    }

    /** The residual positions captured. */
    public List<Integer> residualPositions() {
        return residualPositions;
    }

    /** The linear weights whose inputs are captured. */
    public List<String> linearInputs() {
        return linearNames;
    }

    /** The effective maximum sequence length. */
    public int maxLength() {
        return maxLength;
    }

    /** How the tapped graph was loaded, for reports. */
    public String loading() {
        return session.loading();
    }

    /** Runs the sequences (already tokenised); see {@link #run(Iterator, Consumer)}. */
    public Summary run(long[][] sequences, Consumer<? super Batch> consumer) {
        return run(Arrays.asList(sequences).iterator(), consumer);
    }

    /**
     * Streams {@code sequences} through the model in batches under the token budget and hands every batch to {@code
     * consumer}. Only the batch being consumed is in memory.
     */
    public Summary run(Iterator<long[]> sequences, Consumer<? super Batch> consumer) {
        TokenBatcher batcher = new TokenBatcher(sequences, options.batchTokens(), maxLength, options.maxTokens());
        long start = System.nanoTime();
        long forward = 0;
        long batches = 0;
        long seqs = 0;
        long tokens = 0;
        long padded = 0;
        while (batcher.hasNext()) {
            List<long[]> batch = batcher.next();
            int b = batch.size();
            int[] lengths = new int[b];
            int s = 0;
            for (int i = 0; i < b; i++) {
                lengths[i] = batch.get(i).length;
                s = Math.max(s, lengths[i]);
            }
            Map<String, OnnxTensor> feed = new HashMap<>();
            try {
                feed(feed, batch, lengths, s, Math.toIntExact(batches));
                long t0 = System.nanoTime();
                try (OrtSession.Result result = session.session().run(feed, fetch)) {
                    forward += System.nanoTime() - t0;
                    Batch view = new Batch(Math.toIntExact(batches), lengths, s, result);
                    try {
                        consumer.accept(view);
                    } finally {
                        view.close();
                    }
                }
            } catch (OrtException e) {
                throw new IllegalStateException(
                        where + ": ONNX Runtime failed on calibration batch " + batches + " (" + b + " × " + s
                                + " tokens): " + e.getMessage(),
                        e);
            } finally {
                for (OnnxTensor t : feed.values()) {
                    t.close();
                }
            }
            batches++;
            seqs += b;
            for (int l : lengths) {
                tokens += l;
            }
            padded += (long) b * s;
        }
        double secs = (System.nanoTime() - start) / 1e9;
        return new Summary(batches, seqs, tokens, padded, batcher.truncatedSequences(), secs, forward / 1e9);
    }

    private void feed(Map<String, OnnxTensor> feed, List<long[]> batch, int[] lengths, int s, int index)
            throws OrtException {
        int b = batch.size();
        boolean ragged = false;
        for (int l : lengths) {
            ragged |= l != s;
        }
        if (ragged && !causal && !inputs.containsKey("attention_mask")) {
            throw InvalidInputException.of(
                    where,
                    "calibration batch " + index + " needs padding, but this encoder has no attention_mask input",
                    "sequences of equal length (or a model with an attention_mask input)",
                    "lengths " + Arrays.toString(lengths));
        }
        long[] shape = {b, s};
        int n = b * s;
        for (Map.Entry<String, NodeInfo> e : inputs.entrySet()) {
            long[] v = new long[n];
            switch (e.getKey()) {
                case "input_ids" -> {
                    for (int i = 0; i < b; i++) {
                        System.arraycopy(batch.get(i), 0, v, i * s, lengths[i]);
                    }
                }
                case "attention_mask" -> {
                    for (int i = 0; i < b; i++) {
                        Arrays.fill(v, i * s, i * s + lengths[i], 1L);
                    }
                }
                case "position_ids" -> {
                    for (int i = 0; i < b; i++) {
                        for (int t = 0; t < s; t++) {
                            v[i * s + t] = t;
                        }
                    }
                }
                default -> {
                    // token_type_ids: zeros
                }
            }
            feed.put(e.getKey(), tensor(e.getKey(), e.getValue(), v, shape));
        }
    }

    private OnnxTensor tensor(String name, NodeInfo info, long[] v, long[] shape) throws OrtException {
        OnnxJavaType type = info.getInfo() instanceof TensorInfo ti ? ti.type : null;
        if (type == OnnxJavaType.INT64) {
            return OnnxTensor.createTensor(env, LongBuffer.wrap(v), shape);
        }
        if (type == OnnxJavaType.INT32) {
            int[] iv = new int[v.length];
            for (int i = 0; i < v.length; i++) {
                iv[i] = Math.toIntExact(v[i]);
            }
            return OnnxTensor.createTensor(env, IntBuffer.wrap(iv), shape);
        }
        throw InvalidInputException.of(where, "model input '" + name + "' has type " + type, "int64 or int32", type);
    }

    /** The device ONNX Runtime runs on ({@link Device#CPU} or {@link Device#CUDA}, never {@code AUTO}). */
    public Device device() {
        return device;
    }

    /** How the device was chosen ({@code auto}'s reason), or empty. */
    public String deviceNote() {
        return deviceNote;
    }

    @Override
    public void close() {
        session.close();
    }
}
