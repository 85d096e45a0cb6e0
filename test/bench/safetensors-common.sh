# Shared helpers of the safetensors benchmarks; sourced, not run.
# Compiles the io module's main and test classes and sets CP to a runnable classpath.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

st_build() {
  local out=$1
  (cd "$ROOT" && mvn -o -q -pl io test-compile -Dspotless.check.skip=true)
  # The dependency plugin may need its own dependencies downloaded once: offline first, then online.
  (cd "$ROOT" && { mvn -o -q -pl io dependency:build-classpath -Dmdep.includeScope=test \
                     -Dmdep.outputFile="$out/cp.txt" >/dev/null 2>&1 \
                   || mvn -q -pl io dependency:build-classpath -Dmdep.includeScope=test \
                     -Dmdep.outputFile="$out/cp.txt" >/dev/null; })
  CP="$ROOT/io/target/classes:$ROOT/io/target/test-classes:$(cat "$out/cp.txt")"
}

# Drops the page cache; fails when not permitted (not root, or read-only /proc/sys).
st_drop_caches() {
  sync
  { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null
}

st_now() { date +%s.%N; }

# GB/s of $1 bytes in $2 seconds.
st_gbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.2f", b / s / 1e9 }'; }

st_check_disk() {
  local dir=$1 need=$2
  local avail
  avail=$(df -B1 --output=avail "$dir" | tail -1)
  if [ "$avail" -lt "$need" ]; then
    echo "not enough disk space in $dir: need $need bytes, have $avail" >&2
    exit 1
  fi
}
