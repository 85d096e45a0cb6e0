#!/usr/bin/env bash
# Export of model variants the committed fixtures do not cover, against Hugging Face transformers (development
# check, not CI: needs the Python venv with torch + transformers, see test/fixtures/README.md).
#
# Generates tiny random checkpoints with transformers (hidden 64, 2 layers, seed 0) for: llama3 and linear RoPE
# scaling, llama with attention/MLP biases and tied head, mistral with a sliding window of 3, qwen2 with a sliding
# window on its second layer only, OPT post-LN (do_layer_norm_before = false), gpt2 with
# scale_attn_by_inverse_layer_idx, GPT-NeoX with sequential residual and rotary_pct 0.5, bert; records their outputs
# (eager attention, float32) for a batch of 2 x 9 tokens whose first row is left-padded by 2; then exports each with
# OnnxExporter, runs it in ONNX Runtime (no written file) and prints max|Δ| / max|ref| over all positions and over
# the real tokens. Exit 1 when a real-token error is above 1e-4.
#
# Usage: test/bench/export-variants.sh [PYTHON]     (default /work/venv/bin/python)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/safetensors-common.sh"
PY=${1:-/work/venv/bin/python}

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/scion-export-variants.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
st_build "$WORK"
mkdir -p "$WORK/classes"
cp -r "$ROOT/io/target/classes" "$WORK/classes/main"
cp -r "$ROOT/io/target/test-classes" "$WORK/classes/test"
CP="$WORK/classes/main:$WORK/classes/test:$(cat "$WORK/cp.txt")"

"$PY" - "$WORK/variants" <<'EOF' 2>&1 | grep -v -i -E "warn|Writing model shards|bos_token_id|eos_token_id"
import json, os, sys
import torch
from transformers import (BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM,
                          LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, OPTConfig, OPTForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)
out_dir = sys.argv[1]
torch.manual_seed(0)
base = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=128,
            max_position_embeddings=64)
ids = torch.tensor([[17, 37, 71, 119, 53, 1, 91, 5, 9], [48, 68, 102, 22, 84, 32, 122, 7, 8]])
mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1, 1]])

def save(name, model, out="logits"):
    model.set_attn_implementation("eager")
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        r = model(input_ids=ids, attention_mask=mask)
    d = os.path.join(out_dir, name)
    model.save_pretrained(d)
    v = getattr(r, out)
    json.dump({"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "output": out,
               "data": v.flatten().tolist()}, open(os.path.join(d, "variant.json"), "w"))

save("llama3-rope", LlamaForCausalLM(LlamaConfig(**base, num_key_value_heads=1, rope_parameters={
    "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8})))
save("linear-rope", LlamaForCausalLM(LlamaConfig(**base, rope_parameters={
    "rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0})))
save("llama-bias-tied", LlamaForCausalLM(LlamaConfig(**base, attention_bias=True, mlp_bias=True,
                                                     tie_word_embeddings=True)))
save("mistral-window3", MistralForCausalLM(MistralConfig(**base, num_key_value_heads=2, sliding_window=3)))
save("qwen2-window3-layer1", Qwen2ForCausalLM(Qwen2Config(**base, num_key_value_heads=2, use_sliding_window=True,
                                                          sliding_window=3, max_window_layers=1)))
save("opt-post-ln", OPTForCausalLM(OPTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128,
                                             vocab_size=128, max_position_embeddings=64,
                                             do_layer_norm_before=False)))
save("gpt2-inverse-layer-scale", GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=4, n_inner=128,
                                                           vocab_size=128, n_positions=64,
                                                           scale_attn_by_inverse_layer_idx=True)))
save("neox-sequential-rot0.5", GPTNeoXForCausalLM(GPTNeoXConfig(**base, use_parallel_residual=False,
                                                                rotary_pct=0.5)))
save("bert-padded", BertModel(BertConfig(**base, type_vocab_size=2)), out="last_hidden_state")
print("generated", len(os.listdir(out_dir)), "variants")
EOF
java -Xmx512m -cp "$CP" scion.io.runtime.export.bench.ExportVariantsCheck "$WORK/variants"
