#!/usr/bin/env bash
# Merges at real size, measured against the floor and a torch peer in ONE run (issue 11).
#
# Generates N seeded llama-shaped bf16 checkpoints of a preset (merge-scale.java: llama3-8b 16 GB, tinyllama 2.2 GB,
# llama3-vocab 2.5 GB, gemma-vocab 3.9 GB), then, each from a cold page cache (sync; drop_caches; we are root):
#   floor  cat of the inputs to /dev/null + dd of the output's size with conv=fsync (Scion fsyncs its output)
#   scion  ./scion merge for each METHOD under /usr/bin/time -v (wall, peak RSS); linear and ties outputs are
#          checked against a float64 recomputation of sampled tensors (merge-scale.java check)
#   peer   merge_peer.py (torch + safetensors, mergekit-style streaming) for linear and ties, when PEER_PYTHON
#          (default /work/venv/bin/python) has torch
# and prints one table: wall, wall / floor, peak RSS; the peer's beside them.
#
# Usage: test/bench/merge-scale.sh PRESET MODELS METHOD...      e.g. merge-scale.sh llama3-8b 2 linear ties
#        METHOD "all" runs the 18 mergekit methods that need no calibration (fisher excluded)
#   BENCH_DIR     where the data goes (default /var/tmp); everything is deleted at exit
#   DATA          a folder for the generated checkpoints, kept between runs (m1..mN generated there when missing)
#   GENERATE_ONLY=1  generate the checkpoints (into DATA) and stop
#   PEER=0        skip the peer
#   SCION_THREADS --threads for scion (default: all cores)   SCION_JAVA_OPTS as for ./scion (default: its own)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$ROOT/test/bench/safetensors-common.sh"
PRESET=${1:?preset}; N=${2:?models}; shift 2
METHODS=("$@")
[ "${METHODS[0]:-}" = all ] && METHODS=(linear slerp nuslerp multislerp karcher task_arithmetic ties dare_ties
  dare_linear breadcrumbs breadcrumbs_ties della della_linear sce model_stock nearswap arcee_fusion ram passthrough)
PEER_PYTHON=${PEER_PYTHON:-/work/venv/bin/python}
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/scion-merge-scale.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
DATA=${DATA:-$WORK}

# The CLI as ./scion builds it, and io's test classes (GeneratedTensor), copied so that a build in this checkout
# cannot change them under the run; scion runs as ./scion runs it (SCION_JAVA_OPTS, else the launcher's default).
"$ROOT/scion" --version >/dev/null
(cd "$ROOT" && mvn -o -q -pl io test-compile -Dspotless.check.skip=true)
mkdir -p "$WORK/lib"
cp -r "$ROOT/io/target/test-classes" "$WORK/lib/io-test"
CP="$WORK/lib/io-test"
for j in "$ROOT/cli/target/scion-cli-0.1.0-SNAPSHOT.jar" $(tr ':' ' ' < "$ROOT/cli/target/classpath.txt"); do
  cp "$j" "$WORK/lib/"; CP="$CP:$WORK/lib/$(basename "$j")"
done
HEAP_OPTS=${SCION_JAVA_OPTS:-$(sed -n 's/.*SCION_JAVA_OPTS:-\([^}]*\)}.*/\1/p' "$ROOT/scion" | tail -1)}
SCION=(java $HEAP_OPTS -cp "$CP" scion.cli.Scion)
DRIVER=(java -Xmx2g -cp "$CP" "$ROOT/test/bench/merge-scale.java")
echo "== scion runs with: ${HEAP_OPTS:-(no JVM options)}"

M=()
for i in $(seq 1 "$N"); do
  M+=("$DATA/m$i")
  [ -f "$DATA/m$i/config.json" ] && continue
  echo "== generate m$i ($PRESET, seed $i)"
  t0=$(st_now); "${DRIVER[@]}" generate "$DATA/m$i" "$PRESET" "$i"; t1=$(st_now)
  echo "   $(du -sh "$DATA/m$i" | cut -f1) in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", b - a }') s"
done
[ "${GENERATE_ONLY:-0}" = 1 ] && exit 0
IN_BYTES=$(du -scb "${M[@]}" | tail -1 | cut -f1)
B=${M[0]}; A=${M[1]:-${M[0]}}; C=${M[2]:-}

args_of() {  # the scion merge arguments of a method on these inputs (B is the base where one is needed)
  local rest=("$A"); [ -n "$C" ] && rest+=("$C")
  case $1 in
    linear|multislerp|karcher) echo "--method $1 ${M[*]}" ;;
    slerp) echo "--method slerp --base $B --param t=0.5 $A" ;;
    nuslerp|task_arithmetic|model_stock|ram) echo "--method $1 --base $B ${rest[*]}" ;;
    ties|dare_ties|dare_linear) echo "--method $1 --base $B --param density=0.5 ${rest[*]}" ;;
    breadcrumbs|breadcrumbs_ties) echo "--method $1 --base $B --param density=0.9 --param gamma=0.01 ${rest[*]}" ;;
    della|della_linear) echo "--method $1 --base $B --param density=0.5 --param epsilon=0.1 ${rest[*]}" ;;
    sce) echo "--method sce --base $B --param select_topk=0.5 ${rest[*]}" ;;
    nearswap) echo "--method nearswap --base $B --param t=0.001 $A" ;;
    arcee_fusion) echo "--method arcee_fusion --base $B $A" ;;
    passthrough) echo "--method passthrough $A" ;;
    *) echo "unknown method $1" >&2; exit 2 ;;
  esac
}

