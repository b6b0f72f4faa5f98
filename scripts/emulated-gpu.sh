#!/usr/bin/env bash
# Runs COMMAND on the emulated GPU (docs/gpu-emulator.md): builds target/emulator from kernels/emulator and
# kernels/*.cu where its sources changed, puts its libcuda.so and libcublas.so first on the library path with
# the real NVRTC (scripts/cuda-env.sh), and runs COMMAND there. Settings pass through the environment:
# TGEMU_ARCH=sm_80|sm_90, TGEMU_DEVICES=N, TGEMU_MEMORY=BYTES, TGEMU_SEED=N, TGEMU_COVERAGE=FILE,
# TGEMU_ABORT=1, TGEMU_NCCL_TIMEOUT=SECONDS; TGEMU_DIR (default target/emulator) and TGEMU_CXXFLAGS choose another
# build, e.g. an unoptimized one for gdb. TGEMU_SANITIZE=address builds the emulator and kernels with
# AddressSanitizer (into target/emulator-asan) and loads its runtime into the programs cargo runs (or COMMAND).
#
#   scripts/emulated-gpu.sh cargo test --release --features cuda --test cuda_ops
#   scripts/emulated-gpu.sh target/release/examples/train_llama --device cuda --config tiny --steps 20
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: scripts/emulated-gpu.sh COMMAND..." >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
asan=
if [ "${TGEMU_SANITIZE:-}" = address ]; then
    dir=${TGEMU_DIR:-target/emulator-asan}
    asan="$(${CXX:-g++} -print-file-name=libasan.so)"
else
    dir=${TGEMU_DIR:-target/emulator}
fi
case "$dir" in /*) ;; *) dir="$root/$dir" ;; esac
bash "$root/kernels/emulator/build.sh" "$dir"
saved=$PWD
cd "$root"
# shellcheck source=scripts/cuda-env.sh
source scripts/cuda-env.sh
cd "$saved"
export LD_LIBRARY_PATH="$dir:$LD_LIBRARY_PATH"
if [ -n "$asan" ]; then
    # Leaks are the programs' business; the runtime must come first, but not in cargo and rustc themselves.
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
    if [ "$1" = cargo ]; then
        export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="env LD_PRELOAD=$asan"
    else
        export LD_PRELOAD="$asan${LD_PRELOAD:+:$LD_PRELOAD}"
    fi
fi
exec "$@"
