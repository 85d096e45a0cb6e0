"""Python side of test/bench/lowrank-svd.sh: the matrix, numpy's full SVD and torch.svd_lowrank, timed.

  gen OUT.f32 N        a float32 N×N matrix (raw little-endian, row-major) with a trained-weight-like spectrum:
                       W = U·diag(σ)·Vᵀ, σ_i = (1 + i)^-0.6 plus Gaussian noise of 1e-3·σ_0 (seeded); also writes
                       OUT.f32.sigma (float64 singular values of W, from numpy in float64: the Eckart–Young optimum)
  run IN.f32 N RANK    times numpy.linalg.svd (full thin SVD, float32) and torch.svd_lowrank(q = RANK + 10,
                       niter = 2), and numpy's float32 matmul of [N, N]·[N, RANK + 10] as the machine's practical GEMM
                       peak; prints one JSON line per method: seconds (best of REPEATS), relative error
                       ‖W − Ŵ‖_F / ‖W‖_F and ratio to the optimum √(Σ_{i>r} σ_i²)/‖W‖_F
"""
import json
import os
import sys
import time

import numpy as np


def gen(path, n):
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((n, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    s = (1.0 + np.arange(n)) ** -0.6
    w = (u * s) @ v.T + 1e-3 * s[0] * rng.standard_normal((n, n)) / np.sqrt(n)
    w = w.astype(np.float32)
    w.tofile(path)
    sigma = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    sigma.tofile(path + ".sigma")


def best(f, repeats):
    times = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


def run(path, n, rank):
    repeats = int(os.environ.get("REPEATS", "3"))
    threads = os.environ.get("THREADS", "2")
    w = np.fromfile(path, dtype=np.float32).reshape(n, n)
    sigma = np.fromfile(path + ".sigma", dtype=np.float64)
    norm = float(np.sqrt(np.sum(sigma ** 2)))
    optimum = float(np.sqrt(np.sum(sigma[rank:] ** 2))) / norm
    w64 = w.astype(np.float64)

    def report(name, seconds, rec, extra=None):
        err = float(np.linalg.norm(w64 - rec.astype(np.float64))) / norm
        d = {"method": name, "seconds": round(seconds, 4), "relative_error": err, "optimum": optimum,
             "error_ratio": err / optimum}
        if extra:
            d.update(extra)
        print(json.dumps(d), flush=True)

    omega = np.random.default_rng(1).standard_normal((n, rank + 10)).astype(np.float32)
    t, _ = best(lambda: w @ omega, repeats)
    print(json.dumps({"method": "numpy matmul f32 [N,N]x[N,r+10]", "seconds": round(t, 4),
                      "gflops": 2.0 * n * n * (rank + 10) / t / 1e9}), flush=True)
    t, (u, s, vt) = best(lambda: np.linalg.svd(w, full_matrices=False), max(1, repeats - 1))
    report("numpy.linalg.svd (full, f32)", t, (u[:, :rank] * s[:rank]) @ vt[:rank])

    import torch
    torch.set_num_threads(int(threads))
    tw = torch.from_numpy(w)

    def lowrank():
        torch.manual_seed(0)
        return torch.svd_lowrank(tw, q=rank + 10, niter=2)

    t, (u, s, v) = best(lowrank, repeats)
    rec = ((u[:, :rank] * s[:rank]) @ v[:, :rank].T).numpy()
    report("torch.svd_lowrank (q=r+10, niter=2, f32)", t, rec, {"torch": torch.__version__})


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        gen(sys.argv[2], int(sys.argv[3]))
    else:
        run(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
