#!/usr/bin/env python3
"""How much should a subcloned model's norm scales grow? A check of Scion's √(D/D') rule on real activations.

    python test/bench/subclone_rescale_sweep.py SOURCE_DIR SUBCLONE_DIR TEXT [--chars 24000]

1. The norm statistic itself: runs SOURCE on TEXT and, at the input x of every RMSNorm (each block's two norms and the
   final norm), measures r = RMS over the kept dimensions / RMS over all D dimensions, per token. The kept
   dimensions S are read off SUBCLONE's embedding (each of its columns is a source column). The child's norm divides
   by RMS_S(x) = r·RMS_D(x) instead of RMS_D(x), so its normalised outputs are 1/r of the parent's on the kept
   dimensions; multiplying γ by r restores them (r = √(D/D') exactly when the dropped dimensions hold no energy).
2. A sweep: SUBCLONE with its norm scales multiplied by t/√(D/D') for several t (t = 1: no rescaling; t = √(D/D'):
   Scion's default), perplexity on TEXT over non-overlapping windows of 129 tokens (transformers, float32).
Development aid only.
"""
import argparse
import math

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM


def ppl(model, ids, win=129):
    nll, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(ids) - 1, win):
            x = torch.tensor([ids[i:i + win]])
            if x.shape[1] < 2:
                break
            logits = model(x).logits.double()
            lp = torch.log_softmax(logits[0, :-1], -1)
            tgt = x[0, 1:]
            nll -= lp[torch.arange(len(tgt)), tgt].sum().item()
            n += len(tgt)
    return math.exp(nll / n)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("source")
    ap.add_argument("subclone")
    ap.add_argument("text")
    ap.add_argument("--chars", type=int, default=24000)
    a = ap.parse_args()
    tok = Tokenizer.from_file(f"{a.source}/tokenizer.json")
    ids = tok.encode(open(a.text, encoding="utf-8").read()[: a.chars]).ids
    src = AutoModelForCausalLM.from_pretrained(a.source, dtype=torch.float32, attn_implementation="eager").eval()
    sub = AutoModelForCausalLM.from_pretrained(a.subclone, dtype=torch.float32, attn_implementation="eager").eval()
    e, es = src.model.embed_tokens.weight, sub.model.embed_tokens.weight
    D, Dp = e.shape[1], es.shape[1]
    keep = []
    for c in range(Dp):
        m = [j for j in range(D) if torch.equal(e[:, j], es[:, c])]
        keep.append(m[0])
    keep = torch.tensor(keep)
    ratios = []

    def hook(mod, inp):
        x = inp[0].double()
        r = (x[..., keep].pow(2).mean(-1).sqrt() / x.pow(2).mean(-1).sqrt())
        ratios.append(r.flatten())

    hs = [m.register_forward_pre_hook(hook) for n, m in src.named_modules() if n.endswith("norm")]
    p_src = ppl(src, ids)
    for h in hs:
        h.remove()
    r = torch.cat(ratios)
    print(f"tokens {len(ids)}, D {D} → D' {Dp}, sqrt(D/D') = {math.sqrt(D / Dp):.4f}")
    print(f"RMS over kept / RMS over all at every norm input (the factor that restores the parent's normalised"
          f" values): mean {r.mean():.4f}, median {r.median():.4f}, p10 {r.quantile(0.1):.4f}, p90 {r.quantile(0.9):.4f}")
    print(f"source perplexity {p_src:.2f}")
    s = math.sqrt(D / Dp)
    norms = [m for n, m in sub.named_modules() if n.endswith("norm")]
    base = [m.weight.detach().clone() for m in norms]
    print("| norm scale factor t (× parent γ) | perplexity |\n|---|---|")
    for t in [1.0, 1.15, r.mean().item(), 1.3, s, 1.55, 1.7, 2.0]:
        for m, b in zip(norms, base):
            m.weight.data = b * (t / s)
        label = " (sqrt(D/D'), default)" if abs(t - s) < 1e-9 else " (none)" if t == 1.0 else ""
        if abs(t - r.mean().item()) < 1e-9:
            label = " (measured mean r)"
        print(f"| {t:.4f}{label} | {ppl(sub, ids):.2f} |")


if __name__ == "__main__":
    main()
