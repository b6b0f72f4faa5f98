#!/usr/bin/env bash
# Proves that the emulated device (docs/gpu-emulator.md) catches GPU bugs: applies each mutation of
# scripts/emulator_mutations.py to a copy of the tree (a git worktree of HEAD under OUT), rebuilds, runs the GPU
# tests there on the emulated device and prints the table of what the suite caught. Exits non-zero when a
# mutation survives. Slow (a release build per mutation): not part of CI.
#
#   scripts/emulator-mutations.sh [OUT]        (default target/emulator-mutations)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
exec python3 "$root/scripts/emulator_mutations.py" "$root" "${1:-$root/target/emulator-mutations}"
