#!/usr/bin/env bash
# Read throughput of SafetensorsReader against `cat FILE > /dev/null` (the physical limit), in one run.
#
# Usage: test/bench/safetensors-read-throughput.sh [SIZE_BYTES]     (default 4294967296 = 4 GiB)
#   BENCH_DIR   where the temporary file goes (default /var/tmp); it is deleted at exit.
#   CACHE=warm  compare from a warm page cache (the file is read once before each measurement) instead of cold.
#
# Generates one .safetensors file of F16/BF16 [8192, 4096] tensors with SafetensorsWriter, then, each from a cold
# page cache (sync; echo 3 > /proc/sys/vm/drop_caches, needs root) or else from a warm one (said so in the output):
#   cat      cat FILE > /dev/null
#   floats   every tensor converted to float32 through Tensor.readFloats
#   bytes    every tensor's raw bytes copied through Tensor.readBytes
#   mapped   every tensor read in place through MappedTensor.mappedChunks (no copy)
# and prints GB/s of each and its ratio to cat. Java timings cover open + read (not JVM start-up).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/safetensors-common.sh"

SIZE=${1:-4294967296}
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/scion-st-read.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
st_check_disk "$WORK" $((SIZE + SIZE / 10))
st_build "$WORK"
JAVA=(java -Xmx1g -cp "$CP" scion.io.safetensors.bench.SafetensorsReadBench)
F="$WORK/bench.safetensors"

"${JAVA[@]}" generate "$F" "$SIZE"
BYTES=$(stat -c %s "$F")

if [ "${CACHE:-cold}" != warm ] && st_drop_caches; then
  CACHE=cold
  prepare() { st_drop_caches; }
else
  CACHE=warm
  [ "${CACHE:-cold}" = warm ] || echo "NOTE: cannot drop the page cache (needs root): this is a WARM-cache comparison"
  prepare() { cat "$F" > /dev/null; }
fi

prepare
t0=$(st_now); cat "$F" > /dev/null; t1=$(st_now)
CAT_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
CAT_GBPS=$(st_gbps "$BYTES" "$CAT_S")

declare -A GBPS SECS
for mode in floats bytes mapped; do
  prepare
  line=$("${JAVA[@]}" "$mode" "$F" | grep '^RESULT')
  SECS[$mode]=$(echo "$line" | awk '{print $4}')
  GBPS[$mode]=$(echo "$line" | awk '{print $5}')
done

echo
echo "safetensors read throughput: $BYTES bytes, $CACHE page cache, $(nproc) cores, $(uname -r)"
printf "  %-34s %10s %12s  %s\n" "what" "time" "throughput" "ratio to cat"
printf "  %-34s %8s s %7s GB/s  1.00\n" "cat FILE > /dev/null" "$CAT_S" "$CAT_GBPS"
for mode in floats bytes mapped; do
  case $mode in
    floats) label="reader: readFloats (to float32)";;
    bytes)  label="reader: readBytes (raw copy)";;
    mapped) label="reader: mappedChunks (in place)";;
  esac
  ratio=$(awk -v a="${GBPS[$mode]}" -v b="$CAT_GBPS" 'BEGIN { printf "%.2f", a / b }')
  printf "  %-34s %8s s %7s GB/s  %s\n" "$label" "${SECS[$mode]}" "${GBPS[$mode]}" "$ratio"
done
