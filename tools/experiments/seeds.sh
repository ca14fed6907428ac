#!/usr/bin/env bash
# The first epochs of the paper's Fashion-MNIST Table-1 setting (mlp_2-256, angle 0, N = 2,
# |β| = 0.05, T1 = 150, T2 = 20, SGD lr 0.01 momentum 0.9, batch 50) over many seeds, for hepsim
# and, side by side, for the PyTorch re-implementation ../shared/peers/torch_hep.py (its seeds draw
# another initialisation and data order). One thread per run, two runs at a time; finished runs are
# kept, so the script can be stopped and started again. Prints, per epoch, the test accuracy and
# test loss of every seed, their means and standard deviations, the share of seeds at or above
# 82 % after epoch 3, and Welch's t statistic for the difference of the two means.
#
# Usage: tools/experiments/seeds.sh [SEEDS (8)] [EPOCHS (3)] [OUT_DIR (runs/seeds_cmp)]
# Env:   TORCH_HEP=path/to/torch_hep.py (default ../shared/peers/torch_hep.py next to the
#        repository); TORCH_HEP=none runs hepsim only. The peer needs Debian's python3-torch.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
seeds="${1:-8}"
epochs="${2:-3}"
out="${3:-$root/runs/seeds_cmp}"
torch_hep="${TORCH_HEP:-$root/../shared/peers/torch_hep.py}"
"$root/tools/deps.sh" --plots
if [[ "$torch_hep" != none && ! -f "$torch_hep" ]]; then
  echo "tools/experiments/seeds.sh: $torch_hep: not found (set TORCH_HEP, or TORCH_HEP=none)" >&2
  exit 2
fi
if [[ "$torch_hep" != none ]] && ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  echo "tools/experiments/seeds.sh: the PyTorch peer needs python3-torch (apt-get install python3-torch)" >&2
  exit 2
fi
mkdir -p "$out/hepsim" "$out/torch"
jobs=()
for ((s = 0; s < seeds; ++s)); do
  jobs+=("hepsim $s")
  [[ "$torch_hep" != none ]] && jobs+=("torch $s")
done
export hepsim torch_hep out epochs
printf '%s\n' "${jobs[@]}" | xargs -P 2 -L 1 bash -c '
  set -e  # a failed run is not marked done (and xargs reports it)
  impl=$0; s=$1; base="$out/$impl/seed$s"
  [[ -f "$base.done" ]] && exit 0
  if [[ $impl == hepsim ]]; then
    rm -rf "$base"
    "$hepsim" train --arch mlp_2-256 --angle 0 --algo hep --N 2 --beta 0.05 --T1 150 --T2 20 \
      --optimizer sgd --lr 0.01 --momentum 0.9 --batch-size 50 --epochs "$epochs" --threads 1 \
      --seed "$s" --out "$base" --quiet > "$base.json"
  else
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 /usr/bin/python3 "$torch_hep" --N 2 --beta 0.05 \
      --T1 150 --T2 20 --bsz 50 --lr 0.01 --mmt 0.9 --angle 0 --threads 1 --epochs "$epochs" \
      --seed "$s" > "$base.log"
  fi
  touch "$base.done"'
/usr/bin/python3 - "$out" "$seeds" "$epochs" "$torch_hep" <<'PY'
import json, math, statistics, sys
import h5py

out, seeds, epochs, with_torch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] != "none"


def hepsim_run(s):
    with h5py.File(f"{out}/hepsim/seed{s}/log.h5", "r") as f:
        e = f["epochs"]
        return list(e["test_acc"][()]), list(e["test_loss"][()])


def torch_run(s):
    path = f"{out}/torch/seed{s}.log"
    recs = [json.loads(l) for l in open(path) if l.startswith('{"epoch"')]
    return [r["test_acc"] for r in recs], [r["test_loss"] for r in recs]


runs = {"hepsim": [hepsim_run(s) for s in range(seeds)],
        "PyTorch": [torch_run(s) for s in range(seeds)] if with_torch else []}
runs = {k: v for k, v in runs.items() if v}


def fmt(xs):
    return f"{100 * statistics.mean(xs):.2f} ± {100 * statistics.stdev(xs):.2f}" if len(xs) > 1 else "—"


print(f"| implementation | seeds | " + " | ".join(f"test acc. epoch {e + 1}" for e in range(epochs))
      + f" | test loss epoch {epochs} |" + (" seeds ≥ 82 % at epoch 3 |" if epochs >= 3 else ""))
print("|---" * (epochs + 3 + (epochs >= 3)) + "|")
for name, rs in runs.items():
    accs = [[r[0][e] for r in rs] for e in range(epochs)]
    loss = [r[1][-1] for r in rs]
    print(f"| {name} | {len(rs)} | " + " | ".join(fmt(a) for a in accs)
          + f" | {statistics.mean(loss):.4f} ± {statistics.stdev(loss) if len(loss) > 1 else 0:.4f}"
          + " |" + (f" {sum(a >= 0.82 for a in accs[2])} of {len(rs)} |" if epochs >= 3 else ""))
print()
for name, rs in runs.items():
    print(f"{name}, test accuracy per seed (epochs 1..{epochs}):")
    for s, r in enumerate(rs):
        print(f"  seed {s}: " + " / ".join(f"{100 * a:.2f}" for a in r[0]))
if len(runs) == 2 and min(len(v) for v in runs.values()) > 1:
    for e in range(epochs):
        a = [r[0][e] for r in runs["hepsim"]]
        b = [r[0][e] for r in runs["PyTorch"]]
        se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
        print(f"epoch {e + 1}: hepsim − PyTorch = {100 * (statistics.mean(a) - statistics.mean(b)):+.2f} points, "
              f"Welch t = {(statistics.mean(a) - statistics.mean(b)) / se:+.2f}")
PY
