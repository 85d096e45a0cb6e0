#!/usr/bin/env bash
# Perplexity against parameter ratio for svd, asvd and svd-llm on the trained Rust-book llama fixture (hidden 128,
# 8 layers; its 56 attention and MLP weights factorised, `--ratio P` per matrix), calibrated on its calib.txt
# (training text) and evaluated on heldout.txt (held-out chapters, windows of 129 tokens, stride 129). Prints a table.
#
# Usage: test/bench/lowrank-llama.sh [RATIOS...]     (default 0.9 0.75 0.6 0.5 0.4 0.3)
#   SCION  the scion command (default ./scion); TOKENS calibration budget (default 32768: all of calib.txt)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LM=$ROOT/test/src/test/resources/fixtures/trained/rustbook-llama
SCION=${SCION:-$ROOT/scion}
RATIOS=("$@")
[ ${#RATIOS[@]} -gt 0 ] || RATIOS=(0.9 0.75 0.6 0.5 0.4 0.3)
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/scion-lowrank-llama.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
EVAL=(--text "$LM/heldout.txt" --max-length 129 --stride 129 --json)

$SCION eval "$LM" "${EVAL[@]}" > "$WORK/original.json"
for ratio in "${RATIOS[@]}"; do
  for method in svd asvd svd-llm; do
    calib=()
    [ "$method" = svd ] || calib=(--calib "$LM/calib.txt" --tokens "${TOKENS:-32768}")
    out="$WORK/$method-$ratio"
    $SCION lowrank "$LM" "$out" --ratio "$ratio" --method "$method" "${calib[@]}" --json > "$out.lowrank.json"
    $SCION eval "$out" "${EVAL[@]}" > "$out.eval.json"
    rm -rf "$out"
  done
done
python3 - "$WORK" "${RATIOS[@]}" <<'PYEOF'
import json, sys
work, ratios = sys.argv[1], sys.argv[2:]
orig = json.load(open(f"{work}/original.json"))["perplexity"]["perplexity"]
print(f"\ntrained Rust-book llama: held-out perplexity (original {orig:.3f}) against the factored matrices' parameter ratio")
print(f"{'ratio':>6} {'model params':>13} {'svd':>10} {'asvd':>10} {'svd-llm':>10}")
for r in ratios:
    row = []
    params = None
    for m in ["svd", "asvd", "svd-llm"]:
        row.append(json.load(open(f"{work}/{m}-{r}.eval.json"))["perplexity"]["perplexity"])
        p = json.load(open(f"{work}/{m}-{r}.lowrank.json"))["parameters"]
        params = p.split("model ")[1].split(" (")[0]
    print(f"{r:>6} {params.split('→')[1].strip():>13} " + " ".join(f"{v:10.3f}" for v in row))
PYEOF
