#!/usr/bin/env bash
# Peer check of base_model in linear and karcher against mergekit's own code: runs `scion merge` on the llama merge
# fixtures with a base_model that is not listed, then runs mergekit's LinearMergeTask.execute and
# karcher_merge_tensors (loaded from mergekit's source, not imported: its package does not import here; nothing of it
# is copied into Scion) on the same float32 tensors in the order mergekit's planner gathers them (the listed models,
# then the base it appends), and prints the max |diff| per method over all tensors.
# Usage: test/bench/mergekit-base-peer.sh MERGEKIT_GIT_DIR [PYTHON]
#   MERGEKIT_GIT_DIR: a clone of arcee-ai/mergekit (a work tree or a bare git dir; HEAD is read with git show)
set -euo pipefail
cd "$(dirname "$0")/../.."
MK="$1"
PY="${2:-/work/venv/bin/python}"
F=test/src/test/resources/fixtures
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
git -C "$MK" show HEAD:mergekit/merge_methods/linear.py >"$OUT/linear.py"
git -C "$MK" show HEAD:mergekit/merge_methods/karcher.py >"$OUT/karcher.py"
cat >"$OUT/linear.yml" <<YML
merge_method: linear
base_model: $PWD/$F/hf/llama
parameters: {weight: 0.5}
models:
  - model: $PWD/$F/merge/llama-ft1
    parameters: {weight: 0.2}
  - model: $PWD/$F/merge/llama-ft2
    parameters: {weight: 0.3}
YML
./scion merge "$OUT/linear.yml" "$OUT/linear" >/dev/null
./scion merge --method karcher --base "$F/hf/llama" "$F/merge/llama-ft1" "$F/merge/llama-ft2" "$OUT/karcher" >/dev/null
"$PY" - "$OUT" "$F" <<'PY'
import ast, sys, types, typing
import torch
from safetensors.torch import load_file

out, fx = sys.argv[1], sys.argv[2]

def load_def(path, name, cls=None):
    """The source of one function (or one method of a class) from a mergekit file, compiled on its own."""
    tree = ast.parse(open(path).read())
    body = tree.body
    if cls:
        body = next(n for n in body if isinstance(n, ast.ClassDef) and n.name == cls).body
    fn = next(n for n in body if isinstance(n, ast.FunctionDef) and n.name == name)
    ns = dict(torch=torch, Dict=typing.Dict, List=typing.List, Optional=typing.Optional, Any=typing.Any,
              ModelReference=object, rectify_embed_sizes=lambda *a, **k: None)
    exec(compile(ast.Module(body=[fn], type_ignores=[]), path, "exec"), ns)
    return ns[name]

linear_execute = load_def(f"{out}/linear.py", "execute", "LinearMergeTask")
karcher = load_def(f"{out}/karcher.py", "karcher_merge_tensors")
ft1 = load_file(f"{fx}/merge/llama-ft1/model.safetensors")
ft2 = load_file(f"{fx}/merge/llama-ft2/model.safetensors")
base = load_file(f"{fx}/hf/llama/model.safetensors")

def report(label, scion_dir, ref):
    got = load_file(f"{scion_dir}/model.safetensors")
    m = max((got[n].float() - ref(n).float()).abs().max().item() for n in got)
    print(f"{label:50s} max |diff| vs mergekit's code: {m:.3g}")

# mergekit's planner: the listed models, then the base it appends (top-level parameters: weight 0.5)
self = types.SimpleNamespace(tensor_parameters={"ft1": {"weight": 0.2}, "ft2": {"weight": 0.3}, "base": {"weight": 0.5}},
                             normalize=True, weight_info=None)
report("linear (0.2, 0.3) + unlisted base (0.5)", f"{out}/linear",
       lambda n: linear_execute(self, {"ft1": ft1[n], "ft2": ft2[n], "base": base[n]}))
report("karcher (ft1, ft2) + unlisted base", f"{out}/karcher",
       lambda n: karcher([ft1[n], ft2[n], base[n]], [1 / 3] * 3, max_iter=10, tol=1e-5))
report("karcher (ft1, ft2) without the base (old Scion)", f"{out}/karcher",
       lambda n: karcher([ft1[n], ft2[n]], [1 / 2] * 2, max_iter=10, tol=1e-5))
PY
