#!/usr/bin/env bash
# Runs from the folder scripts/gpu-bundle.sh makes, on a GPU machine with the CUDA toolkit (or PyTorch's CUDA
# wheels) and no Rust: the GPU tests (a missing GPU fails them here), 50 steps of train_llama --device cuda on
# `small` and on `gpu-125m`, a 1-rank NCCL run against the single-process one, the GPU benches and PyTorch's
# SDPA on the same shapes; then one summary table.
# Budget: about 8 minutes on an H100.
set -uo pipefail
cd "$(dirname "$0")"
log=gpu-check.log
: > "$log"

# CUDA libraries (driver, NVRTC, cuBLAS) and the headers NVRTC includes.
paths=(/usr/local/cuda/lib64)
torch_nvidia=$(python3 -c 'import nvidia, os; print(nvidia.__path__[0])' 2>/dev/null || true)
[ -n "$torch_nvidia" ] && paths+=("$torch_nvidia"/*/lib)
for p in "${paths[@]}"; do [ -d "$p" ] && LD_LIBRARY_PATH="$p${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; done
export LD_LIBRARY_PATH
for inc in /usr/local/cuda/include "$torch_nvidia"/cu13/include "$torch_nvidia"/cuda_runtime/include; do
    if [ -f "$inc/cuda_bf16.h" ]; then export TAPEGRAD_CUDA_INCLUDE="$inc"; break; fi
done
export TAPEGRAD_REQUIRE_GPU=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$log"

summary=()
row() { summary+=("$(printf '| %s | %s | %s |' "$1" "$2" "$3")"); }

# 1. Tests, one line each.
for t in tests/*; do
    name=$(basename "$t")
    timeout 300 "$t" --test-threads=1 > "work-$name.txt" 2>&1
    cat "work-$name.txt" >> "$log"
    while read -r _ test _ result; do
        row "test $name::$test" "$result" ""
    done < <(grep -E '^test .* \.\.\. ' "work-$name.txt")
done

# 2. Training: 50 steps of each config.
for config in small gpu-125m; do
    mkdir -p "work/$config/cache"
    cp cache-"$config"/* "work/$config/cache/" 2>/dev/null
    timeout 300 ./train_llama --device cuda --config "$config" --steps 50 --warmup 5 \
        --data data/shakespeare.txt --data data/austen.txt --out "work/$config" \
        --eval-every 1000 --save-every 1000 --eval-batches 2 --final-eval-batches 2 --sample-tokens 0 \
        > "work-train-$config.txt" 2>&1
    status=$?
    cat "work-train-$config.txt" >> "$log"
    tps=$(grep -o 'trained .* tokens/s' "work-train-$config.txt" | grep -o '[0-9]* tokens/s' || true)
    mfu=$(grep -o 'MFU on .*' "work-train-$config.txt" || true)
    row "train_llama --device cuda --config $config (50 steps)" "exit $status" "$tps; $mfu"
done

# 2b. One NCCL rank against the single-process run: the same 20 steps of `small`, the same losses.
for comm in single nccl; do
    mkdir -p "work/nccl-$comm/cache"
    cp cache-small/* "work/nccl-$comm/cache/" 2>/dev/null
    timeout 120 ./train_llama --device cuda --config small --steps 20 --warmup 5 --comm "$comm" \
        --data data/shakespeare.txt --data data/austen.txt --out "work/nccl-$comm" \
        --eval-every 1000 --save-every 1000 --eval-batches 1 --final-eval-batches 1 --sample-tokens 0 \
        > "work-nccl-$comm.txt" 2>&1
    cat "work-nccl-$comm.txt" >> "$log"
done
nccl=$(python3 - <<'PY'
import json
def losses(p):
    try:
        return [json.loads(l)["loss"] for l in open(p) if '"loss"' in l]
    except OSError:
        return []
a, b = losses("work/nccl-single/metrics.jsonl"), losses("work/nccl-nccl/metrics.jsonl")
if len(a) == len(b) == 20:
    print(f"largest relative loss difference {max(abs(x - y) / abs(x) for x, y in zip(a, b)):.2e} over 20 steps")
else:
    print(f"runs incomplete: {len(a)} and {len(b)} steps")
PY
)
row "train_llama --comm nccl (1 rank) vs single, small, 20 steps" "done" "$nccl"

# 3. Benches: ours, then PyTorch's SDPA on the same shapes.
timeout 300 ./gpu --bench >> "$log" 2>&1
python3 - >> "$log" <<'PY'
import glob, json, os
work = json.load(open("target/gpu-bench-work.json")) if os.path.exists("target/gpu-bench-work.json") else {}
out = {}
for path in glob.glob("target/criterion/gpu/**/new/estimates.json", recursive=True):
    bench = json.load(open(os.path.join(os.path.dirname(path), "benchmark.json")))
    seconds = json.load(open(path))["median"]["point_estimate"] / 1e9
    w = work.get(bench["full_id"], {"flops": 0, "bytes": 0})
    out[bench["full_id"][4:]] = {"seconds": seconds, "tflops": w["flops"] / seconds / 1e12,
                                 "gbps": w["bytes"] / seconds / 1e9}
json.dump(out, open("work-bench.json", "w"))
PY
timeout 180 python3 sdpa_bench.py > work-sdpa.jsonl 2>> "$log"
while IFS=$'\t' read -r name value note; do row "$name" "$value" "$note"; done < <(python3 - <<'PY'
import json, os
ours = json.load(open("work-bench.json")) if os.path.exists("work-bench.json") else {}
sdpa = {}
if os.path.exists("work-sdpa.jsonl"):
    for line in open("work-sdpa.jsonl"):
        r = json.loads(line)
        sdpa[r["name"]] = r
copies = {k.split("/")[1]: v["gbps"] for k, v in ours.items() if k.startswith("copy/")}
for name in sorted(ours):
    r = ours[name]
    if name.startswith("attention"):
        peer = sdpa.get(name)
        note = f"SDPA {peer['tflops']:.1f} TFLOP/s, ratio {r['tflops'] / peer['tflops']:.2f}" if peer else "no SDPA figure"
        print(f"bench {name}\t{r['tflops']:.1f} TFLOP/s ({r['seconds'] * 1e3:.3f} ms)\t{note}")
    elif name.startswith(("linear/", "quant_linear/")):
        dense = ours.get("linear/bf16/" + name.split("/")[-1])
        note = f"{r['seconds'] / dense['seconds']:.2f}x the dense bf16 product's time" if dense else ""
        print(f"bench {name}\t{r['tflops']:.1f} TFLOP/s ({r['seconds'] * 1e3:.3f} ms)\t{note}")
    else:
        dtype = name.split("/")[1]
        copy = copies.get(dtype)
        note = f"{100 * r['gbps'] / copy:.0f}% of the copy's {copy:.0f} GB/s" if copy else ""
        print(f"bench {name}\t{r['gbps']:.0f} GB/s ({r['seconds'] * 1e3:.3f} ms)\t{note}")
PY
)

echo
echo "| what | result | figures |"
echo "|---|---|---|"
printf '%s\n' "${summary[@]}"
