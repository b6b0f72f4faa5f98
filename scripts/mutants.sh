#!/usr/bin/env bash
# Mutation testing with cargo-mutants (crates.io; `cargo install cargo-mutants --locked`): each mutant of the
# chosen files (a function body replaced by a default value, an operator swapped, a condition negated) is built
# and the tests that cover those files are run against it; a mutant the tests pass is "missed". Too slow for CI
# (about 10 s a mutant on two cores); docs/reliability.md records the figures.
#
#   scripts/mutants.sh [OUT_DIR] [FILE_GLOB ...]       defaults: target/mutants and the modules below
#   MUTANTS_ARGS="--iterate" scripts/mutants.sh ...    extra cargo-mutants flags (--iterate re-tests only the
#                                                      mutants missed last time, reading OUT_DIR)
#   MUTANTS_TESTS="--lib --test errors" ...            the test targets to run (default: those below)
#   MUTANTS_TIMEOUT=600 scripts/mutants.sh ...        seconds before a mutant's test run counts as a timeout
#                                                      (a mutant that loops forever); default 120, 600 on the GPU
#   MUTANTS_GPU=1 scripts/mutants.sh ...               the `cuda` build on the emulated GPU (scripts/emulated-gpu.sh)
#                                                      with the GPU suites: code behind `cuda-backend` is compiled
#                                                      out of the default build, so its mutants live there
#
# The tests run in the test profile (debug assertions on) without debug info, which keeps each mutant's
# incremental build short. The long memory test and the op, kernel and GPU suites are left out: they do not
# reach these modules.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/mutants}
shift || true
files=("$@")
if [ ${#files[@]} -eq 0 ]; then
  files=('src/data/**/*.rs' 'src/optim/*.rs' 'src/llama/generate.rs' 'src/llama/kv_cache.rs' 'src/llama/eval.rs'
    'src/llama/checkpoint.rs' 'src/dist/*.rs')
fi
command -v cargo-mutants >/dev/null || { echo "cargo-mutants is not installed: cargo install cargo-mutants --locked"; exit 1; }
file_args=()
for f in "${files[@]}"; do file_args+=(--file "$f"); done
mkdir -p "$out"
export CARGO_PROFILE_TEST_DEBUG=0
# cargo-mutants builds a copy of the sources without target/: the tests find the fetched models and tokenizers
# through these.
export TAPEGRAD_MODELS="$PWD/target/models"
export TAPEGRAD_TOKENIZERS="$PWD/target/tokenizers"
run=(cargo mutants)
timeout=${MUTANTS_TIMEOUT:-120}
tests="--lib --test llama --test parallel --test errors --test finetune_eval --test fuzz_readers --test parity
  --test smollm2"
if [ -n "${MUTANTS_GPU:-}" ]; then
  export TAPEGRAD_REQUIRE_GPU=1
  run=(scripts/emulated-gpu.sh cargo mutants --features cuda)
  tests="--lib --test cuda_ops --test cuda_fused --test cuda_nccl"
  timeout=${MUTANTS_TIMEOUT:-600}
fi
# The test targets go to every cargo call (-C), so each mutant builds only them, not every test and example.
target_args=()
# shellcheck disable=SC2086
for t in $(echo ${MUTANTS_TESTS:-$tests} | sed 's/--test /--test=/g'); do target_args+=(-C "$t"); done
# shellcheck disable=SC2086
"${run[@]}" --output "$out" "${file_args[@]}" --exclude '**/tests.rs' --timeout "$timeout" --build-timeout 900 \
  "${target_args[@]}" ${MUTANTS_ARGS:-}
echo
echo "per file: caught / missed / unviable / timeout"
for kind in caught missed unviable timeout; do
  [ -f "$out/mutants.out/$kind.txt" ] || continue
  cut -d: -f1 "$out/mutants.out/$kind.txt" | sort | uniq -c | sed "s/^/$kind /"
done
