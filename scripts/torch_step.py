"""PyTorch's training step on the CPU, for side-by-side figures (scripts/cpu-pairs.sh): Hugging Face
LlamaForCausalLM (SDPA attention, untied head) with AdamW and gradient clipping, at the shapes of the `small` and
`medium` presets of examples/train_llama.rs. Prints one line: the median step's tokens/s and the peak RSS.
usage: python torch_step.py small|medium [--bf16] [--steps N]   (--bf16: CPU autocast, f32 master weights)"""
import argparse
import resource
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

# name: (vocab, dim, layers, heads, ffn hidden, sequence, batch)
PRESETS = {"small": (4096, 256, 4, 8, 768, 256, 16), "medium": (8192, 512, 8, 8, 1536, 512, 8)}

ap = argparse.ArgumentParser()
ap.add_argument("config", choices=PRESETS)
ap.add_argument("--bf16", action="store_true")
ap.add_argument("--steps", type=int, default=10)
a = ap.parse_args()
vocab, dim, layers, heads, hidden, seq, batch = PRESETS[a.config]
torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(
    vocab_size=vocab, hidden_size=dim, intermediate_size=hidden, num_hidden_layers=layers,
    num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=seq, rms_norm_eps=1e-6,
    tie_word_embeddings=False, attn_implementation="sdpa"))
model.train()
opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
ids = torch.randint(0, vocab, (batch, seq))
times = []
for step in range(a.steps + 1):
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if step > 0:  # the first step warms up
        times.append(time.perf_counter() - t0)
med = statistics.median(times)
print(f"torch {a.config} bf16={a.bf16} threads={torch.get_num_threads()} tokens_per_s={batch * seq / med:.0f} "
      f"peak_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
