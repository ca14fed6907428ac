#!/usr/bin/env bash
# How the cost of a training step grows with the batch size, the number of contour points N and
# the network width (mlp with two hidden layers of W neurons and independent feedback, the
# mlp_2-256 pattern), measured with `hepsim bench` on real Fashion-MNIST (T1 = 150, T2 = 20,
# angle 90, the default). Prints markdown tables of examples/s and GFLOP/s.
# Usage: tools/experiments/scaling.sh [THREADS (2)] [BATCHES per round (60)]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
threads="${1:-2}"
batches="${2:-60}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
bench() { "$hepsim" bench --threads "$threads" --batches "$batches" --repeats 3 --warmup 3 "$@"; }
row() {
  /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin)
print("| %s | %.0f | %.1f | %.1f | %.1f |" % (sys.argv[1], d["train_median"], d["train_gflops"], d["relax_gflops"], d["gemm_peak_gflops"]))
' "$1"
}
header() { echo; echo "| $1 | examples/s | training GFLOP/s | relaxation GFLOP/s | Eigen GEMM GFLOP/s (same shapes) |"; echo "|---|---|---|---|---|"; }

header "batch size (N = 2)"
for B in 10 25 50 100 200; do bench --N 2 --batch-size "$B" | row "$B"; done
header "N (batch 50)"
for N in 0 1 2 3 4 6 8; do bench --N "$N" | row "$N"; done
header "hidden width (N = 2, batch 50)"
for W in 128 256 512 1024; do
  cat > "$tmp/mlp_$W.json" <<JSON
{"name": "mlp_2-$W", "layers": [{"name": "l1", "size": $W}, {"name": "l2", "size": $W}, {"name": "out", "size": "classes"}],
 "edges": [{"pre": "in", "post": "l1", "type": "dense"}, {"pre": "l1", "post": "l2", "type": "dense"},
           {"pre": "l2", "post": "l1", "type": "dense_nobias"}, {"pre": "l2", "post": "out", "type": "dense"},
           {"pre": "out", "post": "l2", "type": "dense_nobias"}]}
JSON
  bench --N 2 --arch "$tmp/mlp_$W.json" | row "$W"
done
