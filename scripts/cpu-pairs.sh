#!/usr/bin/env bash
# Our training step against PyTorch's on this CPU, in alternating pairs (one of ours, one of PyTorch's, N times):
#   scripts/cpu-pairs.sh PYTHON CONFIG PAIRS [f32|bf16] [native|avx2]
# PYTHON has torch and transformers. CONFIG: small or medium. bf16: our --precision bf16 against PyTorch's CPU
# autocast. avx2: both sides kept to AVX2 + FMA (TAPEGRAD_SIMD for ours; ATen, oneDNN and MKL for PyTorch's).
# Prints a line per run: tokens/s of the median step (ours: steps 2 to the last) and peak RSS in MB.
set -euo pipefail
py=$1; config=$2; pairs=$3; precision=${4:-f32}; isa=${5:-native}
cd "$(dirname "$0")/.."
cargo build --release --example train_llama -q
steps=12; [ "$config" = medium ] && steps=8
flag=""; [ "$precision" = bf16 ] && flag=--bf16
envs=()
if [ "$isa" = avx2 ]; then
  envs=(TAPEGRAD_SIMD=avx2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2)
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for i in $(seq "$pairs"); do
  if ! env ${envs[@]+"${envs[@]}"} /usr/bin/time -f '%M' -o "$out/rss" target/release/examples/train_llama \
    --config "$config" --steps "$steps" --precision "$precision" --eval-every 1000 --eval-batches 1 \
    --final-eval-batches 1 --sample-tokens 0 --save-every 100000 --out "$out/run" > "$out/log" 2>&1; then
    echo "our run failed:" >&2; tail -5 "$out/log" >&2; exit 1
  fi
  tps=$(python3 -c 'import json,statistics,sys
rows=[json.loads(l) for l in open(sys.argv[1])]
print(round(statistics.median(r["tokens_per_s"] for r in rows if "tokens_per_s" in r and r["step"] >= 2)))' "$out/run/metrics.jsonl")
  echo "ours $config $precision $isa pair $i tokens_per_s=$tps peak_rss_mb=$(( $(cat "$out/rss") / 1024 ))"
  rm -rf "$out/run"
  torch=$(env ${envs[@]+"${envs[@]}"} "$py" scripts/torch_step.py "$config" $flag) || { echo "PyTorch's run failed" >&2; exit 1; }
  echo "$torch $isa pair $i"
done
