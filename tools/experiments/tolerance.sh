#!/usr/bin/env bash
# Fixed-step against tolerance-stopped relaxation in the Table-1 setting (mlp_2-256, angle 0,
# N = 2, |β| = 0.05, SGD lr 0.01 momentum 0.9, batch 50, T1 = 150, T2 = 20), EPOCHS epochs (5) on
# 2 threads, one run after the other: the tolerance-stopped run stops each sample's free and nudged
# phases once its residual ‖M(u) − u‖∞ ≤ TOL (1e-4), within the same step budgets. Prints the
# test accuracy per epoch and the wall time of each run.
# Usage: tools/experiments/tolerance.sh [EPOCHS] [TOL] [OUT_DIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
epochs="${1:-5}"
tol="${2:-1e-4}"
out="${3:-$root/runs/tolerance}"
hepsim="$root/build/tools/hepsim"
[[ -x "$hepsim" ]] || { "$root/tools/deps.sh" && "$root/tools/build.sh"; }
mkdir -p "$out"
for t in 0 "$tol"; do
  dir="$out/tol_$t"
  [[ -f "$dir.json" ]] && continue
  rm -rf "$dir"
  "$hepsim" train --arch mlp_2-256 --angle 0 --algo hep --N 2 --beta 0.05 --T1 150 --T2 20 --optimizer sgd \
    --lr 0.01 --momentum 0.9 --batch-size 50 --epochs "$epochs" --threads 2 --seed 0 --tol "$t" \
    --out "$dir" --quiet > "$dir.json.tmp"
  mv "$dir.json.tmp" "$dir.json"
done
/usr/bin/python3 - "$out" "$tol" <<'PY'
import h5py, json, sys
out, tol = sys.argv[1], sys.argv[2]
print("| relaxation | test accuracy per epoch (%) | wall time (s) |")
print("|---|---|---|")
for t, name in (("0", "fixed steps (T1 = 150, T2 = 20)"), (tol, f"per-sample stop at ‖M(u) − u‖∞ ≤ {tol}")):
    with h5py.File(f"{out}/tol_{t}/log.h5", "r") as f:
        acc = " / ".join(f"{100 * a:.2f}" for a in f["epochs/test_acc"][()])
        secs = float(f["epochs/seconds"][()].sum())
    print(f"| {name} | {acc} | {secs:.0f} |")
PY
