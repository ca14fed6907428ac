#!/usr/bin/env bash
# Quick start, command 2: installs what is missing, builds, and runs the whole default test suite.
#   tools/test.sh            the default suite (excludes the `slow` label; about a few minutes)
#   tools/test.sh --all      everything, slow checks included
#   tools/test.sh --sanitize an AddressSanitizer + UBSan build in build-asan/, default suite
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/tools/deps.sh"
label=(-LE slow)
cmake_args=()
case "${1:-}" in
  --all) label=() ;;
  --sanitize) export HEPSIM_BUILD_DIR="$root/build-asan"; cmake_args=(-DHEPSIM_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
  "") ;;
  *) echo "tools/test.sh: unknown option '$1' (expected --all or --sanitize)" >&2; exit 2 ;;
esac
"$root/tools/build.sh" "${cmake_args[@]}"
build="${HEPSIM_BUILD_DIR:-$root/build}"
ctest --test-dir "$build" "${label[@]}" --output-on-failure -j "$(nproc)" --timeout 900
