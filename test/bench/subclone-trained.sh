#!/usr/bin/env bash
# Weight subcloning of the trained Rust-book llama to half width (hidden 128 → 64, heads 4 → 2, kv 2 → 1, FFN
# 384 → 192), judged by held-out perplexity before any training: subcloned with the √(D/D') norm rescaling, without it,
# and a random initialisation of the same shape (transformers' own init, seed 0); plus the same at 6 of 8 blocks with
# each block-removal metric. Also: the subcloned folder loads in transformers, the calibration speed (tokens/s, from
# the report) and the peak RSS of one subclone run (/usr/bin/time -v). Prints a markdown table.
#
# Usage: test/bench/subclone-trained.sh [MODEL_DIR]   (default: the committed fixture)
#   PYTHON  interpreter with torch + transformers (default /work/venv/bin/python): random init + load check only.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MODEL=${1:-$ROOT/test/src/test/resources/fixtures/trained/rustbook-llama}
PYTHON=${PYTHON:-/work/venv/bin/python}
SCION="$ROOT/scion"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/scion-subclone-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
CALIB="$MODEL/calib.txt"
HELD="$MODEL/heldout.txt"

ppl() { # perplexity of a model folder on the held-out text, the README's command
  "$SCION" eval "$1" --text "$HELD" --max-length 129 --stride 129 --json 2>/dev/null \
    | "$PYTHON" -c 'import json,sys; print("%.2f" % json.load(sys.stdin)["perplexity"]["perplexity"])'
}

"$SCION" --version >/dev/null   # builds the CLI when stale, outside the timed run
# The timed run is the JVM alone (not the launcher script, which may rebuild with Maven).
/usr/bin/time -v java -Xmx4g -cp "$ROOT/cli/target/scion-cli-0.1.0-SNAPSHOT.jar:$(cat "$ROOT/cli/target/classpath.txt")" \
  scion.cli.Scion subclone "$MODEL" "$WORK/half" --hidden 64 --calib "$CALIB" --json \
  > "$WORK/half.json" 2> "$WORK/time.txt"
"$SCION" subclone "$MODEL" "$WORK/half-norescale" --hidden 64 --no-rescale --calib "$CALIB" --json > /dev/null 2>&1
"$PYTHON" "$ROOT/test/bench/random_init.py" "$WORK/half" "$WORK/random" --seed 0 >&2
for m in block-influence angular last; do
  "$SCION" subclone "$MODEL" "$WORK/l6-$m" --hidden 64 --layers 6 --metric "$m" --calib "$CALIB" --json > /dev/null 2>&1
done

RSS=$(grep 'Maximum resident set size' "$WORK/time.txt" | awk '{print $NF}')
WALL=$(grep 'Elapsed (wall clock)' "$WORK/time.txt" | awk '{print $NF}')
CAL=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["calibration"])' "$WORK/half.json")

echo "| model (hidden 64 unless stated) | held-out perplexity |"
echo "|---|---|"
echo "| source (hidden 128, 8 blocks) | $(ppl "$MODEL") |"
echo "| subcloned, norm scales × √2 (default) | $(ppl "$WORK/half") |"
echo "| subcloned, no rescaling | $(ppl "$WORK/half-norescale") |"
echo "| random init, same shape (transformers init, seed 0) | $(ppl "$WORK/random") |"
for m in block-influence angular last; do
  echo "| subcloned, 6 of 8 blocks by $m | $(ppl "$WORK/l6-$m") |"
done
echo
echo "calibration: $CAL"
echo "subclone run: peak RSS $((RSS / 1024)) MiB ($RSS kB), wall $WALL (one JVM: start, model open, calibration, write)"
