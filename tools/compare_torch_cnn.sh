#!/usr/bin/env bash
# Side-by-side speed of hepsim's conv engine and the PyTorch peer of the paper's CNN
# (../shared/peers/torch_cnn.py: oneDNN convolutions, channels-last, forward and feedback convs
# merged, real and imaginary parts stacked) on this machine, same threads, batch, channels and
# steps, in interleaved rounds (hepsim, then torch, per round). Reports, per architecture, the
# medians of free-phase and complex-phase image-steps/s and of whole training steps (images/s) of
# the Table-2 setting (T1 = 250, T2 = 40, N = 2, |β| = 1), and the medians of the per-round ratios.
# Both relax 32x32 maps from one input channel (hepsim reads Fashion-MNIST, zero-padded to 32x32;
# the peer random images): only the input convolution, computed once per batch, depends on it.
#
# Usage: tools/compare_torch_cnn.sh [ROUNDS (3)] [ARCHS ("cnn_small cnn")] [THREADS (2)] [BATCH (32)]
# Env:   TORCH_CNN=path/to/torch_cnn.py (default ../shared/peers/torch_cnn.py next to the repo)
# A comparison tool, not a dependency of hepsim: `tools/deps.sh --torch` installs python3-torch
# and python3-numpy from Debian when missing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rounds="${1:-3}"
archs="${2:-cnn_small cnn}"
threads="${3:-2}"
batch="${4:-32}"
torch_cnn="${TORCH_CNN:-$root/../shared/peers/torch_cnn.py}"
[[ -f "$torch_cnn" ]] || { echo "tools/compare_torch_cnn.sh: $torch_cnn: not found (set TORCH_CNN)" >&2; exit 2; }
"$root/tools/deps.sh" --torch
[[ -x "$root/build/tools/hepsim" ]] || "$root/tools/build.sh"
hepsim="$root/build/tools/hepsim"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS="$threads"
for arch in $archs; do
  case "$arch" in
    cnn) channels=128,256,512,512 ;;
    cnn_small) channels=32,64,128,128 ;;
    *) echo "tools/compare_torch_cnn.sh: unknown architecture '$arch' (cnn or cnn_small)" >&2; exit 2 ;;
  esac
  for r in $(seq "$rounds"); do
    echo "round $r of $rounds: $arch" >&2
    "$hepsim" bench --arch "$arch" --dataset fmnist --batch-size "$batch" --T1 250 --T2 40 --N 2 --beta 1 \
      --angle 0 --threads "$threads" --batches 1 --repeats 1 --warmup 0 > "$tmp/hepsim_${arch}_$r.json"
    /usr/bin/python3 "$torch_cnn" --channels "$channels" --in-channels 1 --size 32 --batch "$batch" --T1 250 \
      --T2 40 --N 2 --beta 1 --threads "$threads" --bench 50 --warmup 3 --repeats 1 \
      --json "$tmp/torch_${arch}_$r.json" > /dev/null
  done
done
/usr/bin/python3 - "$tmp" "$rounds" "$threads" "$batch" "$archs" <<'PY'
import json, statistics, sys
tmp, rounds, threads, batch, archs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5].split()
print(f"threads {threads}, batch {batch}, {rounds} interleaved rounds; medians, and the median of the per-round ratios")
print("| arch | quantity | hepsim | PyTorch | ratio |")
print("|---|---|---|---|---|")
for arch in archs:
    h = [json.load(open(f"{tmp}/hepsim_{arch}_{r}.json")) for r in range(1, rounds + 1)]
    t = [json.load(open(f"{tmp}/torch_{arch}_{r}.json")) for r in range(1, rounds + 1)]
    for key, what in (("free_image_steps_per_s", "free phase, image-steps/s"),
                      ("complex_image_steps_per_s", "complex phase, image-steps/s"),
                      ("train_median", "training step, images/s")):
        hv = [x[key] for x in h]
        tv = [x[key] for x in t]
        ratio = statistics.median([a / b for a, b in zip(hv, tv)])
        print(f"| {arch} | {what} | {statistics.median(hv):.1f} | {statistics.median(tv):.1f} | {ratio:.2f} |")
    # Counted FLOPs (the peer's count: direct convolutions) per second, and for hepsim also the
    # FLOPs its engine executes (fewer: Winograd) with their fraction of the FMA peak.
    print(f"| {arch} | free phase, GFLOP/s counted | {statistics.median(x['free_gflops'] for x in h):.1f} | "
          f"{statistics.median(x['free_gflops'] for x in t):.1f} | |")
    print(f"| {arch} | free phase, GFLOP/s executed (% of the FMA peak) | "
          f"{statistics.median(x['free_executed_gflops'] for x in h):.1f} "
          f"({100 * statistics.median(x['free_fraction_of_fma_peak'] for x in h):.0f} %) | | |")
peaks = [json.load(open(f"{tmp}/hepsim_{a}_{r}.json"))["fma_peak_gflops"] for a in archs for r in range(1, rounds + 1)]
print(f"FMA peak measured by hepsim bench (median of its runs): {statistics.median(peaks):.1f} GFLOP/s")
PY
