#!/usr/bin/env bash
# Quick start, command 1: installs what is missing, builds, and runs the main job.
# Until `hepsim train` exists, the main job relaxes real Fashion-MNIST test images with freshly
# initialised independent feedback weights by the map and by Dormand-Prince, and prints the
# comparison as JSON (also written to runs/relax.json).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/tools/deps.sh"
"$root/tools/build.sh"
mkdir -p "$root/runs"
"$root/build/tools/hepsim" relax --arch mlp_2-256 --dataset fmnist --samples 1000 --solver dopri5 \
  | tee "$root/runs/relax.json"
