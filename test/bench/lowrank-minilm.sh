#!/usr/bin/env bash
# all-MiniLM-L6-v2 (real, ONNX) with its 36 attention and MLP MatMul weights factorised to 50 % of their parameters
# (`--ratio 0.5`, per matrix) by svd, asvd and svd-llm (calibrated on CALIB), each judged by ONNX Runtime against the
# original on real English text (TEXT, not used for calibration): file size, latency (validate's median forward pass
# of the first batch) and mean-pooled embedding cosine to the original. Prints a table.
#
# Usage: test/bench/lowrank-minilm.sh [RATIO] [CALIB] [TEXT]
#   RATIO  default 0.5;  CALIB default the Rust-book llama fixture's calib.txt (24 kB of English prose about Rust);
#   TEXT   default the demo's bridges.txt (2.4 kB of general English, 24 sequences)
#   SCION  the scion command (default ./scion, which builds the CLI when stale); MINILM the .onnx (default: the
#          demo's copy in ~/.cache/scion, unpacked by `scion demo`)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RATIO=${1:-0.5}
CALIB=${2:-$ROOT/test/src/test/resources/fixtures/trained/rustbook-llama/calib.txt}
TEXT=${3:-$ROOT/cli/src/main/resources/scion/demo/bridges.txt}
SCION=${SCION:-$ROOT/scion}
MINILM=${MINILM:-$HOME/.cache/scion/all-minilm-l6-v2/all-minilm-l6-v2.onnx}
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/scion-lowrank-minilm.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
[ -f "$MINILM" ] || { echo "no $MINILM: run 'scion demo' once (it unpacks MiniLM) or set MINILM" >&2; exit 1; }
cp "$MINILM" "$WORK/minilm.onnx"
cp "$(dirname "$MINILM")/tokenizer.json" "$WORK/tokenizer.json"

for method in svd asvd svd-llm; do
  calib=()
  [ "$method" = svd ] || calib=(--calib "$CALIB")
  start=$(date +%s.%N)
  $SCION lowrank "$WORK/minilm.onnx" "$WORK/$method.onnx" --ratio "$RATIO" --method "$method" "${calib[@]}" \
      --json > "$WORK/$method.lowrank.json"
  end=$(date +%s.%N)
  echo "$end - $start" | bc > "$WORK/$method.seconds"
  $SCION validate "$WORK/minilm.onnx" "$WORK/$method.onnx" --text "$TEXT" --json > "$WORK/$method.validate.json"
done
python3 - "$WORK" "$RATIO" "$(basename "$CALIB")" "$(basename "$TEXT")" <<'PYEOF'
import json, os, sys
work, ratio, calib, text = sys.argv[1:5]
print(f"\nall-MiniLM-L6-v2, attention + MLP MatMuls at ratio {ratio} per matrix; calibration {calib}; judged on {text}")
print(f"{'method':8} {'MatMul params':>15} {'file MB':>8} {'latency ms':>11} {'orig ms':>8} {'mean cos':>9} {'min cos':>8} {'factorise s':>12}")
for m in ["svd", "asvd", "svd-llm"]:
    lr = json.load(open(f"{work}/{m}.lowrank.json"))
    v = json.load(open(f"{work}/{m}.validate.json"))
    sec = float(open(f"{work}/{m}.seconds").read())
    params = lr["parameters"].split(";")[0].replace("targets ", "")
    print(f"{m:8} {params.split('(')[0].strip():>15} {os.path.getsize(f'{work}/{m}.onnx') / 1e6:8.1f} "
          f"{v['cand']['latency_ms']:11.1f} {v['ref']['latency_ms']:8.1f} {v['embeddings']['mean_cosine']:9.4f} "
          f"{v['embeddings']['min_cosine']:8.4f} {sec:12.1f}")
print(f"original file {os.path.getsize(f'{work}/minilm.onnx') / 1e6:.1f} MB")
PYEOF
