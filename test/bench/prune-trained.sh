#!/usr/bin/env bash
# Layer pruning of the trained Rust-book llama (8 blocks): held-out perplexity before and after removing 1, 2 and 3
# blocks with each metric (angular at the last token of each calibration sequence, angular over every token,
# block influence, and the 'last' baseline), calibrated on the fixture's calib.txt (training text), evaluated on
# heldout.txt (held-out chapters) with the README's command. Also the calibration speed (tokens/s, from the report)
# and the peak RSS of one calibrated prune run (/usr/bin/time -v). Prints markdown tables.
#
# Usage: test/bench/prune-trained.sh [MODEL_DIR]   (default: the committed fixture)
#   PYTHON  any Python 3 (default /work/venv/bin/python, else python3): only parses the JSON reports.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MODEL=${1:-$ROOT/test/src/test/resources/fixtures/trained/rustbook-llama}
PYTHON=${PYTHON:-/work/venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
WORK=$(mktemp -d "${TMPDIR:-/tmp}/scion-prune-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
CALIB="$MODEL/calib.txt"
HELD="$MODEL/heldout.txt"

ppl() { # held-out perplexity of a model folder (README: scion eval --max-length 129 --stride 129)
  scion eval "$1" --text "$HELD" --max-length 129 --stride 129 --json 2>/dev/null \
    | "$PYTHON" -c 'import json,sys; print("%.2f" % json.load(sys.stdin)["perplexity"]["perplexity"])'
}
field() { "$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

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

echo "model: $MODEL ($(field "$MODEL/config.json" num_hidden_layers) blocks)"
echo "calibration: $CALIB ($(wc -c < "$CALIB") bytes); held-out: $HELD ($(wc -c < "$HELD") bytes)"
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
BASE=$(ppl "$MODEL")
echo "| blocks removed | metric | removed blocks | held-out perplexity | × source |"
echo "|---|---|---|---|---|"
echo "| 0 | (source) | – | $BASE | 1.00 |"
for n in 1 2 3; do
  for variant in "angular" "angular --all-tokens" "block-influence" "last"; do
    read -r metric extra <<< "$variant"
    tag="$metric${extra:+-all}-$n"
    if [ "$metric" = last ]; then
      run "$WORK/$tag.json" prune "$MODEL" "$WORK/$tag" --remove "$n" --metric last --json
    else
      # shellcheck disable=SC2086
      run "$WORK/$tag.json" prune "$MODEL" "$WORK/$tag" --remove "$n" --metric "$metric" $extra --calib "$CALIB" --json
    fi
    P=$(ppl "$WORK/$tag")
    R=$("$PYTHON" -c "print('%.2f' % ($P / $BASE))")
    echo "| $n | $metric${extra:+ (all tokens)} | $(field "$WORK/$tag.json" dropped) | $P | $R |"
    rm -rf "$WORK/$tag"
  done
done

echo
echo "angular distance table d(l, n) at the last token (rows n, columns l), from the report:"
scion prune "$MODEL" "$WORK/table" --remove 1 --calib "$CALIB" --plot "$WORK/d.png" 2>/dev/null \
  | grep -E 'angular_distance|block_influence|calibration' | sed 's/^  //'

echo
echo "calibration speed and memory (one 'scion prune --remove 2 --calib calib.txt' run, /usr/bin/time -v):"
/usr/bin/time -v "${SCION_CMD[@]}" prune "$MODEL" "$WORK/timed" --remove 2 --calib "$CALIB" --json \
  > "$WORK/timed.json" 2> "$WORK/time.txt"
echo "  $(field "$WORK/timed.json" calibration)"
echo "  peak RSS $(grep 'Maximum resident set size' "$WORK/time.txt" | awk '{printf "%.0f MiB", $NF / 1024}'),"\
     "wall $(grep 'Elapsed (wall clock)' "$WORK/time.txt" | awk '{print $NF}') (JVM start-up, model load, calibration, write)"
