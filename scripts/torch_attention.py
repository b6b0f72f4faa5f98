"""PyTorch's causal scaled_dot_product_attention on the CPU, forward + backward, at the shapes of
benches/attention.rs (B 1, H 8, D 32, f32; T = 256, 1024, 4096). Prints one line per T: the median seconds of
one forward + backward (of the sum of the output, as the bench does) over REPS runs after a warm-up.
usage: python torch_attention.py [REPS]"""
import statistics
import sys
import time

import torch
import torch.nn.functional as F

reps = int(sys.argv[1]) if len(sys.argv) > 1 else 10
torch.manual_seed(0)
for t in (256, 1024, 4096):
    q, k, v = (torch.randn(1, 8, t, 32, requires_grad=True) for _ in range(3))

    def step():
        for x in (q, k, v):
            x.grad = None
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()

    step()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(f"torch sdpa T={t} threads={torch.get_num_threads()} fwd_bwd_ms={1e3 * statistics.median(times):.2f}")
