#!/usr/bin/env bash
# Fuzzes one ParserFuzzTest target with Jazzer for N inputs (libFuzzer -runs=N), stopping after 3 minutes at most (maxDuration
# of the @FuzzTest; a further run resumes from the inputs the last one kept, so runs add up).
#   test/bench/fuzz.sh TARGET N
# TARGET: safetensorsFile | safetensorsIndex | configJson | mergeYaml | onnxModel
# Inputs that add coverage go to .cifuzz-corpus/scion.test.fuzz.ParserFuzzTest/TARGET/ (not committed); a crashing input
# is written to test/src/test/resources/scion/test/fuzz/ParserFuzzTestInputs/TARGET/ and the run fails. The totals line
# of libFuzzer ("Done N runs in S second(s)") is printed at the end. Without JAZZER_FUZZ, `mvn verify` replays the
# committed inputs only.
set -euo pipefail
target=${1:?target}
runs=${2:?number of inputs}
cd "$(dirname "$0")/../.."
log=$(mktemp)
set +e
JAZZER_FUZZ=1 mvn -B -pl test -am verify -Dspotless.check.skip=true -Djacoco.skip=true \
  -Djazzer.instrumentation_includes="scion.**" -Dtest="ParserFuzzTest#$target" -Dsurefire.failIfNoSpecifiedTests=false \
  -Djazzer.internal.arg.0=fuzz -Djazzer.internal.arg.1=-runs="$runs" -Djazzer.internal.arg.2=-timeout=10 \
  >"$log" 2>&1
rc=$?
set -e
grep -E "^#[0-9]+ +(DONE|pulse|NEW|REDUCE)|Done [0-9]+ runs|== Java Exception|ERROR: libFuzzer|crash-|Tests run:|FAIL" "$log" | tail -25
echo "log: $log (exit $rc)"
exit $rc
