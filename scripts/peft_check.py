#!/usr/bin/env python3
"""Checks an adapter folder against PEFT: transformers loads the GGUF base (dequantized to f32), PEFT adds the
adapters (`PeftModel.from_pretrained`), and the logits must match those our `forward` example wrote with the
same adapters.

  cargo run --release --example forward -- --model BASE.gguf --adapter DIR --input ids.json --out ours.safetensors
  python scripts/peft_check.py BASE.gguf DIR ids.json ours.safetensors

Needs torch, transformers, peft and safetensors (any recent PyPI release). Prints the largest difference
relative to the largest |logit|, and how much the adapters move PEFT's logits (so a zero adapter cannot pass
unnoticed); exits 1 when the difference is above 1e-4.
"""
import json
import os
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def main():
    gguf, adapter, ids_path, ours_path = sys.argv[1:5]
    folder, name = os.path.split(os.path.abspath(gguf))
    base = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    ids = torch.tensor(json.load(open(ids_path)))
    with torch.no_grad():
        plain = base(ids).logits.clone()
        adapted = PeftModel.from_pretrained(base, adapter)(ids).logits
    ours = load_file(ours_path)["logits"]
    scale = adapted.abs().max().item()
    moved = (adapted - plain).abs().max().item() / scale
    err = (ours - adapted).abs().max().item() / scale
    print(f"adapters move PEFT's logits by {moved:.3e}; ours differ from PEFT's by {err:.3e} (relative)")
    sys.exit(0 if err <= 1e-4 else 1)


if __name__ == "__main__":
    main()
