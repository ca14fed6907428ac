# Sourced by the experiment scripts: sets `root` (the repository) and `hepsim` (the Release
# binary), installing and building first when the binary is missing.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
hepsim="${HEPSIM:-$root/build/tools/hepsim}"  # HEPSIM: another binary (e.g. a frozen copy)
[[ -x "$hepsim" ]] || { "$root/tools/deps.sh" && "$root/tools/build.sh"; }
