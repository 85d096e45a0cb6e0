package scion.io.onnx;

import java.util.OptionalDouble;
import java.util.OptionalInt;

/**
 * Hyper-parameters read from an exported graph's constants, for checking (or filling in) a model's configuration.
 *
 * @param attentionHeads query heads, from the last two entries ({@code heads, headDim}) of the shape a query
 *     projection is reshaped to ({@code Constant} ints in a {@code Concat} feeding a {@code Reshape}); a {@code -1}
 *     entry is resolved from the projection's output width; a fused QKV reshaped per head to {@code [heads, n ×
 *     headDim]} and split along its last axis afterwards (GPT-NeoX: a {@code Split}, or torch's one {@code Slice} per
 *     part) gives {@code headDim} as the width of one part
 * @param keyValueHeads key/value heads (fewer than {@code attentionHeads} with grouped-query attention)
 * @param headDim dimension per head
 * @param layerNormEpsilon the most common epsilon: a {@code LayerNormalization} node's attribute, or the scalar
 *     added to the variance in a decomposed norm ({@code ReduceMean(Pow(x, 2)) + eps → Sqrt})
 * @param kind encoder or causal language model, from the graph's inputs, outputs and causal-mask operators
 * @param kindEvidence why {@code kind} was chosen
 */
public record OnnxShapeHints(
        OptionalInt attentionHeads,
        OptionalInt keyValueHeads,
        OptionalInt headDim,
        OptionalDouble layerNormEpsilon,
        ModelKind kind,
        String kindEvidence) {

    /** What the exported model computes. */
    public enum ModelKind {
        /** Bidirectional encoder (BERT-like): {@code token_type_ids}/{@code attention_mask} in, {@code last_hidden_state} out. */
        ENCODER,
        /** Decoder-only causal model (GPT-like): {@code logits} out, or a causal mask in the graph. */
        CAUSAL_LM,
        UNKNOWN
    }
}
