#!/usr/bin/env python3
"""The reference for `examples/eval.rs`: EleutherAI's lm-evaluation-harness itself (its task definitions, its
HFLM model wrapper and its metrics) scoring a GGUF model that transformers dequantizes to f32, on the same data
files `scripts/fetch-evals.sh` makes (the harness's task configs pointed at the local JSON lines instead of the
Hugging Face Hub). Prints and writes {task: {n, acc, acc_stderr, acc_norm, acc_norm_stderr}} as our `--out` does (MMLU: the
subjects' accuracies weighted by size, without a standard error).

Needs Python with torch, transformers, gguf and lm-eval (pip install lm-eval); nothing is downloaded but the
packages. Example:

    python scripts/eval_reference.py --gguf target/models/SmolLM2-135M-Instruct.Q4_1.gguf \
        --data target/evals --tasks hellaswag,piqa,winogrande --limit 200 --out target/eval-reference.json

Tasks: hellaswag, piqa, winogrande, siqa, boolq, arc_easy, arc_challenge, openbookqa, lambada, mmlu (per subject
with --limit, as ours limits it).
"""
import argparse
import gzip
import json
import os
import sys
import tempfile

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

def olmo_docs(path):
    """The documents of an OLMo request file, each once, in order."""
    seen, docs = set(), []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)["doc"]
            if json.dumps(doc["id"]) not in seen:
                seen.add(json.dumps(doc["id"]))
                docs.append(doc)
    return docs


def stem(query):
    assert query.startswith("Question: ") and query.endswith("\nAnswer:"), query
    return query[len("Question: "):-len("\nAnswer:")]


def arc_row(doc):
    labels = [chr(ord("A") + i) for i in range(len(doc["choices"]))]
    return {"id": doc["id"], "question": stem(doc["query"]), "choices": {"text": doc["choices"], "label": labels},
            "answerKey": labels[doc["gold"]]}


def obqa_row(doc):
    row = arc_row(doc)
    row["question_stem"] = row.pop("question")
    return row


# Our task name -> (the harness's task, our data file, the split scored, rows -> the harness's dataset rows).
# OLMo's request files carry ARC's and OpenBookQA's test documents as {query, choices, gold} and LAMBADA's as
# {query, answers_text}; they go back to the Hugging Face columns the harness reads (`check_olmo_documents`
# shows, on the validation splits both sources carry, that nothing else differs).
TASKS = {
    "hellaswag": ("hellaswag", "hf/hellaswag/none/validation.jsonl", "validation", None),
    "piqa": ("piqa", "hf/piqa/plain_text/validation.jsonl", "validation", None),
    "winogrande": ("winogrande", "hf/winogrande/winogrande_xl/validation.jsonl", "validation", None),
    "siqa": ("social_iqa", "hf/social_i_qa/none/validation.jsonl", "validation", None),
    # google/boolq's `answer` (true/false) is super_glue's `label` (1/0).
    "boolq": ("boolq", "hf/boolq/none/validation.jsonl", "validation",
              lambda rows: [{**r, "label": int(r["answer"])} for r in rows]),
    "arc_easy": ("arc_easy", "oe/arc_easy/test_rc_5shot/requests.jsonl.gz", "test",
                 lambda docs: [arc_row(d) for d in docs]),
    "arc_challenge": ("arc_challenge", "oe/arc_challenge/test_rc_5shot/requests.jsonl.gz", "test",
                      lambda docs: [arc_row(d) for d in docs]),
    "openbookqa": ("openbookqa", "oe/openbookqa/test_rc_5shot/requests.jsonl.gz", "test",
                   lambda docs: [obqa_row(d) for d in docs]),
    "lambada": ("lambada_openai", "oe/lambada/bpb_0shot/requests.jsonl.gz", "test",
                lambda docs: [{"text": d["query"] + " " + d["answers_text"][0]} for d in docs]),
}


def check_olmo_documents(data):
    """OLMo's validation documents of ARC and OpenBookQA against the Hugging Face rows of the same split."""
    for task, hf, key in [("arc_easy", "hf/ai2_arc/ARC-Easy/validation.jsonl", "question"),
                          ("arc_challenge", "hf/ai2_arc/ARC-Challenge/validation.jsonl", "question"),
                          ("openbookqa", "hf/openbookqa/main/validation.jsonl", "question_stem")]:
        rows = {r["id"]: r for r in map(json.loads, open(os.path.join(data, hf), encoding="utf-8"))}
        docs = olmo_docs(os.path.join(data, "oe", task, "val_rc_5shot", "requests.jsonl.gz"))
        same = sum(1 for d in docs if d["id"] in rows
                   and d["query"] == "Question: " + rows[d["id"]][key] + "\nAnswer:"
                   and d["choices"] == rows[d["id"]]["choices"]["text"]
                   and rows[d["id"]]["choices"]["label"][d["gold"]] == rows[d["id"]]["answerKey"].strip())
        print(f"{task}: {same} of OLMo's {len(docs)} validation documents are the {len(rows)} Hugging Face rows",
              file=sys.stderr)


def write_rows(rows):
    tmp = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8")
    for row in rows:
        tmp.write(json.dumps(row) + "\n")
    tmp.close()
    return tmp.name


def configured(harness_name, files, split, name, shots=0):
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(TaskManager().task_index[harness_name].yaml_path)
    cfg.update({"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": files},
                "training_split": None, "validation_split": None, "test_split": None})
    cfg[split + "_split"] = split
    if "dev" not in files:
        cfg["fewshot_split"] = None
    cfg["task"] = name
    cfg["num_fewshot"] = shots
    return ConfigurableTask(config=cfg)


def local_tasks(name, data, limit):
    """The harness's task(s) for one of ours over our files (MMLU: one per subject, five-shot from dev)."""
    if name == "mmlu":
        root = os.path.join(data, "hf/hails/mmlu_no_train")
        return {f"mmlu_{s}": configured(f"mmlu_{s}", {"test": os.path.join(root, s, "test.jsonl"),
                                                      "dev": os.path.join(root, s, "dev.jsonl")},
                                        "test", f"mmlu_{s}", shots=5)
                for s in sorted(os.listdir(root))}
    harness_name, rel, split, convert = TASKS[name]
    path = os.path.join(data, rel)
    if convert is not None:
        rows = olmo_docs(path) if rel.endswith(".gz") else [json.loads(x) for x in open(path, encoding="utf-8")]
        path = write_rows(convert(rows)[:limit])
    return {name: configured(harness_name, {split: path}, split, name)}


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
    check_olmo_documents(args.data)
    names = args.tasks.split(",")
    tasks = {}
    for name in names:
        tasks.update(local_tasks(name, args.data, args.limit))
    results = evaluate(lm, tasks, limit=args.limit, bootstrap_iters=100)
    counts = results.get("n-samples", {})
    out = {}
    for name in names:
        parts = [t for t in tasks if t == name or (name == "mmlu" and t.startswith("mmlu_"))]
        n = {t: counts[t]["effective"] for t in parts}
        total = sum(n.values())
        r = {"n": total}
        for metric in ["acc", "acc_norm"]:
            key = metric + ",none"
            if key in results["results"][parts[0]]:
                # MMLU's subjects weighted by size, as the harness's group does.
                r[metric] = sum(results["results"][t][key] * n[t] for t in parts) / total
                if len(parts) == 1:
                    r[metric + "_stderr"] = results["results"][parts[0]].get(metric + "_stderr,none")
        if "perplexity,none" in results["results"][parts[0]]:
            r["perplexity"] = results["results"][parts[0]]["perplexity,none"]
        out[name] = r
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
