#!/usr/bin/env bash
# The homeostasis experiment: independent feedback (angle 90°), exact EP response (N = 0), AdamW
# lr 1e-4, λ = 1 against λ = 0, EPOCHS epochs (default 5) on Fashion-MNIST; both runs in parallel
# with one thread each. Prints the final metrics and draws the comparison figure.
# Usage: tools/experiments/homeostasis.sh [EPOCHS] [OUT_DIR]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
epochs="${1:-5}"
out="${2:-$root/runs/homeostasis}"
mkdir -p "$out"
printf '%s\n' 1 0 | xargs -P 2 -L 1 bash -c '
  lam=$0; dir="'"$out"'/lambda${lam}"
  [[ -f "$dir.json" ]] && exit 0
  rm -rf "$dir"
  "'"$hepsim"'" train --arch mlp_2-256 --angle 90 --algo hep --N 0 --T1 150 --T2 20 --optimizer adamw \
    --lr 1e-4 --homeostasis "$lam" --batch-size 50 --epochs '"$epochs"' --threads 1 --seed 0 \
    --out "$dir" --quiet > "$dir.json.tmp" && mv "$dir.json.tmp" "$dir.json"'
for lam in 1 0; do echo "lambda=$lam $(cat "$out/lambda${lam}.json")"; done
/usr/bin/python3 "$root/tools/plot_log.py" "$out/lambda1/log.h5" "$out/lambda0/log.h5" --labels "λ = 1" "λ = 0" \
  --out "$out/homeostasis.png"
