#!/usr/bin/env python3
"""Token ids from Hugging Face's `tokenizers` library for the parity test tests/tokenizer_hf.rs: for each
tokenizer folder under target/tokenizers (llama-2 and llama-3 from scripts/fetch-tokenizers.sh; ours, written
there by the test itself: run `cargo test --release --test tokenizer_hf` first), the ids of a set of hard texts
and a count and FNV-1a hash of the ids of each bundled corpus, plus encode speed. Writes
tests/fixtures/tokenizers/expected.json.

    python scripts/tokenizer_reference.py     # any python with `tokenizers` (../shared/tools/anchors.sh torch)
"""
import json
import os
import sys
import time

import tokenizers

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FOLDERS = ["llama-2", "llama-3", "ours"]
CORPORA = ["data/austen.txt", "data/shakespeare.txt"]
TEXTS = {
    "plain": "The quick brown fox jumps over the lazy dog.",
    "leading space": " hello world",
    "digits": "12345 1,234.56 3.14159 007 2024-12-06 x1y22z333",
    "emoji": "\U0001f999\U0001f525\U0001f44d\U0001f3fd family \U0001f468\u200d\U0001f469\u200d\U0001f467!",
    "combining marks": "e\u0301 cafe\u0301 n\u0303o\u0308 A\u030a",
    "cjk": "\u6f22\u5b57\u304b\u306a\u30ab\u30ca\ud55c\uad6d\uc5b4 \u4e2d\u6587\u6d4b\u8bd5",
    "indic and arabic": "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e \u0645\u0631\u062d\u0628\u0627",
    "spaces and newlines": "a  b   c\n\n\nd\t\te \n \n  f\r\n\r\ng   \n",
    "only whitespace": "   \n\t ",
    "contractions": "I'm you'RE he'll We'VE it's O'Neil 'tis",
    "punctuation": "x=1;y=2 -- (a+b)*c!? ...'\"quoted\"' <html> {json: [1, 2]}",
    "special tokens in text": "<s>hello</s> world<|begin_of_text|>hi<|eot_id|> <unk>",
    "unicode whitespace": "a\u00a0b\u3000c\u2028d\u2003e",
    "long word": "a" * 300 + " " + "xyz" * 50,
    "empty": "",
    "mixed": "Mr. Darcy's 10,000 a year\u2014\u201cindeed!\u201d said she, 'tis \u00e9t\u00e9 na\u00efve.",
}


def fnv1a64(ids):
    h = 0xCBF29CE484222325
    for i in ids:
        for b in int(i).to_bytes(4, "little"):
            h ^= b
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    out = {"generated_by": f"tokenizers {tokenizers.__version__}", "texts": TEXTS, "tokenizers": {}}
    for name in FOLDERS:
        folder = os.path.join(ROOT, "target", "tokenizers", name)
        path = os.path.join(folder, "tokenizer.json")
        if not os.path.isfile(path):
            sys.exit(f"{path} is missing (scripts/fetch-tokenizers.sh, and the test for ours)")
        with open(path, "rb") as f:
            file_hash = fnv1a64_bytes(f.read())
        tok = tokenizers.Tokenizer.from_file(path)
        entry = {"file_fnv1a64": f"{file_hash:016x}", "texts": {}, "corpora": {}}
        for key, text in TEXTS.items():
            entry["texts"][key] = tok.encode(text, add_special_tokens=False).ids
        if name == "ours":
            # transformers reads the folder as a checkpoint: the same ids.
            import transformers

            auto = transformers.AutoTokenizer.from_pretrained(folder)
            for key, text in TEXTS.items():
                assert auto.encode(text, add_special_tokens=False) == entry["texts"][key], key
            print(f"AutoTokenizer ({type(auto).__name__}) on ours: the same ids", file=sys.stderr)
        for corpus in CORPORA:
            with open(os.path.join(ROOT, corpus), encoding="utf-8") as f:
                text = f.read()
            times = []
            for _ in range(3):
                start = time.perf_counter()
                ids = tok.encode(text, add_special_tokens=False).ids
                times.append(time.perf_counter() - start)
            entry["corpora"][corpus] = {"n": len(ids), "fnv1a64": f"{fnv1a64(ids):016x}"}
            mb = len(text.encode()) / 1e6
            print(f"{name} {corpus}: {len(ids)} ids: first {mb / times[0]:.2f} MB/s, best of 3 {mb / min(times):.2f} MB/s",
                  file=sys.stderr)
        out["tokenizers"][name] = entry
    dest = os.path.join(ROOT, "tests", "fixtures", "tokenizers")
    os.makedirs(dest, exist_ok=True)
    with open(os.path.join(dest, "expected.json"), "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")


def fnv1a64_bytes(data):
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


if __name__ == "__main__":
    main()
