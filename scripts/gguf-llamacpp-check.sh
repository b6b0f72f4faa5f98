#!/usr/bin/env bash
# Exports models to GGUF with examples/export and checks that llama.cpp (through its Python bindings, e.g.
# the llama-cpp-py-sync package) loads each and continues a prompt greedily with the same text as our
# `generate`. Usage:
#   scripts/gguf-llamacpp-check.sh LLAMACPP_PYTHON LLAMACPP_TOOL MODEL [MODEL...]
# where LLAMACPP_TOOL is a script with `gen GGUF --prompt P -n N -t T` printing `output=...`, and each MODEL is
# anything examples/export reads (a checkpoint folder, a Hugging Face folder, a GGUF file). Prints one line per
# model and type; exits non-zero if any text differs.
set -euo pipefail
py="$1"; tool="$2"; shift 2
prompt="${PROMPT:-The capital of France is}"
n="${TOKENS:-24}"
cargo build --release --example export --example generate >&2
out=$(mktemp -d)
status=0
for model in "$@"; do
  for ty in ${TYPES:-f32 f16 q8_0}; do
    file="$out/$(basename "$model")-$ty.gguf"
    target/release/examples/export --checkpoint "$model" --out "$file" --type "$ty" >&2
    ours=$(target/release/examples/generate --checkpoint "$file" --weights dense --prompt "$prompt" \
      --temperature 0 --max-tokens "$n" 2>/dev/null)
    ours="${ours#"$prompt"}"
    theirs=$("$py" "$tool" gen "$file" --prompt "$prompt" -n "$n" -t 2 2>/dev/null \
      | sed -n 's/^output=//p' | python3 -c 'import ast,sys; print(ast.literal_eval(sys.stdin.read()), end="")')
    if [ "$ours" == "$theirs" ]; then verdict=same; else verdict=DIFFERENT; status=1; fi
    printf '%s %s: %s\n  ours:      %q\n  llama.cpp: %q\n' "$(basename "$model")" "$ty" "$verdict" "$ours" "$theirs"
  done
done
rm -rf "$out"
exit $status
