#!/usr/bin/env bash
# Runs COMMAND on the emulated GPU (docs/gpu-emulator.md): builds target/emulator from kernels/emulator and
# kernels/*.cu where its sources changed, puts its libcuda.so and libcublas.so first on the library path with
# the real NVRTC (scripts/cuda-env.sh), and runs COMMAND there. Settings pass through the environment:
# TGEMU_ARCH=sm_80|sm_90, TGEMU_MEMORY=BYTES, TGEMU_SEED=N, TGEMU_COVERAGE=FILE, TGEMU_ABORT=1; TGEMU_DIR
# (default target/emulator) and TGEMU_CXXFLAGS choose another build, e.g. an unoptimized one for gdb.
#
#   scripts/emulated-gpu.sh cargo test --release --features cuda --test cuda_ops
#   scripts/emulated-gpu.sh target/release/examples/train_llama --device cuda --config tiny --steps 20
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: scripts/emulated-gpu.sh COMMAND..." >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${TGEMU_DIR:-target/emulator}
case "$dir" in /*) ;; *) dir="$root/$dir" ;; esac
bash "$root/kernels/emulator/build.sh" "$dir"
saved=$PWD
cd "$root"
# shellcheck source=scripts/cuda-env.sh
source scripts/cuda-env.sh
cd "$saved"
export LD_LIBRARY_PATH="$dir:$LD_LIBRARY_PATH"
exec "$@"
