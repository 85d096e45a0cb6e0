#!/usr/bin/env bash
# Eckart–Young on every factored matrix of all-MiniLM-L6-v2 (36 attention and MLP MatMuls) and of the trained
# Rust-book llama (56): `svd` must give ‖W − Ŵ‖_F = √(Σ_{i>r} σ_i²) within 1e-6 relative, `randomized` (p = 10,
# q = 4 by default; P and Q override) within 1 % of that optimum. Errors are those of the float64 factors, from the
# --json report (relative_error = ‖W − Ŵ‖_F/‖W‖_F computed from B·A, tail = √(Σ_{i>r} σ_i²)/‖W‖_F from the exact
# spectrum). Prints, per model and rank rule, the worst |error − tail|/tail of svd and the worst randomized / svd ratio.
#
# Usage: test/bench/lowrank-eckart-young.sh        SCION (default ./scion), MINILM (default ~/.cache/scion copy)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SCION=${SCION:-$ROOT/scion}
MINILM=${MINILM:-$HOME/.cache/scion/all-minilm-l6-v2/all-minilm-l6-v2.onnx}
LM=$ROOT/test/src/test/resources/fixtures/trained/rustbook-llama
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/scion-lowrank-ey.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
RND=(--method randomized --oversampling "${P:-10}" --power-iterations "${Q:-4}")
for rule in "--rank 64" "--ratio 0.5"; do
  tag=${rule// /}
  $SCION lowrank "$MINILM" "$WORK/m-svd$tag.onnx" $rule --json > "$WORK/minilm-svd$tag.json"
  $SCION lowrank "$MINILM" "$WORK/m-rnd$tag.onnx" $rule "${RND[@]}" --json > "$WORK/minilm-rnd$tag.json"
  $SCION lowrank "$LM" "$WORK/l-svd$tag" $rule --json > "$WORK/llama-svd$tag.json"
  $SCION lowrank "$LM" "$WORK/l-rnd$tag" $rule "${RND[@]}" --json > "$WORK/llama-rnd$tag.json"
  rm -rf "$WORK"/m-* "$WORK"/l-*
done
python3 - "$WORK" "${P:-10}" "${Q:-4}" <<'PYEOF'
import glob, json, sys
work, p, q = sys.argv[1:4]
print(f"{'model':8} {'rule':10} {'matrices':>8} {'svd max |err-tail|/tail':>24} {'randomized/svd max':>19} {'mean':>8}  (p={p}, q={q})")
for model in ["minilm", "llama"]:
    for tag in ["--rank64", "--ratio0.5"]:
        s = json.load(open(f"{work}/{model}-svd{tag}.json"))["matrices"]
        r = json.load(open(f"{work}/{model}-rnd{tag}.json"))["matrices"]
        fact = [(a, b) for a, b in zip(s, r) if not a["dense"]]
        ey = max(abs(a["relative_error"] - a["tail"]) / a["tail"] for a, _ in fact)
        ratios = [b["relative_error"] / a["tail"] for a, b in fact]
        print(f"{model:8} {tag[2:]:10} {len(fact):8d} {ey:24.2e} {max(ratios):19.5f} {sum(ratios)/len(ratios):8.5f}")
PYEOF
