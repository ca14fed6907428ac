#!/usr/bin/env bash
# Configures and builds hepsim in build/ (Release, host vector instructions, warnings as errors).
# Extra arguments go to CMake's configure step.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${HEPSIM_BUILD_DIR:-$root/build}"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DHEPSIM_WERROR=ON "$@" >/dev/null
cmake --build "$build" -j "$(nproc)"
