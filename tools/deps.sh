#!/usr/bin/env bash
# Installs the Debian 12 packages hepsim needs, when missing (non-interactive, idempotent).
# Usage: tools/deps.sh [--plots] [--torch]
#   the Python module (tools/python) needs python3-dev, python3-numpy and pybind11-dev, its tests
#   python3-pytest and python3-h5py (they read the runs' logs);
#   --plots adds python3-matplotlib (tools/plot_log.py, the Python example's figure);
#   --torch adds python3-torch and OpenBLAS for the PyTorch peers (tools/compare_torch*.sh), which
#   are comparison tools, not dependencies of hepsim.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libeigen3-dev libboost-dev libfftw3-dev libhdf5-dev doctest-dev
      libcli11-dev nlohmann-json3-dev zlib1g-dev libbenchmark-dev dataset-fashion-mnist
      libopenmpi-dev openmpi-bin
      python3 python3-dev python3-numpy pybind11-dev python3-pytest python3-h5py)
for arg in "$@"; do
  case "$arg" in
    --plots) pkgs+=(python3-matplotlib) ;;
    --torch) pkgs+=(python3 python3-numpy python3-torch libopenblas0-pthread) ;;
    *) echo "tools/deps.sh: unknown option '$arg' (--plots, --torch)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "tools/deps.sh: installing ${missing[*]}" >&2
SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
  # A fresh machine may have no package lists yet.
  $SUDO apt-get update -q >&2
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
