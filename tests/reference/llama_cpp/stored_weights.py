#!/usr/bin/python3
"""The weights a GGUF of st_to_gguf.py holds, as a float32 safetensors checkpoint lal loads: the "truth" against which
bench_vs_llama.py judges a greedy disagreement (float32 logits of exactly the weights both engines compute with).

    /usr/bin/python3 stored_weights.py MODEL_DIR OUT_DIR --type bf16|q8_0|q4_0

Every 2-D tensor becomes what st_to_gguf.py writes for --type, decoded exactly: bf16 rounded to nearest even; q8_0 /
q4_0 dequantised (q * float16 scale, lal's group-wise int8/int4 with groups of 32; the token embedding / tied lm-head
is q8_0 with q4_0 too, as lal's int8 lm-head). 1-D tensors (norms, biases) stay as they are (F32 in the GGUF).
config.json and tokenizer.json are linked.
"""
import argparse
import json
import os
import sys

import numpy as np

import st_to_gguf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import st_io  # noqa: E402


def stored(a, kind, name):
    if kind == "bf16":
        bits = np.ascontiguousarray(a, dtype="<f4").view("<u4").astype(np.uint64)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16).astype("<u4")  # nearest even (no NaN here)
        return rounded.view("<f4")
    bits = 4 if kind == "q4_0" and "embed_tokens" not in name and name != "lm_head.weight" else 8
    return st_to_gguf.dequantized(a, bits)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--type", required=True, choices=["bf16", "q8_0", "q4_0"])
    a = ap.parse_args()
    idx = os.path.join(a.model_dir, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    st = {}
    for fn in files:
        st.update(st_to_gguf.read_safetensors(os.path.join(a.model_dir, fn)))
    os.makedirs(a.out_dir, exist_ok=True)
    for f in ("config.json", "tokenizer.json"):
        link = os.path.join(a.out_dir, f)
        if os.path.exists(os.path.join(a.model_dir, f)) and not os.path.exists(link):
            os.symlink(os.path.abspath(os.path.join(a.model_dir, f)), link)
    header, off = {}, 0
    for name in sorted(st):
        n = int(np.prod(st[name][1])) * 4
        header[name] = {"dtype": "F32", "shape": st[name][1], "data_offsets": [off, off + n]}
        off += n
    tmp = os.path.join(a.out_dir, "model.safetensors.tmp")
    with open(tmp, "wb") as f:
        f.write(st_io.header_bytes(header))  # tensors streamed after it: 2 GB never held at once
        for name in sorted(st):
            dtype, shape, raw = st[name]
            values = st_to_gguf.to_type(dtype, shape, raw, "f32")[0]  # float32 bytes of the checkpoint tensor
            arr = np.frombuffer(values, dtype="<f4").reshape(shape)
            if len(shape) == 2:
                arr = stored(arr, a.type, name)
            f.write(np.ascontiguousarray(arr, dtype="<f4").tobytes())
    os.replace(tmp, os.path.join(a.out_dir, "model.safetensors"))


if __name__ == "__main__":
    main()
