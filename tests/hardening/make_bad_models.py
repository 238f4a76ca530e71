#!/usr/bin/env python3
"""Tiny Llama checkpoints with the defects of issue 14's sweep, written with the standard library only:

    python3 make_bad_models.py OUT_DIR

OUT_DIR/good               a valid model (1 layer, hidden 8, vocab 16, float32)
OUT_DIR/nan                one NaN in model.layers.0.mlp.down_proj.weight
OUT_DIR/inf                -inf in model.layers.0.self_attn.k_proj.weight (fused q/k/v: the check names the part)
OUT_DIR/huge               3e38 in model.embed_tokens.weight (finite in float32, inf in float16)
OUT_DIR/short_header       the safetensors header length one byte short (every tensor read one byte off)
OUT_DIR/huge_intermediate  config.json hidden_size 65536, intermediate_size 4194304: in the ranges config.json
                           allows, but weights of ~3 TiB (refused before anything is allocated)
"""
import json
import math
import os
import random
import struct
import sys

CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 16, "hidden_size": 8,
          "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
          "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False,
          "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 2}


def tensors(cfg):
    E, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = E // H
    rng = random.Random(7)
    r = lambda n: [rng.gauss(0, 0.2) for _ in range(n)]
    ones = lambda n: [1.0 + x for x in r(n)]
    t = {"model.embed_tokens.weight": ([V, E], r(V * E)), "model.norm.weight": ([E], ones(E)),
         "lm_head.weight": ([V, E], r(V * E))}
    p = "model.layers.0."
    t[p + "input_layernorm.weight"] = ([E], ones(E))
    t[p + "post_attention_layernorm.weight"] = ([E], ones(E))
    t[p + "self_attn.q_proj.weight"] = ([H * D, E], r(H * D * E))
    t[p + "self_attn.k_proj.weight"] = ([KV * D, E], r(KV * D * E))
    t[p + "self_attn.v_proj.weight"] = ([KV * D, E], r(KV * D * E))
    t[p + "self_attn.o_proj.weight"] = ([E, H * D], r(E * H * D))
    t[p + "mlp.gate_proj.weight"] = ([I, E], r(I * E))
    t[p + "mlp.up_proj.weight"] = ([I, E], r(I * E))
    t[p + "mlp.down_proj.weight"] = ([E, I], r(E * I))
    return t


def safetensors_bytes(ts):
    header, data = {}, b""
    for name, (shape, values) in ts.items():
        raw = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def write(out, name, cfg, ts, mutate=None):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    b = safetensors_bytes(ts)
    if mutate:
        b = mutate(b)
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(b)


def with_value(ts, name, index, value):
    ts = {k: (s, list(v)) for k, (s, v) in ts.items()}
    ts[name][1][index] = value
    return ts


def one_byte_short(b):
    (n,) = struct.unpack("<Q", b[:8])
    return struct.pack("<Q", n - 1) + b[8:]


def main(out):
    good = tensors(CONFIG)
    write(out, "good", CONFIG, good)
    write(out, "nan", CONFIG, with_value(good, "model.layers.0.mlp.down_proj.weight", 5, math.nan))
    write(out, "inf", CONFIG, with_value(good, "model.layers.0.self_attn.k_proj.weight", 3, -math.inf))
    write(out, "huge", CONFIG, with_value(good, "model.embed_tokens.weight", 0, 3e38))
    write(out, "short_header", CONFIG, good, one_byte_short)
    write(out, "huge_intermediate", dict(CONFIG, hidden_size=65536, intermediate_size=4194304), good)


if __name__ == "__main__":
    main(sys.argv[1])
