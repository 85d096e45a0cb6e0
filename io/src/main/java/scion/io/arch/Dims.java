package scion.io.arch;

import java.util.ArrayList;
import java.util.List;
import scion.io.InvalidInputException;
import scion.io.config.ModelConfig;
import scion.io.config.ModelConfig.Field;

/**
 * The sizes of a model, read from its config through its family's conventions.
 *
 * @param hidden residual stream width
 * @param layers number of transformer blocks
 * @param heads query heads
 * @param kvHeads key/value heads (= heads without GQA; 1 for MQA)
 * @param headDim width of one head
 * @param ffn MLP intermediate size
 * @param vocab vocabulary rows of the embedding
 * @param positions rows of the learned position table (max positions + offset; 0 for RoPE families)
 * @param typeVocab token types (BERT), else 0
 * @param tied whether the output head shares the embedding
 */
public record Dims(
        int hidden,
        int layers,
        int heads,
        int kvHeads,
        int headDim,
        int ffn,
        int vocab,
        int positions,
        int typeVocab,
        boolean tied) {

    /** Reads the sizes; every missing required field is reported at once. */
    public static Dims of(Architecture arch, ModelConfig cfg) {
        List<String> missing = new ArrayList<>();
        int hidden = get(cfg, Field.HIDDEN, missing);
        int layers = get(cfg, Field.LAYERS, missing);
        int heads = get(cfg, Field.HEADS, missing);
        int vocab = get(cfg, Field.VOCAB, missing);
        int ffn = cfg.integer(Field.INTERMEDIATE)
                .orElseGet(() -> arch.ffnDefaultFactor() > 0
                        ? Math.multiplyExact(arch.ffnDefaultFactor(), hidden)
                        : get(cfg, Field.INTERMEDIATE, missing));
        int positions = 0;
        if ("learned".equals(arch.position())) {
            positions = Math.addExact(get(cfg, Field.MAX_POSITIONS, missing), arch.positionOffset());
        }
        int typeVocab = arch.weights().stream().anyMatch(w -> w.role() == Role.TOKEN_TYPE_EMBEDDING)
                ? get(cfg, Field.TYPE_VOCAB, missing)
                : 0;
        if (!missing.isEmpty()) {
            throw InvalidInputException.of(
                    cfg.source(), "missing size fields for " + arch.family(), "all of " + missing, "none");
        }
        int kvHeads = cfg.integer(Field.KV_HEADS).orElse(heads);
        if (heads <= 0 || hidden <= 0) {
            throw InvalidInputException.of(
                    cfg.source(), "non-positive size", "hidden and heads > 0", "hidden " + hidden + ", heads " + heads);
        }
        int headDim = cfg.integer(Field.HEAD_DIM).orElse(hidden / heads);
        if (!cfg.integer(Field.HEAD_DIM).isPresent() && hidden % heads != 0) {
            throw InvalidInputException.of(
                    cfg.source(),
                    "hidden size is not a multiple of the number of heads",
                    "hidden % heads == 0",
                    hidden + " % " + heads);
        }
        if (kvHeads <= 0 || heads % kvHeads != 0) {
            throw InvalidInputException.of(
                    cfg.source(),
                    "query heads are not a multiple of key/value heads",
                    "heads % kv_heads == 0",
                    heads + " % " + kvHeads);
        }
        boolean tied = cfg.bool(Field.TIE_EMBEDDINGS).orElse(arch.tieDefault());
        return new Dims(hidden, layers, heads, kvHeads, headDim, ffn, vocab, positions, typeVocab, tied);
    }

    private static int get(ModelConfig cfg, Field f, List<String> missing) {
        var v = cfg.integer(f);
        if (v.isEmpty()) {
            missing.add(f.keys().get(0));
            return 0;
        }
        return v.get();
    }

    /** The size of an axis space, or -1 for {@link Axis#ANY}. */
    public long size(Axis a) {
        switch (a) {
            case RESIDUAL:
                return hidden;
            case VOCAB:
                return vocab;
            case POSITIONS:
                return positions;
            case TOKEN_TYPES:
                return typeVocab;
            case Q:
                return (long) heads * headDim;
            case KV:
                return (long) kvHeads * headDim;
            case HEAD_DIM:
                return headDim;
            case QKV:
                return (long) (heads + 2L * kvHeads) * headDim;
            case FFN:
                return ffn;
            default:
                return -1;
        }
    }
}
