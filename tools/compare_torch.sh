#!/usr/bin/env bash
# Side-by-side training throughput of hepsim and the PyTorch baseline (torch_hep.py, an independent
# re-implementation of the paper's Fashion-MNIST setting: mlp_2-256, batch 50, T1 = 150, T2 = 20)
# on this machine, same thread count, in interleaved rounds: for each N and each round, hepsim,
# then torch with Debian's default OpenBLAS kernels, then torch with the AVX-512 kernels
# (OPENBLAS_CORETYPE=SkylakeX). Prints the medians and the median of the per-round ratios
# hepsim / best torch. The host's speed drifts, so only interleaved ratios are meaningful.
#
# Usage: tools/compare_torch.sh [ROUNDS (3)] [BATCHES per round (100)] [THREADS (2)]
# Env:   TORCH_HEP=path/to/torch_hep.py (default ../shared/peers/torch_hep.py next to the repo)
# This is a comparison tool, not a dependency of hepsim: `tools/deps.sh --torch` installs
# python3-torch, python3-numpy and libopenblas0-pthread from Debian when missing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rounds="${1:-3}"
batches="${2:-100}"
threads="${3:-2}"
torch_hep="${TORCH_HEP:-$root/../shared/peers/torch_hep.py}"
[[ -f "$torch_hep" ]] || { echo "tools/compare_torch.sh: $torch_hep: not found (set TORCH_HEP)" >&2; exit 2; }
"$root/tools/deps.sh" --torch
[[ -x "$root/build/tools/hepsim" ]] || "$root/tools/build.sh"
hepsim="$root/build/tools/hepsim"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"
for N in 2 4 6; do
  for r in $(seq "$rounds"); do
    "$hepsim" bench --N "$N" --beta 0.05 --angle 0 --threads "$threads" --batches "$batches" --repeats 1 \
      --warmup 5 > "$tmp/hepsim_${N}_$r.json"
    /usr/bin/python3 "$torch_hep" --N "$N" --beta 0.05 --threads "$threads" --bench "$batches" --warmup 5 \
      --repeats 1 --json "$tmp/torch_${N}_$r.json" > /dev/null
    OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 "$torch_hep" --N "$N" --beta 0.05 --threads "$threads" \
      --bench "$batches" --warmup 5 --repeats 1 --json "$tmp/torchx_${N}_$r.json" > /dev/null
  done
done
/usr/bin/python3 - "$tmp" "$rounds" "$threads" <<'PY'
import json, statistics, sys
tmp, rounds, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3]
print(f"threads {threads}, {rounds} interleaved rounds; examples/s (medians) and hepsim / best-torch ratio")
print("| N | hepsim | torch (OpenBLAS default) | torch (OpenBLAS SkylakeX) | ratio (median of rounds) |")
print("|---|---|---|---|---|")
for N in (2, 4, 6):
    h = [json.load(open(f"{tmp}/hepsim_{N}_{r}.json"))["train_median"] for r in range(1, rounds + 1)]
    t = [json.load(open(f"{tmp}/torch_{N}_{r}.json"))["train_median"] for r in range(1, rounds + 1)]
    x = [json.load(open(f"{tmp}/torchx_{N}_{r}.json"))["train_median"] for r in range(1, rounds + 1)]
    ratios = [hh / max(tt, xx) for hh, tt, xx in zip(h, t, x)]
    print(f"| {N} | {statistics.median(h):.0f} | {statistics.median(t):.0f} | {statistics.median(x):.0f} | "
          f"{statistics.median(ratios):.2f} |")
PY
