#!/usr/bin/env bash
# A synthetic checkpoint above 4 GiB with one tensor above 2 GiB ([600000, 1024] F32 = 2.46 GB), streamed from
# lazy generated tensors, written sharded by SafetensorsWriter (2 GB shards), then read back with SafetensorsReader
# and verified by CRC32C against the generator. Both steps run under /usr/bin/time -v with -Xmx512m.
#
# Usage: test/bench/safetensors-large.sh [SHARD_BYTES]     (default 2000000000)
#   BENCH_DIR   where the temporary checkpoint goes (default /var/tmp); it is deleted at exit.
#
# Peak RSS is "Maximum resident set size". Streaming reads (Tensor.readBytes) use positional file reads, so the pages
# they touch stay in the page cache and do not count toward the process (through a mapping they would, until it is
# collected). The Java side also prints its sampled peaks of anonymous RSS (heap, buffers, JVM) and file-backed RSS.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/safetensors-common.sh"

SHARD=${1:-2000000000}
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/scion-st-large.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
st_check_disk "$WORK" 5000000000
st_build "$WORK"
JAVA=(java -Xmx512m -cp "$CP" scion.io.safetensors.bench.SafetensorsLargeBench)
OUT="$WORK/large-model"

run() {
  local name=$1; shift
  st_drop_caches || true   # read-backs start from a cold page cache when permitted
  echo "== $name: ${JAVA[*]:0:2} ... $*"
  /usr/bin/time -v -o "$WORK/$name.time" "${JAVA[@]}" "$@"
  grep -E "Elapsed|Maximum resident" "$WORK/$name.time" | sed 's/^\s*/  /'
}

run write write "$OUT" "$SHARD"
ls -l "$OUT" | sed 's/^/  /'
run verify verify "$OUT"
