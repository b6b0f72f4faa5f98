#!/usr/bin/env bash
# Data-parallel training under `mpirun -np 2` (the train_llama binary built with --features mpi):
#  1. 2 ranks with batch B/2 each give the same losses as 1 rank with batch B (<= 1e-5 relative per step over
#     20 steps of `tiny`), with and without ZeRO-1, and the same validation figures;
#  2. a rank killed with SIGKILL stops the job; a restart with --resume finishes with the same weights and
#     optimizer state, bit for bit, as an uninterrupted 2-rank run (ZeRO-1, so the shards are gathered);
#  3. a rank that stalls (SIGSTOP) makes the others stop with a clear error within --comm-timeout.
# Usage: scripts/mpi-test.sh [train_llama binary] [work folder]
set -euo pipefail

bin="${1:-target/release/examples/train_llama}"
work="${2:-target/mpi-test}"
rm -rf "$work"
mkdir -p "$work"
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
mpi=(mpirun -np 2 --oversubscribe -x RAYON_NUM_THREADS=1)
args=(--config tiny --eval-every 10 --sample-tokens 0 --final-eval-batches 2 --seed 7 --bucket-mb 0.05)

compare() { # the losses of two metrics files, per step, and their final validation
  python3 - "$1" "$2" <<'EOF'
import json, sys
def read(path):
    rows = [json.loads(l) for l in open(path)]
    return [r["loss"] for r in rows if "loss" in r], [r["final_val_loss"] for r in rows if "final_val_loss" in r]
(a, fa), (b, fb) = read(sys.argv[1]), read(sys.argv[2])
assert len(a) == len(b) == 20, (len(a), len(b))
gap = max(abs(x - y) / abs(x) for x, y in zip(a + fa, b + fb))
print(f"  {sys.argv[2]}: largest relative difference {gap:.2e} over {len(a)} steps and the final validation")
assert gap <= 1e-5, "the losses differ"
EOF
}

echo "1. one rank with batch 8 against two ranks with batch 4"
"$bin" "${args[@]}" --steps 20 --batch-size 8 --out "$work/one" >"$work/one.log" 2>&1
"${mpi[@]}" "$bin" "${args[@]}" --steps 20 --batch-size 4 --out "$work/two" >"$work/two.log" 2>&1
"${mpi[@]}" "$bin" "${args[@]}" --steps 20 --batch-size 4 --zero1 --out "$work/zero" >"$work/zero.log" 2>&1
compare "$work/one/metrics.jsonl" "$work/two/metrics.jsonl"
compare "$work/one/metrics.jsonl" "$work/zero/metrics.jsonl"

rank_pid() { # the pid of rank $2 among the children of mpirun $1 (from their OMPI_COMM_WORLD_RANK)
  for _ in $(seq 300); do
    for pid in $(pgrep -P "$1" || true); do
      if { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
        echo "$pid"
        return
      fi
    done
    sleep 0.1
  done
  echo "no rank $2 under mpirun $1" >&2
  exit 1
}

wait_for_exit() { # waits for background job $1 at most $2 seconds; prints the seconds taken, fails on success
  local start=$SECONDS
  while kill -0 "$1" 2>/dev/null; do
    if [ $((SECONDS - start)) -gt "$2" ]; then
      echo "the job did not stop within $2 s" >&2
      kill -9 "$1" 2>/dev/null || true
      exit 1
    fi
    sleep 0.2
  done
  if wait "$1"; then
    echo "the job exited successfully although a rank failed" >&2
    exit 1
  fi
  echo $((SECONDS - start))
}

echo "2. SIGKILL one rank of a ZeRO-1 run, resume, compare with an uninterrupted run"
kill_args=("${args[@]}" --steps 60 --save-every 5 --batch-size 4 --zero1)
"${mpi[@]}" "$bin" "${kill_args[@]}" --out "$work/straight" >"$work/straight.log" 2>&1
"${mpi[@]}" "$bin" "${kill_args[@]}" --out "$work/killed" >"$work/killed.log" 2>&1 &
job=$!
victim=$(rank_pid "$job" 1)
for _ in $(seq 600); do
  [ -f "$work/killed/checkpoints/latest" ] && break
  sleep 0.05
done
kill -9 "$victim"
took=$(wait_for_exit "$job" 60)
echo "  rank 1 killed after checkpoint $(cat "$work/killed/checkpoints/latest"); the job stopped after ${took} s"
"${mpi[@]}" "$bin" "${kill_args[@]}" --out "$work/killed" --resume >>"$work/killed.log" 2>&1
for f in model.safetensors optimizer.safetensors; do
  a="$work/straight/checkpoints/$(cat "$work/straight/checkpoints/latest")/$f"
  b="$work/killed/checkpoints/$(cat "$work/killed/checkpoints/latest")/$f"
  cmp "$a" "$b" || { echo "mpi test: $f differs after the resume"; exit 1; }
done
echo "  resumed with 2 ranks: final weights and optimizer state bit-identical"

echo "3. SIGSTOP one rank: the other stops with an error within --comm-timeout 5"
"${mpi[@]}" "$bin" --config tiny --sample-tokens 0 --steps 100000 --eval-every 100000 --save-every 100000 \
  --batch-size 4 --comm-timeout 5 --out "$work/stalled" >"$work/stalled.log" 2>&1 &
job=$!
victim=$(rank_pid "$job" 1)
sleep 1
kill -STOP "$victim"
took=$(wait_for_exit "$job" 60)
grep -q "rank 0 of 2 (mpi): no answer within 5s; another rank has died or stalled" "$work/stalled.log" || {
  echo "mpi test: rank 0 did not report the stalled rank"
  cat "$work/stalled.log"
  exit 1
}
kill -9 "$victim" 2>/dev/null || true
echo "  rank 0 reported the stalled rank and the job stopped after ${took} s"
echo "mpi test: all passed"
