#!/usr/bin/env python3
"""A reproducible random initialisation of the same shape as a Scion output folder, and a transformers load check.

    python test/bench/random_init.py SHAPE_DIR OUT_DIR [--seed 0]

Reads SHAPE_DIR/config.json, builds the model with transformers' own initialisation (torch.manual_seed(SEED),
AutoModelForCausalLM.from_config: normal(0, initializer_range) linears and embeddings, ones for norms), saves it
as safetensors in the config's dtype with SHAPE_DIR's tokenizer files. Also loads SHAPE_DIR itself with
output_loading_info and fails if any weight is missing, unexpected or shape-mismatched (the "loads in transformers"
check of the subcloning benchmark). Development aid only (Python is never needed at run time).
"""
import argparse
import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shape_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    src = Path(a.shape_dir)
    model, info = AutoModelForCausalLM.from_pretrained(
        src, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if bad:
        print(f"{src}: does not load cleanly in transformers: {bad}", file=sys.stderr)
        return 2
    n = sum(p.numel() for p in model.parameters())
    print(f"{src}: loads in transformers {__import__('transformers').__version__}: {n:,} parameters")
    cfg = AutoConfig.from_pretrained(src)
    torch.manual_seed(a.seed)
    rnd = AutoModelForCausalLM.from_config(cfg, dtype=getattr(cfg, "dtype", None) or torch.float32)
    out = Path(a.out_dir)
    rnd.save_pretrained(out, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if (src / f).exists():
            shutil.copy(src / f, out / f)
    print(f"{out}: random init, seed {a.seed}, {sum(p.numel() for p in rnd.parameters()):,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
