#!/usr/bin/env bash
# Quick start, command 1: installs what is missing, builds, and runs the main job: train mlp_2-256
# with independent feedback weights (angle 90°) on real Fashion-MNIST by holomorphic EP (N = 4
# contour points, |β| = 0.05) with Jacobian homeostasis (λ = 1) and AdamW (lr 1e-4), 5 epochs
# (a few minutes on 2 cores), by the paper's map. Homeostasis makes the weights nearly symmetric,
# and the synchronous map then falls into period-2 orbits for some samples: the log counts them
# (README: "Relaxations that do not settle"; `--dt 0.5` removes them). Writes
# runs/demo/{log.h5,checkpoint.h5,config.json,training.png,summary.json} and prints the final test accuracy and the per-layer alignment with backprop.
# A previous runs/demo is moved aside.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/tools/deps.sh" --plots
"$root/tools/build.sh"
out="$root/runs/demo"
mkdir -p "$root/runs"  # not in git: a fresh checkout has no runs/
if [[ -e "$out" ]]; then
  mv "$out" "$out.$(date +%Y%m%d-%H%M%S)"
fi
"$root/build/tools/hepsim" train --dataset fmnist --arch mlp_2-256 --angle 90 --algo hep --N 4 --beta 0.05 \
  --T1 150 --T2 20 --homeostasis 1 --optimizer adamw --lr 1e-4 --batch-size 50 --epochs 5 \
  --out "$out" > "$out.json"
/usr/bin/python3 "$root/tools/plot_log.py" "$out/log.h5" --labels "demo: hEP N=4, angle 90°, λ=1" \
  --out "$out/training.png" > /dev/null
/usr/bin/python3 - "$out.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"final test accuracy {100 * d['test_acc']:.2f} % (top-5 {100 * d['test_top5']:.2f} %) after {d['epochs']} epochs")
print("alignment with backprop (cosine of the EP error vector with the RBP delta, mean over the probe batch):")
for layer, c in d["cos_delta_mean"].items():
    print(f"  {layer:>4}: {c:+.3f}")
print(f"gradient cosine with RBP {d['cos_grad_total']:+.3f}, jac_sym {d['jac_sym']:.4f}, "
      f"weight angle {d['weight_angle_deg']:.1f}°")
print(f"log: {d['out']}/log.h5, figure: {d['out']}/training.png")
PY
mv "$out.json" "$out/summary.json"
