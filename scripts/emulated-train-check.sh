#!/usr/bin/env bash
# Trains `tiny` for 20 steps on the CPU and on the emulated GPU (scripts/emulated-gpu.sh), in f32 and in the
# GPU's mixed precision, and compares the losses step by step: within 1e-4 relative at `--precision f32`, within
# 2% with bf16 matrix products and attention. Also checks the GPU pool: no new driver allocation after the
# second step. BIN is a `--features cuda` build of the train_llama example.
#
#   scripts/emulated-train-check.sh target/release/examples/train_llama [OUT_DIR]
set -euo pipefail
bin=${1:?usage: scripts/emulated-train-check.sh TRAIN_LLAMA_BINARY [OUT_DIR]}
out=${2:-target/emulated-train}
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$out"
mkdir -p "$out"
common=(--config tiny --steps 20 --eval-every 10 --eval-batches 1 --final-eval-batches 1 --save-every 20
    --sample-tokens 0)
"$bin" "${common[@]}" --out "$out/cpu" > "$out/cpu.log" 2>&1
for precision in f32 bf16; do
    "$here/emulated-gpu.sh" "$bin" "${common[@]}" --device cuda --precision "$precision" \
        --out "$out/cuda-$precision" > "$out/cuda-$precision.log" 2>&1 || {
        tail -20 "$out/cuda-$precision.log"
        exit 1
    }
done
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
def losses(run):
    rows = [json.loads(line) for line in open(f"{out}/{run}/metrics.jsonl")]
    return [r["loss"] for r in rows if "loss" in r]
cpu = losses("cpu")
print("step  cpu        cuda f32   cuda bf16")
runs = {p: losses(f"cuda-{p}") for p in ("f32", "bf16")}
for i, c in enumerate(cpu):
    print(f"{i + 1:4}  {c:.6f}   {runs['f32'][i]:.6f}   {runs['bf16'][i]:.6f}")
worst = {p: max(abs(g - c) / abs(c) for g, c in zip(runs[p], cpu)) for p in runs}
print(f"largest relative difference from the CPU: f32 {worst['f32']:.2e}, bf16 {worst['bf16']:.2e}")
assert len(runs["f32"]) == len(cpu) == len(runs["bf16"]) == 20, "every run takes 20 steps"
assert worst["f32"] <= 1e-4, "f32 on the GPU must follow the CPU within 1e-4 relative"
assert worst["bf16"] <= 2e-2, "mixed precision must follow the CPU within 2%"
assert runs["bf16"][-1] < runs["bf16"][0], "the GPU run learns"
PY
for precision in f32 bf16; do
    grep -q "from the driver" "$out/cuda-$precision.log" || { echo "no pool report in cuda-$precision.log"; exit 1; }
    grep "from the driver" "$out/cuda-$precision.log"
done
