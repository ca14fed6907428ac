#!/usr/bin/env bash
# Data-parallel scaling on this machine: training throughput (images/s of whole training steps,
# the log's examples_per_s) of one process with 1 and 2 threads against `mpirun -np 1 --bind-to none
# --threads 2` (mpirun binds each rank to one core unless told otherwise)
# and `mpirun -np 2 --threads 1`, for mlp_2-256 and cnn_small on Fashion-MNIST, ROUNDS interleaved
# rounds (medians); then the gradient sum of the paper's `cnn` (8,185,576 parameters at 1000
# classes) timed by tools/bench/bench_allreduce on 1 and 2 ranks. Prints markdown tables.
# Usage: tools/experiments/mpi_scaling.sh [ROUNDS (3)]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
rounds="${1:-3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mlp=(--arch mlp_2-256 --train-limit 12000 --test-limit 500 --batch-size 50 --epochs 1 --probe-size 10)
cnn=(--config "$root/tools/configs/fmnist_cnn_small.json" --homeostasis 0 --train-limit 384 --test-limit 64
     --epochs 1 --probe-size 2)
layouts=("1x1" "1x2" "mpi1x2" "mpi2x1")
run() {  # run NAME LAYOUT ARGS… → examples/s
  local name="$1" layout="$2"; shift 2
  local out="$tmp/$name-$layout-$RANDOM"
  case "$layout" in
    1x1) "$hepsim" train "$@" --threads 1 --quiet --out "$out" ;;
    1x2) "$hepsim" train "$@" --threads 2 --quiet --out "$out" ;;
    mpi1x2) mpirun -np 1 --bind-to none "$hepsim" train "$@" --threads 2 --quiet --out "$out" ;;
    mpi2x1) mpirun -np 2 "$hepsim" train "$@" --threads 1 --quiet --out "$out" ;;
  esac | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["examples_per_s"])'
  rm -rf "$out"
}
median() { /usr/bin/python3 -c 'import statistics, sys; print("%.1f" % statistics.median(map(float, sys.argv[1:])))' "$@"; }
echo "| network | 1 process, 1 thread | 1 process, 2 threads | mpirun -np 1 --bind-to none --threads 2 | mpirun -np 2 --threads 1 |"
echo "|---|---|---|---|---|"
for name in mlp cnn; do
  declare -A samples=()
  for ((r = 0; r < rounds; ++r)); do
    for l in "${layouts[@]}"; do
      if [[ $name == mlp ]]; then v=$(run mlp "$l" "${mlp[@]}"); else v=$(run cnn "$l" "${cnn[@]}"); fi
      samples[$l]="${samples[$l]:-} $v"
    done
  done
  row="| $([[ $name == mlp ]] && echo mlp_2-256 || echo cnn_small) |"
  for l in "${layouts[@]}"; do row+=" $(median ${samples[$l]}) |"; done
  echo "$row"
  unset samples
done
bench="$root/build/tools/bench/bench_allreduce"
echo
echo "| gradient sum of cnn (8,185,576 floats) | median s | effective GB/s |"
echo "|---|---|---|"
for np in 1 2; do
  mpirun -np "$np" "$bench" --params 8185576 --repeats 30 |
    /usr/bin/python3 -c 'import json, sys; d = json.load(sys.stdin); print("| %d rank(s) | %.4f | %.2f |" % (d["ranks"], d["median_s"], d["effective_GB_per_s"]))'
done
