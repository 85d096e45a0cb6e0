#!/usr/bin/env bash
# Export of a synthetic llama-shaped checkpoint above 2 GiB to ONNX, then one ONNX Runtime forward pass.
#
# The checkpoint (hidden 2048, 10 layers, 16 heads, ffn 5632, vocab 32000, untied head, float32: 645 M parameters,
# 2.58 GB = 2.40 GiB) is generated lazily by ExportLargeBench (io test classes) and written with SafetensorsWriter.
# Then, each under /usr/bin/time -v with a small heap (-Xmx256m):
#   export  OnnxExporter.write: OUT.onnx (graph only) + OUT.onnx.data (external data, weights streamed file to file)
#   run     ONNX Runtime session from OUT.onnx, one forward pass on 1 x 16 tokens
#   memory  no written file: export + openSession on the safetensors folder + the same forward pass; the graph's
#           weight stubs point into the safetensors shards, which ONNX Runtime reads as external data
#   memory-copy  the same with the weights handed over from their mappings (addExternalInitializers), which
#           ONNX Runtime copies: the mapped pages it read stay resident beside its copy
# Peak RSS is "Maximum resident set size". ONNX Runtime holds the weights itself once (2.58 GB) when it runs the
# model, so "run" and "memory" cannot go below that; "export" should stay near the JVM's own size.
#
# Usage: test/bench/export-large.sh
#   BENCH_DIR   where the temporary files go (default /var/tmp); everything is deleted at exit.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/safetensors-common.sh"

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/scion-export-large.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
st_check_disk "$WORK" 5500000000
st_build "$WORK"
# A private copy of the compiled classes: other builds in the same checkout may rewrite io/target meanwhile.
mkdir -p "$WORK/classes"
cp -r "$ROOT/io/target/classes" "$WORK/classes/main"
cp -r "$ROOT/io/target/test-classes" "$WORK/classes/test"
CP="$WORK/classes/main:$WORK/classes/test:$(cat "$WORK/cp.txt")"
JAVA=(java -Xmx256m -cp "$CP" scion.io.runtime.export.bench.ExportLargeBench)

run() {
  local name=$1; shift
  st_drop_caches || true
  echo "== $name: ${JAVA[*]:0:2} ExportLargeBench $*"
  /usr/bin/time -v -o "$WORK/$name.time" "${JAVA[@]}" "$@"
  grep -E "Elapsed|Maximum resident" "$WORK/$name.time" | sed 's/^\s*/  /'
}

run generate generate "$WORK/llama-large"
du -sb "$WORK/llama-large" | awk '{ printf "  checkpoint: %.2f GB\n", $1 / 1e9 }'
run export export "$WORK/llama-large" "$WORK/llama-large.onnx"
ls -l "$WORK"/llama-large.onnx* | awk '{ print "  " $5 "  " $9 }'
run run run "$WORK/llama-large.onnx"
run memory memory "$WORK/llama-large"
run memory-copy memory "$WORK/llama-large" copy
