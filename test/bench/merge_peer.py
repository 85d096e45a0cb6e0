"""Peer of test/bench/merge-scale.sh: a mergekit-style streaming merge written with torch and safetensors.

Like mergekit's default path it opens every input lazily (safe_open), loads one tensor of each model at a time,
computes in float32, rounds to the output dtype, and collects output tensors into shards of 5 GB that it saves with
safetensors.torch.save_file. Methods: linear (uniform weights, normalised; summed in place, one input
in float32 at a time) and ties (density 0.5, weights 1, the
first model is the base, magnitude top-k per tensor by torch.kthvalue, sign election by the weighted sum,
disjoint mean), the two that merge-scale.sh times against Scion.

usage: merge_peer.py METHOD OUT MODEL...      (for ties the first MODEL is the base)
"""
import json
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file

SHARD = 5_000_000_000


def index(folder):
    p = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(p):
        with open(p) as f:
            wm = json.load(f)["weight_map"]
        return {k: os.path.join(folder, v) for k, v in wm.items()}
    single = os.path.join(folder, "model.safetensors")
    with safe_open(single, "pt") as f:
        return {k: single for k in f.keys()}


def ties(base, models, density=0.5):
    deltas = []
    for m in models:
        d = m - base
        k = int(density * d.numel())
        if k < d.numel():
            mag = d.abs().flatten()
            thr = torch.kthvalue(mag, d.numel() - k).values
            d = torch.where(d.abs() > thr, d, torch.zeros_like(d))
        deltas.append(d)
    stacked = torch.stack(deltas)
    sign = torch.sign(stacked.sum(0))
    sign[sign == 0] = 1
    mask = (torch.sign(stacked) == sign) & (stacked != 0)
    summed = (stacked * mask).sum(0)
    count = mask.sum(0).clamp(min=1)
    return base + summed / count


def main():
    method, out, models = sys.argv[1], sys.argv[2], sys.argv[3:]
    maps = [index(m) for m in models]
    handles = {}

    def get(i, name):
        path = maps[i][name]
        if path not in handles:
            handles[path] = safe_open(path, "pt")
        return handles[path].get_tensor(name)

    os.makedirs(out, exist_ok=True)
    shard, size, n, weight_map = {}, 0, 0, {}

    def flush():
        nonlocal shard, size, n
        if shard:
            name = f"model-{n:05d}.safetensors"
            save_file(shard, os.path.join(out, name), metadata={"format": "pt"})
            for k in shard:
                weight_map[k] = name
            shard, size, n = {}, 0, n + 1

    for name in maps[0]:
        dtype = get(0, name).dtype
        if method == "linear":  # accumulated in place: one input in float32 at a time beside the sum
            r = get(0, name).to(torch.float32)
            for i in range(1, len(models)):
                r.add_(get(i, name).to(torch.float32))
            r.div_(len(models))
        elif method == "ties":
            xs = [get(i, name).to(torch.float32) for i in range(len(models))]
            r = ties(xs[0], xs[1:])
            del xs
        else:
            raise SystemExit(f"unsupported method {method}")
        r = r.to(dtype)
        b = r.numel() * r.element_size()
        if size + b > SHARD:
            flush()
        shard[name] = r.contiguous()
        size += b
    flush()
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    with open(os.path.join(models[0], "config.json")) as f, open(os.path.join(out, "config.json"), "w") as g:
        g.write(f.read())


if __name__ == "__main__":
    torch.set_num_threads(os.cpu_count())
    main()
