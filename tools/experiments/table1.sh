#!/usr/bin/env bash
# The paper's Fashion-MNIST Table-1 setting (mlp_2-256, symmetric start, SGD lr 0.01 momentum 0.9,
# batch 50, T1 = 150, T2 = 20) for N ∈ {1, 2, 4, 6} × |β| ∈ {0.05, 0.5}, EPOCHS epochs each (default
# 5), two runs at a time with one thread each. Prints a markdown table of the final test accuracy.
# Usage: tools/experiments/table1.sh [EPOCHS] [OUT_DIR]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
epochs="${1:-5}"
out="${2:-$root/runs/table1}"
mkdir -p "$out"
jobs=()
for N in 1 2 4 6; do
  for beta in 0.05 0.5; do
    jobs+=("$N $beta")
  done
done
printf '%s\n' "${jobs[@]}" | xargs -P 2 -L 1 bash -c '
  N=$0; beta=$1; dir="'"$out"'/N${N}_beta${beta}"
  [[ -f "$dir.json" ]] && exit 0
  rm -rf "$dir"
  "'"$hepsim"'" train --arch mlp_2-256 --angle 0 --algo hep --N "$N" --beta "$beta" --T1 150 --T2 20 \
    --optimizer sgd --lr 0.01 --momentum 0.9 --batch-size 50 --epochs '"$epochs"' --threads 1 --seed 0 \
    --out "$dir" --quiet > "$dir.json.tmp" && mv "$dir.json.tmp" "$dir.json"'
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
print("| N | test acc., |β| = 0.05 | test acc., |β| = 0.5 | ex/s (β = 0.05) |")
print("|---|---|---|---|")
for N in (1, 2, 4, 6):
    row = [str(N)]
    for beta in ("0.05", "0.5"):
        d = json.load(open(f"{out}/N{N}_beta{beta}.json"))
        row.append(f"{100 * d['test_acc']:.2f} %")
    d = json.load(open(f"{out}/N{N}_beta0.05.json"))
    row.append(f"{d['examples_per_s']:.0f}")
    print("| " + " | ".join(row) + " |")
PY
