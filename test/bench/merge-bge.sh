#!/usr/bin/env bash
# Merges the real bge-small-en v1 and v1.5 (ONNX, from their Maven artifacts, unpacked by `scion demo` into
# ~/.cache/scion) with linear, slerp (t = 0.5) and ties (base v1, density 0.5), and prints each merge's mean
# mean-pooled embedding cosine against each parent on English text (ONNX Runtime, `scion validate`).
# Usage: test/bench/merge-bge.sh [TEXT]   (default: the demo's bridges.txt)
set -euo pipefail
cd "$(dirname "$0")/../.."
C="${XDG_CACHE_HOME:-$HOME/.cache}/scion"
V1="$C/bge-small-en/bge-small-en.onnx"
V15="$C/bge-small-en-v15/bge-small-en-v1.5.onnx"
[ -f "$V1" ] && [ -f "$V15" ] || ./scion demo >/dev/null
TEXT="${1:-$C/demo/bridges.txt}"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
./scion merge --method linear "$V1" "$V15" "$OUT/linear.onnx" >/dev/null
./scion merge --method slerp --base "$V1" --param t=0.5 "$V1" "$V15" "$OUT/slerp.onnx" >/dev/null
./scion merge --method ties --base "$V1" --param density=0.5 "$V15" "$OUT/ties.onnx" >/dev/null
cos() { ./scion validate "$1" "$2" --text "$TEXT" | sed -n 's/.*mean-pooled cosine: mean \([0-9.]*\).*/\1/p'; }
printf '%-28s %-12s %-12s\n' "model" "cos vs v1" "cos vs v1.5"
printf '%-28s %-12s %-12s\n' "v1.5 (parents)" "$(cos "$V1" "$V15")" "1"
for m in linear slerp ties; do
  printf '%-28s %-12s %-12s\n' "$m" "$(cos "$V1" "$OUT/$m.onnx")" "$(cos "$V15" "$OUT/$m.onnx")"
done
