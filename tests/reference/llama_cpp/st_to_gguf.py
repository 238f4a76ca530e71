#!/usr/bin/python3
"""Convert a Qwen2 Hugging Face safetensors checkpoint (config.json + model.safetensors + tokenizer.json)
into a GGUF v3 file that llama.cpp loads (architecture 'qwen2'). Self-contained: stdlib + numpy (+ torch for BF16).

    /usr/bin/python3 st_to_gguf.py MODEL_DIR OUT.gguf [--type f32|f16|bf16|q8_0|q4_0]

q8_0 / q4_0 write the weights lal's `--dtype int8` / `--dtype int4` compute with, bit for bit: lal's group-wise
format (core/lm/engine/include/lal/lm/quantize.hpp) with groups of 32 along the input dimension is llama.cpp's
block layout. int8: scale = float16(max|w| / 127), q = round(w / scale) in [-127, 127] -> a Q8_0 block {d = scale,
qs = q}. int4: scale = float16(max|w| / 7), q = round(w / scale) in [-7, 7], stored q + 8 -> a Q4_0 block {d = scale,
nibbles q + 8; value (nibble - 8) * d}, with Q4_0's nibble order (element j in the low nibble of byte j, element
j + 16 in its high nibble). Layer weights take the type; token_embd (the tied lm-head) is Q8_0 in both, as lal's
int8 lm-head; norms and biases stay F32.

Tensor names follow llama.cpp (token_embd, blk.N.attn_q, ...); dims are written in GGML order (reversed from
PyTorch); tensor data is aligned to 32 bytes. Tied embeddings -> no output.weight (llama.cpp reuses token_embd).
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import st_io  # noqa: E402  (tests/reference/st_io.py: the safetensors header)

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
ALIGN = 32

# gguf metadata value types
T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32, T_BOOL, T_STRING, T_ARRAY, T_UINT64, T_INT64, \
    T_FLOAT64 = range(13)
# ggml tensor types
GGML_F32, GGML_F16, GGML_Q4_0, GGML_Q8_0, GGML_BF16 = 0, 1, 2, 8, 30
GGML_TYPE = {"f32": GGML_F32, "f16": GGML_F16, "bf16": GGML_BF16, "q8_0": GGML_Q8_0, "q4_0": GGML_Q4_0}
# llama_ftype (general.file_type)
FTYPE = {"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7, "q4_0": 2}
QK = 32  # elements per Q8_0 / Q4_0 block


def quantize_groups(a, bits):
    """lal's quantize_weight (float32 arithmetic, float16 scale, round half to even) on groups of 32 of the rows of
    `a` [out, in]: (q int8 [out, in/32, 32], scale float16 [out, in/32, 1])."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    out, n = a.shape
    assert n % QK == 0, f"input dimension {n} is not a multiple of {QK}"
    qmax = np.float32(127.0 if bits == 8 else 7.0)
    g = a.reshape(out, n // QK, QK)
    scale = np.maximum(np.abs(g).max(axis=-1, keepdims=True) / qmax, np.float32(1e-10)).astype(np.float16)
    q = np.clip(np.round(g / scale.astype(np.float32)), -qmax, qmax).astype(np.int8)
    return q, scale


def dequantized(a, bits):
    """The float32 values lal's int8/int4 weight holds for `a` (q * scale, exact in float32)."""
    q, scale = quantize_groups(a, bits)
    return (q.astype(np.float32) * scale.astype(np.float32)).reshape(a.shape)


def quantize_blocks(a, bits):
    """quantize_groups() written as Q8_0 (bits 8) or Q4_0 (bits 4) blocks. Returns bytes."""
    out, n = a.shape
    q, scale = quantize_groups(a, bits)
    d = scale.reshape(out, n // QK, 1).view(np.uint8).reshape(out, n // QK, 2)
    if bits == 8:
        blocks = np.concatenate([d, q.view(np.uint8)], axis=-1)  # 2 + 32 bytes
    else:
        u = (q + 8).astype(np.uint8)
        nib = u[..., :QK // 2] | (u[..., QK // 2:] << 4)  # element j low, element j + 16 high
        blocks = np.concatenate([d, nib], axis=-1)  # 2 + 16 bytes
    return blocks.tobytes()


def type_bytes(gtype, shape):
    n = int(np.prod(shape))
    if gtype == GGML_F32:
        return 4 * n
    if gtype in (GGML_F16, GGML_BF16):
        return 2 * n
    return n // QK * (34 if gtype == GGML_Q8_0 else 18)
# llama token types
TOK_NORMAL, TOK_UNKNOWN, TOK_CONTROL, TOK_USER_DEFINED, TOK_UNUSED, TOK_BYTE = 1, 2, 3, 4, 5, 6


def s_bytes(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def kv_bytes(key, vtype, value, elem_type=None):
    out = s_bytes(key) + struct.pack("<I", vtype)
    if vtype == T_ARRAY:
        out += struct.pack("<IQ", elem_type, len(value))
        if elem_type == T_STRING:
            out += b"".join(s_bytes(v) for v in value)
        elif elem_type == T_INT32:
            out += np.asarray(value, dtype="<i4").tobytes()
        else:
            raise ValueError(elem_type)
    elif vtype == T_STRING:
        out += s_bytes(value)
    elif vtype == T_UINT32:
        out += struct.pack("<I", value)
    elif vtype == T_FLOAT32:
        out += struct.pack("<f", value)
    elif vtype == T_BOOL:
        out += struct.pack("<?", value)
    else:
        raise ValueError(vtype)
    return out


def read_safetensors(path):
    """name -> (dtype string, shape, memoryview of raw bytes); the file is memory-mapped."""
    with open(path, "rb") as f:
        header, base = st_io.read_header(f)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        out[name] = (e["dtype"], e["shape"], mm[base + b:base + end])
    return out


def to_type(dtype, shape, raw, want):
    """Raw safetensors bytes -> bytes of the wanted ggml type."""
    if dtype == "F32":
        a = raw.view("<f4").reshape(shape)
    elif dtype == "F16":
        a = raw.view("<f2").astype(np.float32).reshape(shape)
    elif dtype == "BF16":
        a = (raw.view("<u2").astype(np.uint32) << 16).view("<f4").reshape(shape)
    else:
        raise ValueError(dtype)
    if want == "f32":
        return np.ascontiguousarray(a, dtype="<f4").tobytes(), GGML_F32
    if want in ("q8_0", "q4_0"):
        return quantize_blocks(a, 8 if want == "q8_0" else 4), GGML_TYPE[want]
    if want == "f16":
        return np.ascontiguousarray(a.astype("<f2")).tobytes(), GGML_F16
    if want == "bf16":
        import torch  # torch's round-to-nearest-even, the same cast LibTorch does for --dtype bfloat16
        t = torch.from_numpy(np.array(a, dtype=np.float32)).to(torch.bfloat16)  # np.array copies: writable
        return t.view(torch.int16).numpy().tobytes(), GGML_BF16
    raise ValueError(want)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("out")
    ap.add_argument("--type", default="f32", choices=["f32", "f16", "bf16", "q8_0", "q4_0"])
    ap.add_argument("--tokenizer", default=None, help="tokenizer.json (default MODEL_DIR/tokenizer.json)")
    a = ap.parse_args()

    cfg = json.load(open(os.path.join(a.model_dir, "config.json")))
    assert cfg["model_type"] == "qwen2", cfg["model_type"]
    E, I, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    H, KV, V = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"]

    # ---- tokenizer: ids 0..V-1, padded like convert_hf_to_gguf.py does ([PADi], UNUSED)
    tok = json.load(open(a.tokenizer or os.path.join(a.model_dir, "tokenizer.json")))
    vocab = dict(tok["model"]["vocab"])
    added = {t["id"]: t for t in tok.get("added_tokens", [])}
    rev = {i: s for s, i in vocab.items()}
    tokens, types = [], []
    for i in range(V):
        if i in added:
            tokens.append(added[i]["content"])
            types.append(TOK_CONTROL if added[i].get("special") else TOK_USER_DEFINED)
        elif i in rev:
            tokens.append(rev[i])
            types.append(TOK_NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(TOK_UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    endoftext = next((t["id"] for t in tok.get("added_tokens", []) if t["content"] == "<|endoftext|>"), 0)

    kvs = [
        kv_bytes("general.architecture", T_STRING, "qwen2"),
        kv_bytes("general.name", T_STRING, os.path.basename(os.path.abspath(a.model_dir))),
        kv_bytes("general.file_type", T_UINT32, FTYPE[a.type]),
        kv_bytes("general.alignment", T_UINT32, ALIGN),
        kv_bytes("qwen2.context_length", T_UINT32, cfg.get("max_position_embeddings", 32768)),
        kv_bytes("qwen2.embedding_length", T_UINT32, E),
        kv_bytes("qwen2.block_count", T_UINT32, L),
        kv_bytes("qwen2.feed_forward_length", T_UINT32, I),
        kv_bytes("qwen2.attention.head_count", T_UINT32, H),
        kv_bytes("qwen2.attention.head_count_kv", T_UINT32, KV),
        kv_bytes("qwen2.rope.freq_base", T_FLOAT32, float(cfg.get("rope_theta", 1000000.0))),
        kv_bytes("qwen2.attention.layer_norm_rms_epsilon", T_FLOAT32, float(cfg.get("rms_norm_eps", 1e-6))),
        kv_bytes("tokenizer.ggml.model", T_STRING, "gpt2"),
        kv_bytes("tokenizer.ggml.pre", T_STRING, "qwen2"),
        kv_bytes("tokenizer.ggml.tokens", T_ARRAY, tokens, T_STRING),
        kv_bytes("tokenizer.ggml.token_type", T_ARRAY, types, T_INT32),
        kv_bytes("tokenizer.ggml.merges", T_ARRAY, merges, T_STRING),
        # Real Qwen2.5 GGUFs use <|endoftext|> for bos/eos/pad and add no BOS. (The random model's config.json says
        # eos=0/bos=1; both benchmarks here never stop at EOS, so this only matters for text chat.)
        kv_bytes("tokenizer.ggml.bos_token_id", T_UINT32, endoftext),
        kv_bytes("tokenizer.ggml.eos_token_id", T_UINT32, endoftext),
        kv_bytes("tokenizer.ggml.padding_token_id", T_UINT32, endoftext),
        kv_bytes("tokenizer.ggml.add_bos_token", T_BOOL, False),
    ]

    # ---- tensors
    st_path = os.path.join(a.model_dir, "model.safetensors")
    idx_path = os.path.join(a.model_dir, "model.safetensors.index.json")
    st = {}
    if os.path.exists(idx_path):
        for fn in sorted(set(json.load(open(idx_path))["weight_map"].values())):
            st.update(read_safetensors(os.path.join(a.model_dir, fn)))
    else:
        st.update(read_safetensors(st_path))

    names = [("token_embd.weight", "model.embed_tokens.weight")]
    for i in range(L):
        p, q = f"model.layers.{i}.", f"blk.{i}."
        names += [(q + "attn_norm.weight", p + "input_layernorm.weight"),
                  (q + "attn_q.weight", p + "self_attn.q_proj.weight"),
                  (q + "attn_q.bias", p + "self_attn.q_proj.bias"),
                  (q + "attn_k.weight", p + "self_attn.k_proj.weight"),
                  (q + "attn_k.bias", p + "self_attn.k_proj.bias"),
                  (q + "attn_v.weight", p + "self_attn.v_proj.weight"),
                  (q + "attn_v.bias", p + "self_attn.v_proj.bias"),
                  (q + "attn_output.weight", p + "self_attn.o_proj.weight"),
                  (q + "ffn_norm.weight", p + "post_attention_layernorm.weight"),
                  (q + "ffn_gate.weight", p + "mlp.gate_proj.weight"),
                  (q + "ffn_up.weight", p + "mlp.up_proj.weight"),
                  (q + "ffn_down.weight", p + "mlp.down_proj.weight")]
    names.append(("output_norm.weight", "model.norm.weight"))
    if not cfg.get("tie_word_embeddings", False):
        names.append(("output.weight", "lm_head.weight"))
    unused = set(st) - {hf for _, hf in names}
    if unused:
        print("warning: not converted:", sorted(unused), file=sys.stderr)

    infos, plan, off = [], [], 0
    for gname, hf in names:
        dtype, shape, raw = st[hf]
        # 1-D tensors (norms, biases) stay F32, as llama.cpp's own converter does; with q4_0 the token embedding /
        # output matrix is q8_0 (lal's int8 lm-head)
        want = a.type if len(shape) == 2 else "f32"
        if want == "q4_0" and gname in ("token_embd.weight", "output.weight"):
            want = "q8_0"
        gtype = GGML_TYPE[want]
        nbytes = type_bytes(gtype, shape)
        dims = list(reversed(shape))  # GGML order: ne[0] is the fastest-varying (PyTorch's last) dimension
        infos.append(s_bytes(gname) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
                     + struct.pack("<IQ", gtype, off))
        plan.append((gname, dtype, shape, raw, want, nbytes, off))
        off += nbytes + (-nbytes) % ALIGN

    header = GGUF_MAGIC + struct.pack("<IQQ", GGUF_VERSION, len(infos), len(kvs)) + b"".join(kvs) + b"".join(infos)
    with open(a.out, "wb") as f:
        f.write(header)
        f.write(b"\0" * ((-len(header)) % ALIGN))
        data_start = f.tell()
        for gname, dtype, shape, raw, want, nbytes, toff in plan:
            assert f.tell() - data_start == toff
            blob, _ = to_type(dtype, shape, raw, want)
            assert len(blob) == nbytes, (gname, len(blob), nbytes)
            f.write(blob)
            f.write(b"\0" * ((-nbytes) % ALIGN))
    print(f"wrote {a.out}: {len(infos)} tensors, {len(kvs)} kv, vocab {V}, type {a.type}, "
          f"{os.path.getsize(a.out) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
