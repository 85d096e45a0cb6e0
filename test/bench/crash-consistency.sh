#!/usr/bin/env bash
# Crash consistency table: kills every writer (safetensors single file and sharded, a grown folder with config.json
# and recipe, ONNX inline and with external data) with the crash hook of AtomicOutput (JVM halt, exit 137, as kill -9)
# at every phase, fresh and over an old output with --force, and at 16 byte offsets; checks the destination after the
# kill and after the next run, and prints the table (also in test/target/crash-consistency.md).
#
# Usage: test/bench/crash-consistency.sh        POINTS (byte offsets per writer, default 16)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
mvn -B -q -pl test -am verify -Dspotless.check.skip=true -Dtest=CrashConsistencyTest \
  -Dsurefire.failIfNoSpecifiedTests=false -Dscion.crash.full=true -Dscion.crash.points="${POINTS:-16}" >&2
cat test/target/crash-consistency.md
echo "$(($(wc -l < test/target/crash-consistency.md) - 2)) kills, all checked"
