#!/usr/bin/env bash
# Crash safety, proven: trains `tiny` while killing the process with SIGKILL at random moments, resuming each
# time from the last checkpoint, and checks that the final weights and optimizer state are bit-identical to an
# uninterrupted run. Usage: scripts/kill-test.sh [train_llama binary] [work folder] [kills]
set -euo pipefail

bin="${1:-target/release/examples/train_llama}"
work="${2:-target/kill-test}"
kills_wanted="${3:-5}"
rm -rf "$work"
mkdir -p "$work"
args=(--config tiny --steps 300 --save-every 7 --eval-every 100000 --sample-tokens 0 --seed 7
      --final-eval-batches 1)

"$bin" "${args[@]}" --out "$work/straight" >"$work/straight.log" 2>&1

kills=0
runs=0
while :; do
  runs=$((runs + 1))
  resume=()
  [ -f "$work/killed/checkpoints/latest" ] && resume=(--resume)
  "$bin" "${args[@]}" --out "$work/killed" "${resume[@]}" >>"$work/killed.log" 2>&1 &
  pid=$!
  if [ "$kills" -lt "$kills_wanted" ]; then
    sleep "0.$(( (RANDOM % 8) + 2 ))"
    if kill -9 "$pid" 2>/dev/null; then
      kills=$((kills + 1))
      wait "$pid" 2>/dev/null || true
      continue
    fi
  fi
  wait "$pid"
  break
done

for f in model.safetensors optimizer.safetensors; do
  a="$work/straight/checkpoints/$(cat "$work/straight/checkpoints/latest")/$f"
  b="$work/killed/checkpoints/$(cat "$work/killed/checkpoints/latest")/$f"
  cmp "$a" "$b" || { echo "kill test: $f differs after $kills kills"; exit 1; }
done
echo "kill test: $kills SIGKILLs over $runs runs; final weights and optimizer state bit-identical"
