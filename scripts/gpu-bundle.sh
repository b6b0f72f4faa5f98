#!/usr/bin/env bash
# Builds, on this machine, everything scripts/gpu-check.sh runs on a GPU machine that has no Rust toolchain:
# the GPU test binaries, the GPU bench, train_llama (all with --features cuda, debug info stripped), the
# corpora with their tokenizer caches for `small` and `gpu-125m`, and the PyTorch comparison script, into
# target/gpu-bundle (at most ~60 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/gpu-bundle
rm -rf "$out"
mkdir -p "$out/tests" "$out/data"

executables() { # cargo args... → the executables cargo built
    cargo "$@" --message-format=json 2>/dev/null |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])'
}

cargo build --release --features cuda --example train_llama --example kernel_gate
tests=()
for f in tests/cuda_*.rs tests/twins.rs; do tests+=(--test "$(basename "$f" .rs)"); done
executables test --release --features cuda --no-run "${tests[@]}" |
    while read -r name path; do cp "$path" "$out/tests/$name"; done
executables bench --features cuda --no-run --bench gpu |
    while read -r name path; do cp "$path" "$out/$name"; done
cp target/release/examples/train_llama "$out/"
cp data/shakespeare.txt data/austen.txt "$out/data/"
cp scripts/gpu-check.sh scripts/sdpa_bench.py "$out/"
for f in "$out"/train_llama "$out"/gpu "$out"/tests/*; do
    strip --strip-debug "$f"
done

# Tokenizers and token shards, so the GPU machine trains at once (built with the CPU binary).
cargo build --release --example train_llama
for config in small gpu-125m; do
    work=target/gpu-bundle-work/$config
    ./target/release/examples/train_llama --config "$config" --steps 1 --batch-size 1 --seq-len 64 \
        --data "$out/data/shakespeare.txt" --data "$out/data/austen.txt" --out "$work" \
        --eval-batches 1 --final-eval-batches 1 --sample-tokens 0 > /dev/null
    mkdir -p "$out/cache-$config"
    cp "$work"/cache/* "$out/cache-$config/"
done
du -sh "$out"
