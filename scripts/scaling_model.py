#!/usr/bin/env python3
"""Step-time model for LLaMA training on many GPUs (docs/scaling.md): compute from the model FLOPs and a
single-GPU model-FLOPs utilization (MFU), communication from message sizes and NCCL bus bandwidths, memory
per GPU from the parallel layout. Every input is printed; change them with the flags.

    python3 scripts/scaling_model.py                 # the LLaMA paper's 65B run: 2048 A100-80GB
    python3 scripts/scaling_model.py --mfu 0.40      # another single-GPU efficiency
"""
import argparse

# The presets of src/llama/config.rs (dim, layers, heads, ffn, vocab), the paper's Table 2 shapes.
MODELS = {
    "7b": (4096, 32, 32, 11008, 32000),
    "13b": (5120, 40, 40, 13824, 32000),
    "33b": (6656, 60, 52, 17920, 32000),
    "65b": (8192, 80, 64, 22016, 32000),
}


def params(dim, layers, heads, ffn, vocab):
    per_layer = 4 * dim * dim + 3 * dim * ffn + 2 * dim
    return layers * per_layer + 2 * vocab * dim + dim


def flops_per_token(dim, layers, heads, ffn, vocab, seq):
    """6 N plus causal attention (QK^T and PV, forward and backward, half the square): 6 L s d."""
    return 6 * params(dim, layers, heads, ffn, vocab) + 6 * layers * seq * dim


def step(a, name):
    dim, layers, heads, ffn, vocab = MODELS[name]
    n = params(*MODELS[name])
    tp = a.tp[name] if isinstance(a.tp, dict) else a.tp
    dp = a.gpus // tp
    seqs = a.batch_tokens // a.seq  # sequences per global batch
    seqs_per_group = seqs / dp  # sequences each tensor-parallel group runs per step
    f_seq = flops_per_token(*MODELS[name], a.seq) * a.seq
    compute = seqs_per_group * f_seq / (tp * a.peak * 1e12 * a.mfu)

    # Tensor + sequence parallelism (Korthikanti et al.): per layer and sequence, forward and backward each
    # run 2 all-gathers and 2 reduce-scatters of the s x d bf16 activations over the tp GPUs of a node; the
    # recomputation of selective checkpointing adds none (it recomputes attention inside the layer).
    act = a.seq * dim * 2
    tp_bytes = 0 if tp == 1 else 8 * layers * act * (tp - 1) / tp
    tp_time = seqs_per_group * tp_bytes / (a.nvlink * 1e9)

    # Data parallel with ZeRO-1: a reduce-scatter of the bf16 gradients and an all-gather of the bf16
    # parameters of this GPU's 1/tp of the model, across dp ranks (ring volume (dp-1)/dp each); launched
    # bucket by bucket during backward, so all but the last bucket hides behind it.
    shard = n / tp
    dp_bytes = 2 * shard * 2 * (dp - 1) / dp
    bw = a.ib if dp * tp > a.gpus_per_node else a.nvlink
    dp_time = dp_bytes / (bw * 1e9)
    backward = compute * 2 / 3
    dp_exposed = max(0.0, dp_time - backward) + dp_time * a.last_bucket

    total = compute + (1 - a.tp_overlap) * tp_time + dp_exposed
    tokens_per_gpu = a.batch_tokens / total / a.gpus

    # Memory per GPU: bf16 weights and gradients of the shard, f32 master weights + both moments sharded
    # over dp (ZeRO-1 keeps the optimizer's f32 state sharded), activations with sequence parallelism and
    # selective recomputation: 34 s d / tp bytes per layer and sequence, one sequence at a time.
    weights = shard * 2 + shard * 2 + shard * 12 / dp
    activations = 34 * a.seq * dim / tp * layers
    return {
        "params (B)": n / 1e9,
        "layout": f"TP {tp} x DP {dp}",
        "sequences / TP group / step": seqs_per_group,
        "compute (s)": compute,
        "TP traffic (GB/GPU/step)": seqs_per_group * tp_bytes / 1e9,
        "TP time (s), exposed part": (tp_time, (1 - a.tp_overlap) * tp_time),
        "DP traffic (GB/GPU/step)": dp_bytes / 1e9,
        "DP time (s), exposed part": (dp_time, dp_exposed),
        "step (s)": total,
        "tokens/s/GPU": tokens_per_gpu,
        "memory/GPU (GB): states + activations": (weights / 1e9, activations / 1e9),
        "days for 1.4T tokens": 1.4e12 / (tokens_per_gpu * a.gpus) / 86400,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpus", type=int, default=2048)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--peak", type=float, default=312.0, help="dense bf16 TFLOP/s of one GPU (A100: 312)")
    p.add_argument("--mfu", type=float, default=None,
                   help="model-FLOPs utilization of one GPU (default: what the paper's 380 tokens/s implies)")
    p.add_argument("--nvlink", type=float, default=230.0,
                   help="NCCL bus bandwidth within a node, GB/s (nccl-tests on 8 x A100 SXM4: 230-250)")
    p.add_argument("--ib", type=float, default=180.0,
                   help="NCCL bus bandwidth across nodes, GB/s (8 x HDR 200 Gb/s = 200 GB/s of links per node)")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--batch-tokens", type=int, default=4 * 1024 * 1024)
    p.add_argument("--tp-overlap", type=float, default=0.0, help="fraction of TP traffic hidden (0: none)")
    p.add_argument("--last-bucket", type=float, default=0.05,
                   help="fraction of the DP traffic left after backward (the last bucket)")
    p.add_argument("--models", default="7b,65b")
    a = p.parse_args()
    a.tp = {"7b": 1, "13b": 2, "33b": 4, "65b": 8}
    if a.mfu is None:
        # The paper: 65B at 380 tokens/s/GPU on 2048 A100-80GB. Model FLOPs per second per GPU / peak.
        a.mfu = 380 * flops_per_token(*MODELS["65b"], a.seq) / (a.peak * 1e12)
        print(f"MFU implied by the paper's 380 tokens/s/GPU for 65B (model FLOPs only): {a.mfu:.3f}")
    print({k: v for k, v in vars(a).items() if k != "tp"})
    for name in a.models.split(","):
        print(f"\n{name}:")
        for k, v in step(a, name).items():
            if isinstance(v, tuple):
                v = ", ".join(f"{x:.3g}" for x in v)
            elif isinstance(v, float):
                v = f"{v:.4g}"
            print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
