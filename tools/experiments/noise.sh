#!/usr/bin/env bash
# Analog substrates on Fashion-MNIST (issue 13; README "Analog substrates"):
#  1. the 2022 paper's noise finding: classic EP β = 0.1, classic EP β = 0.4, holomorphic EP N = 10
#     |β| = 0.4 and online hEP (N = 10, |β| = 0.4, 3 periods), each without noise and with state
#     noise σ = 0.04 — mlp_2-256, angle 0, T1 = 150, T2 = 20, SGD lr 0.01 momentum 0.9, batch 50
#     (the paper's Table-1 setting), one epoch on the first TRAIN images, SEEDS seeds;
#  2. the device: hEP N = 4 (the main job's setting: angle 90, |β| = 0.05, AdamW lr 1e-4), with and
#     without homeostasis (λ = 1), against mismatch c ∈ {0, 0.05, 0.1, 0.2} and against weight-bits
#     b ∈ {2, 3, 4, 6, 8, off} (clip w = 0.5, which holds every initial weight), seed 0.
# Every run is one thread; two run at a time; finished runs are kept (the script can be stopped
# and started again). Prints both tables (mean ± sd over seeds) and writes OUT/noise.png.
#
# Usage: tools/experiments/noise.sh [SEEDS (3)] [TRAIN (10000)] [OUT_DIR (runs/noise)]
# Env:   TEST_LIMIT (10000): the test images evaluated; JOBS (2): runs at a time; HEPSIM: the binary
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
seeds="${1:-3}"
train="${2:-10000}"
out="${3:-$root/runs/noise}"
"$root/tools/deps.sh" --plots
mkdir -p "$out"
common="--dataset fmnist --arch mlp_2-256 --epochs 1 --train-limit $train --test-limit ${TEST_LIMIT:-10000} --probe-size 50 --threads 1 --quiet"
jobs=()
for ((s = 0; s < seeds; ++s)); do
  for noise in 0 0.04; do
    jobs+=("ep1_b0.1_n${noise}_s$s|--algo hep --N 1 --beta 0.1 --noise $noise --seed $s")
    jobs+=("ep1_b0.4_n${noise}_s$s|--algo hep --N 1 --beta 0.4 --noise $noise --seed $s")
    jobs+=("hep10_b0.4_n${noise}_s$s|--algo hep --N 10 --beta 0.4 --noise $noise --seed $s")
    jobs+=("online10_b0.4_n${noise}_s$s|--algo online --N 10 --beta 0.4 --periods 3 --noise $noise --seed $s")
  done
done
for lam in 0 1; do
  for c in 0 0.05 0.1 0.2; do jobs+=("dev_mismatch${c}_h$lam|--homeostasis $lam --mismatch $c"); done
  for b in 2 3 4 6 8; do jobs+=("dev_bits${b}_h$lam|--homeostasis $lam --weight-bits $b --weight-clip 0.5"); done
done
export hepsim out common
printf '%s\n' "${jobs[@]}" | xargs -P "${JOBS:-2}" -d '\n' -n 1 bash -c '
  set -e  # a failed run is not marked done (and xargs reports it)
  name="${0%%|*}"; args="${0#*|}"; base="$out/$name"
  [[ -f "$base.json" ]] && exit 0
  rm -rf "$base"
  if [[ $name == dev_* ]]; then
    setting="--angle 90 --algo hep --N 4 --beta 0.05 --T1 150 --T2 20 --optimizer adamw --lr 1e-4 --batch-size 50 --seed 0"
  else
    setting="--angle 0 --T1 150 --T2 20 --optimizer sgd --lr 0.01 --momentum 0.9 --batch-size 50"
  fi
  "$hepsim" train $common $setting $args --out "$base" > "$base.json.tmp"
  mv "$base.json.tmp" "$base.json"'
/usr/bin/python3 - "$out" "$seeds" <<'PY'
import json, statistics, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

out, seeds = sys.argv[1], int(sys.argv[2])
load = lambda name: json.load(open(f"{out}/{name}.json"))
ms = lambda xs: f"{100 * statistics.mean(xs):.1f} ± {100 * statistics.stdev(xs):.1f}" if len(xs) > 1 else f"{100 * xs[0]:.1f}"
print(f"## State noise: test accuracy (%) and cosine of the gradient with RBP's, mean ± sd over {seeds} seeds")
print("| estimator | no noise: accuracy | cos_grad | σ = 0.04: accuracy | cos_grad |")
print("|---|---|---|---|---|")
for key, label in [("ep1_b0.1", "classic EP, β = 0.1"), ("ep1_b0.4", "classic EP, β = 0.4"),
                   ("hep10_b0.4", "hEP N = 10, \\|β\\| = 0.4"), ("online10_b0.4", "online hEP N = 10, \\|β\\| = 0.4, 3 periods")]:
    row = [label]
    for noise in ("0", "0.04"):
        runs = [load(f"{key}_n{noise}_s{s}") for s in range(seeds)]
        row += [ms([r["test_acc"] for r in runs]), f"{statistics.mean(r['cos_grad_total'] for r in runs):.3f}"]
    print("| " + " | ".join(row) + " |")
print()
print("## The device (hEP N = 4, angle 90, AdamW 1e-4, seed 0): test accuracy (%)")
mismatch = ["0", "0.05", "0.1", "0.2"]
bits = ["2", "3", "4", "6", "8"]
print("| homeostasis | " + " | ".join(f"mismatch {c}" for c in mismatch) + " | " + " | ".join(f"{b} bits" for b in bits) + " |")
print("|---|" + "---|" * (len(mismatch) + len(bits)))
fig, ax = plt.subplots(1, 2, figsize=(10, 4))
for lam in ("0", "1"):
    acc_m = [100 * load(f"dev_mismatch{c}_h{lam}")["test_acc"] for c in mismatch]
    acc_b = [100 * load(f"dev_bits{b}_h{lam}")["test_acc"] for b in bits]
    print(f"| λ = {lam} | " + " | ".join(f"{a:.1f}" for a in acc_m + acc_b) + " |")
    ax[0].plot([float(c) for c in mismatch], acc_m, "o-", label=f"λ = {lam}")
    ax[1].plot([int(b) for b in bits] + [12], acc_b + [acc_m[0]], "o-", label=f"λ = {lam}")
ax[0].set_xlabel("mismatch c"); ax[0].set_ylabel("test accuracy (%)"); ax[0].legend()
ax[1].set_xlabel("weight bits (12: full precision)"); ax[1].legend()
fig.suptitle("hEP N = 4 on a non-ideal device (Fashion-MNIST, one epoch)")
fig.tight_layout()
fig.savefig(f"{out}/noise.png", dpi=100)
print(f"\nfigure: {out}/noise.png")
PY