seconds() { awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$1"; }
rss_mib() { awk -F': ' '/Maximum resident/ { printf "%.0f", $2 / 1024 }' "$1"; }

OUT="$WORK/out"
OUT_BYTES=0
declare -A WALL RSS STATUS PWALL PRSS
for m in "${METHODS[@]}"; do
  rm -rf "$OUT"; sync; st_drop_caches || echo "   (page cache not dropped)"
  echo "== scion merge $(args_of "$m" | sed -e "s|$WORK/||g" -e "s|$DATA/||g")"
  # shellcheck disable=SC2046
  if /usr/bin/time -v -o "$WORK/t" "${SCION[@]}" merge $(args_of "$m") ${SCION_THREADS:+--threads $SCION_THREADS} \
      "$OUT" > "$WORK/log" 2>&1; then
    STATUS[$m]=ok
    OUT_BYTES=$(du -sb "$OUT" | cut -f1)
    if [ "$m" = linear ] || [ "$m" = ties ]; then
      if [ "$m" = linear ]; then "${DRIVER[@]}" check "$OUT" linear "${M[@]}" || STATUS[$m]=WRONG
      else "${DRIVER[@]}" check "$OUT" ties "$B" "$A" ${C:+"$C"} || STATUS[$m]=WRONG; fi
    fi
  else
    STATUS[$m]="exit $?"; tail -3 "$WORK/log"
  fi
  WALL[$m]=$(seconds "$WORK/t"); RSS[$m]=$(rss_mib "$WORK/t")
  echo "   ${WALL[$m]} s, peak RSS ${RSS[$m]} MiB, ${STATUS[$m]}"
  rm -rf "$OUT"
  if [ "${PEER:-1}" = 1 ] && { [ "$m" = linear ] || [ "$m" = ties ]; } && "$PEER_PYTHON" -c "import torch, safetensors" 2>/dev/null; then
    sync; st_drop_caches || true
    peer_in=("${M[@]}"); [ "$m" = ties ] && peer_in=("$B" "$A" ${C:+"$C"})
    echo "== peer merge_peer.py $m"
    /usr/bin/time -v -o "$WORK/t" "$PEER_PYTHON" "$ROOT/test/bench/merge_peer.py" "$m" "$OUT" "${peer_in[@]}" \
      > "$WORK/log" 2>&1 || { tail -3 "$WORK/log"; }
    PWALL[$m]=$(seconds "$WORK/t"); PRSS[$m]=$(rss_mib "$WORK/t")
    echo "   ${PWALL[$m]} s, peak RSS ${PRSS[$m]} MiB"
    rm -rf "$OUT"
  fi
done

# The floor: the inputs read once, the output's bytes written once and fsynced.
[ "$OUT_BYTES" -gt 0 ] || OUT_BYTES=$(du -sb "$B" | cut -f1)
sync; st_drop_caches || true
t0=$(st_now); cat "$B"/*.safetensors "$A"/*.safetensors ${C:+"$C"/*.safetensors} > /dev/null; t1=$(st_now)
READ_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
t0=$(st_now); dd if=/dev/zero of="$WORK/w.bin" bs=16M count=$(( (OUT_BYTES + 16777215) / 16777216 )) conv=fsync status=none
t1=$(st_now); rm -f "$WORK/w.bin"
WRITE_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
FLOOR=$(awk -v r="$READ_S" -v w="$WRITE_S" 'BEGIN { print r + w }')
echo "== floor: cat $(awk -v b="$IN_BYTES" 'BEGIN { printf "%.1f GB", b / 1e9 }') ${READ_S} s + dd $(awk -v b="$OUT_BYTES" 'BEGIN { printf "%.1f GB", b / 1e9 }') ${WRITE_S} s = ${FLOOR} s"
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg); threads ${SCION_THREADS:-$(nproc)}"
printf '%-18s %9s %8s %9s %-8s %9s %8s %9s\n' method "wall s" "/floor" "RSS MiB" status "peer s" "/floor" "RSS MiB"
for m in "${METHODS[@]}"; do
  printf '%-18s %9.1f %8.2f %9s %-8s' "$m" "${WALL[$m]}" "$(awk -v a="${WALL[$m]}" -v f="$FLOOR" 'BEGIN { print a / f }')" "${RSS[$m]}" "${STATUS[$m]}"
  if [ -n "${PWALL[$m]:-}" ]; then
    printf ' %9.1f %8.2f %9s' "${PWALL[$m]}" "$(awk -v a="${PWALL[$m]}" -v f="$FLOOR" 'BEGIN { print a / f }')" "${PRSS[$m]}"
  fi
  echo
done
