"""PyTorch's scaled_dot_product_attention (flash backend), causal, bf16, on the shapes of benches/gpu.rs:
head dims 64 and 128, T = 512 ... 8192 at 16k tokens per batch and model width 2048. Prints one JSON object per
line: {"name": "attention_fwd/d64/T512", "seconds": median, "tflops": ...} with FLOPs as in the FlashAttention-2
paper (forward 4 T^2 D H B / 2 for causal, backward 2.5x forward)."""
import json
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def median_seconds(fn, reps=10):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    return times[len(times) // 2]


def main():
    for d in (64, 128):
        heads = 2048 // d
        for t in (512, 1024, 2048, 4096, 8192):
            b = 16384 // t
            q, k, v = (torch.randn(b, heads, t, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                       for _ in range(3))
            flops = 4 * t * t * d * heads * b / 2
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                grad = torch.ones_like(out)
                fwd = median_seconds(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))

                def fwd_bwd():
                    o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                    o.backward(grad)

                both = median_seconds(fwd_bwd)
            for name, seconds, work in (("fwd", fwd, flops), ("fwd_bwd", both, 3.5 * flops),
                                        ("bwd", both - fwd, 2.5 * flops)):
                print(json.dumps({"name": f"attention_{name}/d{d}/T{t}", "seconds": seconds,
                                  "tflops": work / seconds / 1e12}), flush=True)


if __name__ == "__main__":
    main()
