#!/usr/bin/env bash
# Width growth ×2 (HyperCloning, `scion grow --width 2`) of a synthetic ~2 GB bf16 llama-shaped checkpoint, against
# the cost of just reading the input and writing the output's bytes on this machine, measured in the same run.
#
# The checkpoint (hidden 2048, 16 heads, ffn 5632, vocab 32000, untied head, LAYERS blocks; 17 blocks: 1.005 G
# parameters, 2.01 GB bf16) is generated lazily by grow-large.java (GeneratedTensor from the io test classes: nothing
# held in memory) and written with SafetensorsWriter. Then, each step from a cold page cache when it can be dropped:
#   grow   scion grow IN OUT --width 2 [GROW_ARGS] under /usr/bin/time -v with -Xmx256m (hidden 4096, 32 heads,
#          ffn 11264: ~7.5 GB bf16 out; default noise on, so every output element is computed)
#   read   cat IN/*.safetensors > /dev/null                                     (the input's bytes, once)
#   write  dd if=/dev/zero of=FILE bs=16M count=… conv=fsync                    (the output's bytes, fsynced as the
#                                                                                writer does)
# and prints: wall time and peak RSS ("Maximum resident set size") of the grow, the sampled anonymous / file-backed
# peaks, and ratio = grow wall time / (read + write wall time): 1.0 would be "as fast as moving the bytes".
#
# Usage: test/bench/grow-large.sh [LAYERS] [GROW_ARGS...]      (default 17; e.g. `17 --no-noise`)
#   BENCH_DIR   where the temporary files go (default /var/tmp); needs ~12 GB free; everything is deleted at exit.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/safetensors-common.sh"

LAYERS=${1:-17}
shift || true
GROW_ARGS=("$@")
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/scion-grow-large.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
st_check_disk "$WORK" 12000000000

# Classes: io (main + test: GeneratedTensor, MemorySampler), growth and cli, copied so that other builds in the same
# checkout cannot change them under the run; the dependencies of cli and of io's tests.
st_build "$WORK"
(cd "$ROOT" && mvn -o -q -pl io,growth,cli compile -Dspotless.check.skip=true)
(cd "$ROOT" && { mvn -o -q -pl cli dependency:build-classpath -Dmdep.outputFile="$WORK/cli-cp.txt" >/dev/null 2>&1 \
                 || mvn -q -pl cli dependency:build-classpath -Dmdep.outputFile="$WORK/cli-cp.txt" >/dev/null; })
mkdir -p "$WORK/classes" "$WORK/bench"
for m in io growth cli; do cp -r "$ROOT/$m/target/classes" "$WORK/classes/$m"; done
cp -r "$ROOT/io/target/test-classes" "$WORK/classes/io-test"
DEPS=$( (tr ':' '\n' < "$WORK/cli-cp.txt"; tr ':' '\n' < "$WORK/cp.txt") | grep -v '/dev/scion/' | sort -u | paste -sd:)
CP="$WORK/classes/io:$WORK/classes/io-test:$WORK/classes/growth:$WORK/classes/cli:$DEPS"
javac -nowarn -d "$WORK/bench" -cp "$CP" "$ROOT/test/bench/grow-large.java"
JAVA=(java -Xmx256m -cp "$WORK/bench:$CP" GrowLargeBench)

IN="$WORK/llama-large"
OUT="$WORK/llama-large-x2"
echo "== generate: $LAYERS blocks, bf16"
"${JAVA[@]}" generate "$IN" "$LAYERS"
IN_BYTES=$(du -sb "$IN" | cut -f1)
echo "  input: $(awk -v b="$IN_BYTES" 'BEGIN { printf "%.2f GB", b / 1e9 }') in $(ls "$IN" | tr '\n' ' ')"

cold=no
st_drop_caches && cold=yes || true
echo "== grow: scion grow IN OUT --width 2 ${GROW_ARGS[*]:-} (-Xmx256m; cold page cache: $cold)"
/usr/bin/time -v -o "$WORK/grow.time" "${JAVA[@]}" scion grow "$IN" "$OUT" --width 2 "${GROW_ARGS[@]}" \
  | sed 's/^/  /'
grep -E "Elapsed|Maximum resident" "$WORK/grow.time" | sed 's/^\s*/  /'
GROW_S=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$WORK/grow.time")
RSS_KB=$(awk -F': ' '/Maximum resident/ { print $2 }' "$WORK/grow.time")
OUT_BYTES=$(du -sb "$OUT" | cut -f1)
echo "  output: $(awk -v b="$OUT_BYTES" 'BEGIN { printf "%.2f GB", b / 1e9 }')"
rm -rf "$OUT"

st_drop_caches || true
t0=$(st_now); cat "$IN"/*.safetensors > /dev/null; t1=$(st_now)
READ_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
echo "== read: cat input > /dev/null: ${READ_S} s ($(st_gbps "$IN_BYTES" "$READ_S") GB/s)"
st_drop_caches || true
COUNT=$(( (OUT_BYTES + 16777215) / 16777216 ))
t0=$(st_now); dd if=/dev/zero of="$WORK/write.bin" bs=16M count="$COUNT" conv=fsync status=none; t1=$(st_now)
WRITE_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
WROTE=$(stat -c %s "$WORK/write.bin")
rm -f "$WORK/write.bin"
echo "== write: dd $WROTE bytes, fsync: ${WRITE_S} s ($(st_gbps "$WROTE" "$WRITE_S") GB/s)"

awk -v g="$GROW_S" -v r="$READ_S" -v w="$WRITE_S" -v rss="$RSS_KB" -v i="$IN_BYTES" -v o="$OUT_BYTES" 'BEGIN {
  printf "== result: %.2f GB → %.2f GB in %.1f s, peak RSS %.0f MiB; read + write the same bytes %.1f s; ratio %.2f\n",
    i / 1e9, o / 1e9, g, rss / 1024, r + w, g / (r + w) }'
