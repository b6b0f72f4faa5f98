#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer; needs the nightly toolchain) of the safetensors, GGUF, token
# shard and tokenizer readers, SECONDS seconds each (default 60). Prints each target's executions, coverage
# and findings; crashing inputs land in fuzz/artifacts/<target>/. The proptest byte-mutation version of the
# same check runs in CI (tests/fuzz_readers.rs).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors gguf shard tokenizer)
command -v cargo-fuzz > /dev/null || cargo install cargo-fuzz --locked
cargo run --quiet --release --bin seeds
for t in "${targets[@]}"; do
    log=target/fuzz-$t.log
    mkdir -p target
    cargo +nightly fuzz run --release "$t" "corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
        > "$log" 2>&1 || { echo "$t: FINDING (see $log and artifacts/$t/)"; tail -30 "$log"; exit 1; }
    done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)
    echo "$t: $done_line; $cov; corpus $(ls "corpus/$t" | wc -l) inputs; no findings"
done
