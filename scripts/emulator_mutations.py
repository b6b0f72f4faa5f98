"""The mutations of scripts/emulator-mutations.sh and the loop that applies them (see there)."""
import os
import re
import subprocess
import sys

# (what, file, text, replacement): the text must occur in the file; every occurrence is replaced.
MUTATIONS = [
    (
        "a dropped __syncthreads (attention forward, after the tile loads)",
        "kernels/attention.cu",
        "            cp_async_wait<0>();\n        }\n        __syncthreads();\n\n        float s[kBlockN / 8][4] = {};",
        "            cp_async_wait<0>();\n        }\n\n        float s[kBlockN / 8][4] = {};",
    ),
    (
        "a dropped cp.async wait (attention forward, last key tile)",
        "kernels/attention.cu",
        "        } else {\n            cp_async_wait<0>();\n        }\n        __syncthreads();\n\n        float s[",
        "        } else {\n        }\n        __syncthreads();\n\n        float s[",
    ),
    (
        "ldmatrix without .trans (attention, the transposed B operands)",
        "kernels/attention.cu",
        "    ldmatrix_x4_trans(b, tile",
        "    ldmatrix_x4(b, tile",
    ),
    (
        "the causal mask shifted by one",
        "kernels/attention.cu",
        "    return j <= i + (kv_len - q_len) && j < kv_len && i < q_len;",
        "    return j <= i + 1 + (kv_len - q_len) && j < kv_len && i < q_len;",
    ),
    (
        "the wrong KV head for a query head",
        "kernels/attention.cu",
        "h_kv = h / (heads / kv_heads);",
        "h_kv = h % kv_heads;",
    ),
    (
        "a launcher argument of the wrong width (binary: an i32 where the kernel takes a long long)",
        "src/backend/cuda/binary.rs",
        'Arg::I64(i64_of("binary", n)?),',
        "Arg::I32(n as i32),",
    ),
    (
        "a block size the kernel does not expect (attention forward launched with 64 threads)",
        "src/backend/cuda/attention.rs",
        "                (s.tq.div_ceil(64) as u32, s.heads as u32, s.batch as u32),\n                128,\n                smem,",
        "                (s.tq.div_ceil(64) as u32, s.heads as u32, s.batch as u32),\n                64,\n                smem,",
    ),
    (
        "NCCL: an all-reduce over half the buffer",
        "src/dist/nccl.rs",
        "result::all_reduce(p, p, n, F32, SUM, c, s)",
        "result::all_reduce(p, p, n / 2, F32, SUM, c, s)",
    ),
    (
        "data parallel on GPUs: gradients summed over ranks, not averaged",
        "src/dist/sync.rs",
        "let scale = 1.0 / ranks as f64;",
        "let scale = 1.0;",
    ),
]


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def main(root, out):
    tree = os.path.join(out, "tree")
    os.makedirs(out, exist_ok=True)
    head = subprocess.check_output(["git", "-C", root, "rev-parse", "HEAD"], text=True).strip()
    if not os.path.isdir(tree):
        run(["git", "-C", root, "worktree", "add", "--detach", tree, head], stdout=subprocess.DEVNULL)
    run(["git", "-C", tree, "checkout", "--quiet", "--detach", head])
    env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(out, "target"), TAPEGRAD_REQUIRE_GPU="1")
    rows, survived = [], 0
    for what, path, text, replacement in MUTATIONS:
        run(["git", "-C", tree, "checkout", "--quiet", "--", "."])
        source = open(os.path.join(tree, path)).read()
        if text not in source:
            sys.exit(f"{what}: the text to mutate is not in {path}")
        open(os.path.join(tree, path), "w").write(source.replace(text, replacement))
        log = os.path.join(out, re.sub(r"[^a-z0-9]+", "_", what.lower())[:60] + ".log")
        with open(log, "w") as f:
            result = subprocess.run(
                ["scripts/emulated-gpu.sh", "cargo", "test", "--release", "--features", "cuda",
                 "--test", "cuda_ops", "--test", "cuda_fused", "--test", "cuda_nccl", "--no-fail-fast"],
                cwd=tree, env=env, stdout=f, stderr=subprocess.STDOUT)
        lines = open(log, errors="replace").read().splitlines()
        if result.returncode == 0:
            survived += 1
            rows.append(f"| {what} | **survived** | |")
        else:
            failed = [l.split()[1] for l in lines if l.startswith("test ") and l.endswith("FAILED")]
            first = next((l for l in lines if l.startswith("tgemu: ")), None) or next(
                (lines[i + 1] for i, l in enumerate(lines) if "panicked at" in l and i + 1 < len(lines)), "")
            rows.append(f"| {what} | caught by {', '.join(failed) or 'the build'} | {first[:150].replace('|', '/')} |")
        print(rows[-1], flush=True)
    run(["git", "-C", tree, "checkout", "--quiet", "--", "."])
    print("\n| mutation | result | first failure |\n|---|---|---|")
    print("\n".join(rows))
    sys.exit(1 if survived else 0)


main(sys.argv[1], sys.argv[2])
