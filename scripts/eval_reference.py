#!/usr/bin/env python3
"""The reference for `examples/eval.rs`: EleutherAI's lm-evaluation-harness itself (its task definitions, its
HFLM model wrapper and its metrics) scoring a GGUF model that transformers dequantizes to f32, on the same data
files `scripts/fetch-evals.sh` makes (the harness's task configs pointed at the local JSON lines instead of the
Hugging Face Hub). Prints and writes {task: {n, acc, acc_stderr, acc_norm, acc_norm_stderr}} as our `--out` does.

Needs Python with torch, transformers, gguf and lm-eval (pip install lm-eval); nothing is downloaded but the
packages. Example:

    python scripts/eval_reference.py --gguf target/models/SmolLM2-135M-Instruct.Q4_1.gguf \
        --data target/evals --tasks hellaswag,piqa,winogrande --limit 200 --out target/eval-reference.json
"""
import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Our task name -> (the harness's task, our data file, the split it holds, a row converter or None).
TASKS = {
    "hellaswag": ("hellaswag", "hf/hellaswag/none/validation.jsonl", "validation", None),
    "piqa": ("piqa", "hf/piqa/plain_text/validation.jsonl", "validation", None),
    "winogrande": ("winogrande", "hf/winogrande/winogrande_xl/validation.jsonl", "validation", None),
    "siqa": ("social_iqa", "hf/social_i_qa/none/validation.jsonl", "validation", None),
    # google/boolq's `answer` (true/false) is super_glue's `label` (1/0).
    "boolq": ("boolq", "hf/boolq/none/validation.jsonl", "validation",
              lambda r: {**r, "label": int(r["answer"])}),
}


def local_task(name, data, limit_rows):
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    harness_name, rel, split, convert = TASKS[name]
    path = os.path.join(data, rel)
    if convert is not None:
        rows = [convert(json.loads(line)) for line in open(path, encoding="utf-8") if line.strip()]
        tmp = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8")
        for row in rows[:limit_rows]:
            tmp.write(json.dumps(row) + "\n")
        tmp.close()
        path = tmp.name
    cfg = load_yaml(TaskManager().task_index[harness_name].yaml_path)
    cfg.update({"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": {split: path}},
                "training_split": None, "fewshot_split": None, "validation_split": None, "test_split": None})
    cfg[split + "_split"] = split
    cfg["task"] = name
    return ConfigurableTask(config=cfg)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--data", default="target/evals")
    ap.add_argument("--tasks", default="hellaswag,piqa,winogrande")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM

    torch.set_num_threads(args.threads)
    folder, name = os.path.split(os.path.abspath(args.gguf))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8)
    tasks = {t: local_task(t, args.data, args.limit) for t in args.tasks.split(",")}
    results = evaluate(lm, tasks, limit=args.limit, bootstrap_iters=100)["results"]
    out = {}
    for t in tasks:
        r = results[t]
        out[t] = {"n": args.limit, "acc": r["acc,none"], "acc_stderr": r.get("acc_stderr,none")}
        if "acc_norm,none" in r:
            out[t]["acc_norm"] = r["acc_norm,none"]
            out[t]["acc_norm_stderr"] = r.get("acc_norm_stderr,none")
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
