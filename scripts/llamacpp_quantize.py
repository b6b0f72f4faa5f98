#!/usr/bin/env python3
"""Quantizes a GGUF with llama.cpp's own quantizer (`llama_model_quantize`, through the llama-cpp-py-sync
bindings that `anchors.sh llamacpp` installs), to make files in the K-quant mixes practitioners download.

  PYTHON scripts/llamacpp_quantize.py IN.gguf OUT.gguf TYPE      TYPE: q4_k_m, q5_k_m, q6_k, q8_0, q4_0

IN is best an f32 or f16 file (`examples/export --type f32`); a quantized IN is re-quantized. Prints the
types of OUT's tensors, counted.
"""
import collections
import struct
import sys

from llama_cpp_py_sync._cffi_bindings import get_ffi, get_lib

FTYPES = {"q4_0": 2, "q8_0": 7, "q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}
GGML_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 12: "Q4_K",
              13: "Q5_K", 14: "Q6_K", 30: "BF16"}


def tensor_types(path):
    """The ggml type of each tensor of a GGUF (version 3), read from its header."""
    with open(path, "rb") as f:
        data = f.read(1 << 24)
    magic, version, n_tensors, n_kv = struct.unpack_from("<IIQQ", data, 0)
    assert magic == 0x46554747 and version == 3, "not a GGUF v3 file"
    pos = 24

    def string(pos):
        (n,) = struct.unpack_from("<Q", data, pos)
        return data[pos + 8:pos + 8 + n].decode(), pos + 8 + n

    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def value(ty, pos):
        if ty == 8:
            return string(pos)[1]
        if ty == 9:
            inner, n = struct.unpack_from("<IQ", data, pos)
            pos += 12
            for _ in range(n):
                pos = value(inner, pos)
            return pos
        return pos + sizes[ty]

    for _ in range(n_kv):
        _, pos = string(pos)
        (ty,) = struct.unpack_from("<I", data, pos)
        pos = value(ty, pos + 4)
    types = {}
    for _ in range(n_tensors):
        name, pos = string(pos)
        (dims,) = struct.unpack_from("<I", data, pos)
        pos += 4 + 8 * dims
        (ty,) = struct.unpack_from("<I", data, pos)
        types[name] = GGML_TYPES.get(ty, str(ty))
        pos += 12
    return types


def main():
    if len(sys.argv) != 4 or sys.argv[3] not in FTYPES:
        sys.exit(__doc__)
    src, dst, kind = sys.argv[1:]
    ffi, lib = get_ffi(), get_lib()
    lib.llama_backend_init()
    params = ffi.new("llama_model_quantize_params *", lib.llama_model_quantize_default_params())
    params.ftype = FTYPES[kind]
    params.nthread = 2
    params.allow_requantize = True
    if lib.llama_model_quantize(src.encode(), dst.encode(), params) != 0:
        sys.exit(f"llama.cpp could not quantize {src}")
    counts = collections.Counter(tensor_types(dst).values())
    print(" ".join(f"{t}: {n}" for t, n in sorted(counts.items())))


if __name__ == "__main__":
    main()
