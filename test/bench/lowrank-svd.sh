#!/usr/bin/env bash
# Rank-RANK factorisation of one N×N float32 matrix (default 4096, rank 256): Scion (randomized SVD with ONNX Runtime
# or Java products, and optionally the exact EJML SVD) against numpy's full SVD and torch.svd_lowrank, all on the same
# matrix (written once by lowrank-svd.py as raw float32, with its float64 singular values as the Eckart–Young
# optimum), on the same machine, in one run. Also the matrix-product rates against numpy's float32 matmul (the
# machine's practical GEMM peak). Prints a table: seconds (best of REPEATS), relative error ‖W − Ŵ‖_F/‖W‖_F, error /
# optimum, and time relative to torch.svd_lowrank.
#
# Usage: test/bench/lowrank-svd.sh [N] [RANK]
#   PYTHON (default /work/venv/bin/python, with numpy and torch), REPEATS (3), THREADS (2), EXACT=1 adds the exact
#   SVD (minutes at N = 4096), BENCH_DIR (default /var/tmp).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
N=${1:-4096}
RANK=${2:-256}
PY=${PYTHON:-/work/venv/bin/python}
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/scion-lowrank-svd.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

(cd "$ROOT" && mvn -o -q -pl io,lowrank install -DskipTests -Dspotless.check.skip=true)
(cd "$ROOT" && mvn -o -q -pl lowrank dependency:build-classpath -Dmdep.outputFile="$WORK/cp.txt" >/dev/null)
mkdir -p "$WORK/classes"
cp -r "$ROOT/lowrank/target/classes" "$WORK/classes/lowrank"
CP="$WORK/classes/lowrank:$(cat "$WORK/cp.txt")"

echo "generating a ${N}×${N} float32 matrix (σ_i = (1+i)^-0.6 + noise) and its float64 spectrum ..." >&2
"$PY" "$ROOT/test/bench/lowrank-svd.py" gen "$WORK/w.f32" "$N"
{
  OMP_NUM_THREADS=${THREADS:-2} "$PY" "$ROOT/test/bench/lowrank-svd.py" run "$WORK/w.f32" "$N" "$RANK"
  java -Xmx8g -cp "$CP" "$ROOT/test/bench/lowrank-svd.java" "$WORK/w.f32" "$N" "$RANK"
} | tee "$WORK/results.jsonl" >&2
"$PY" - "$WORK/results.jsonl" "$N" "$RANK" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
torch = next((r["seconds"] for r in rows if r["method"].startswith("torch")), None)
print(f"\nrank-{sys.argv[3]} factorisation of a {sys.argv[2]}×{sys.argv[2]} float32 matrix")
print(f"{'method':52} {'seconds':>9} {'GFLOP/s':>8} {'rel.error':>10} {'err/opt':>8} {'time/torch':>10}")
for r in rows:
    g = f"{r['gflops']:.1f}" if "gflops" in r else ""
    e = f"{r['relative_error']:.6f}" if "relative_error" in r else ""
    q = f"{r['error_ratio']:.5f}" if "error_ratio" in r else ""
    t = f"{r['seconds'] / torch:.2f}" if torch and "relative_error" in r else ""
    print(f"{r['method']:52} {r['seconds']:9.3f} {g:>8} {e:>10} {q:>8} {t:>10}")
PYEOF
