# Sourced by the experiment scripts: sets `root` (the repository) and `hepsim` (the Release
# binary), installing and building first when the binary is missing.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
hepsim="$root/build/tools/hepsim"
[[ -x "$hepsim" ]] || { "$root/tools/deps.sh" && "$root/tools/build.sh"; }
