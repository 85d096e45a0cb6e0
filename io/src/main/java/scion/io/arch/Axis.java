package scion.io.arch;

import java.util.Locale;

/**
 * The space an axis of a weight lives in. Operators that change a size change every axis in that space at once
 * ("widen every axis in the residual space").
 */
public enum Axis {
    /** The residual stream (hidden size). */
    RESIDUAL,
    VOCAB,
    /** Learned positions (max positions plus the family's offset). */
    POSITIONS,
    TOKEN_TYPES,
    /** Query heads × head dim. */
    Q,
    /** Key/value heads × head dim. */
    KV,
    /** One head's width ({@code head_dim}): per-head weights shared by every head (Qwen3's q/k norms). */
    HEAD_DIM,
    /** Fused query + key + value. */
    QKV,
    /** The MLP's intermediate neurons. */
    FFN,
    /** Not checked (buffers, optional projections). */
    ANY;

    public String id() {
        return name().toLowerCase(Locale.ROOT);
    }

    public static Axis fromId(String id) {
        return valueOf(id.toUpperCase(Locale.ROOT));
    }
}
