package scion.io.arch;

import java.util.Locale;

/**
 * What a weight does in a transformer, independent of the family's tensor names. Operators ask for roles ("every
 * attention query projection"), never for name patterns.
 */
public enum Role {
    EMBEDDING,
    POSITION_EMBEDDING,
    TOKEN_TYPE_EMBEDDING,
    EMBEDDING_NORM,
    EMBEDDING_PROJECTION,
    ATTN_NORM,
    ATTN_Q,
    ATTN_K,
    ATTN_V,
    /** Fused query/key/value projection (gpt2 {@code c_attn}, gpt_neox {@code query_key_value}). */
    ATTN_QKV,
    ATTN_O,
    /**
     * Normalisation of the queries before RoPE: per head over {@code head_dim} (Qwen3), the weight then has axis
     * {@link Axis#HEAD_DIM} and is shared by every head.
     */
    ATTN_Q_NORM,
    /** Normalisation of the keys before RoPE, as {@link #ATTN_Q_NORM}. */
    ATTN_K_NORM,
    /** Post-attention LayerNorm of post-LN models (BERT). */
    ATTN_POST_NORM,
    /** Norm of the attention branch's output before it joins the residual stream (Gemma 2's sandwich norm). */
    ATTN_OUT_NORM,
    MLP_NORM,
    MLP_GATE,
    MLP_UP,
    MLP_DOWN,
    /** Post-MLP LayerNorm of post-LN models (BERT). */
    MLP_POST_NORM,
    /** Norm of the MLP branch's output before it joins the residual stream (Gemma 2's sandwich norm). */
    MLP_OUT_NORM,
    FINAL_NORM,
    OUTPUT_PROJECTION,
    LM_HEAD,
    POOLER,
    /** A non-trainable buffer saved with the weights (position ids, rotary inverse frequencies, causal masks). */
    BUFFER;

    /** The lower-case name used in architecture JSON and in reports. */
    public String id() {
        return name().toLowerCase(Locale.ROOT);
    }

    /** The role for an architecture JSON name. */
    public static Role fromId(String id) {
        return valueOf(id.toUpperCase(Locale.ROOT));
    }

    /** Whether the weight is a linear projection (a matrix that multiplies activations). */
    public boolean isLinear() {
        switch (this) {
            case ATTN_Q:
            case ATTN_K:
            case ATTN_V:
            case ATTN_QKV:
            case ATTN_O:
            case MLP_GATE:
            case MLP_UP:
            case MLP_DOWN:
            case LM_HEAD:
            case POOLER:
            case EMBEDDING_PROJECTION:
            case OUTPUT_PROJECTION:
                return true;
            default:
                return false;
        }
    }

    /** Whether the weight is a normalisation scale or shift. */
    public boolean isNorm() {
        return this == EMBEDDING_NORM
                || this == ATTN_NORM
                || this == ATTN_POST_NORM
                || this == ATTN_OUT_NORM
                || this == MLP_OUT_NORM
                || this == ATTN_Q_NORM
                || this == ATTN_K_NORM
                || this == MLP_NORM
                || this == MLP_POST_NORM
                || this == FINAL_NORM;
    }
}
