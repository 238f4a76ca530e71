"""Independent reference forward passes for the lal engine's model families, written from the semantics of the
Hugging Face transformers modeling files (LlamaForCausalLM, Qwen2ForCausalLM, Phi3ForCausalLM,
GPTNeoXForCausalLM), in plain torch, without a KV cache: every call recomputes the whole sequence.

Deliberately written differently from the C++ engine (per-head loops for GQA, explicit mask matrices) so that a
shared mistake is unlikely.
"""
import json
import math
import os

import torch

import st_io


def load_weights(model_dir):
    idx = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        w = {}
        for s in shards:
            w.update(st_io.load(os.path.join(model_dir, s)))
        return w
    return st_io.load(os.path.join(model_dir, "model.safetensors"))


def rope_settings(cfg):
    """The rotary embedding of a config.json in either dialect, resolved as transformers 5 does: the legacy
    `rope_scaling` dict wins over `rope_parameters`; theta and the rotary fraction come from the dict, else from the
    family's top-level keys (gpt_neox: rotary_emb_base / rotary_pct, default 0.25)."""
    mt = cfg["model_type"]
    d = dict(cfg.get("rope_scaling") or cfg.get("rope_parameters") or {})
    if "rope_theta" not in d:
        if mt == "gpt_neox":
            d["rope_theta"] = cfg.get("rotary_emb_base", cfg.get("rope_theta", 10000.0))
        else:
            d["rope_theta"] = cfg.get("rope_theta", 10000.0)
    if "partial_rotary_factor" not in d:
        if mt == "gpt_neox":
            d["partial_rotary_factor"] = cfg.get("rotary_pct", cfg.get("partial_rotary_factor", 0.25))
        else:
            d["partial_rotary_factor"] = cfg.get("partial_rotary_factor", 1.0)
    kind = d.get("rope_type", d.get("type", "default"))
    if mt == "phi3" and kind in ("su", "yarn"):
        kind = "longrope"
    d["rope_type"] = kind
    if kind in ("llama3", "yarn", "longrope"):
        if mt == "phi3":
            d["original_max_position_embeddings"] = cfg.get("original_max_position_embeddings", 4096)
        else:
            d.setdefault("original_max_position_embeddings", cfg.get("max_position_embeddings", 2048))
    return d


def base_inv_freq(theta, dim):
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def inv_freq_for(cfg, dim, seq_len):
    """Inverse frequencies for a forward whose longest position + 1 is `seq_len`, and the cos/sin scale."""
    d = rope_settings(cfg)
    kind, theta = d["rope_type"], d["rope_theta"]
    max_pos = cfg.get("max_position_embeddings", 2048)
    inv = base_inv_freq(theta, dim)
    scale = 1.0
    if kind == "linear":
        inv = inv / d["factor"]
    elif kind == "dynamic":
        if seq_len > max_pos:
            factor = d["factor"]
            # transformers computes this from a tensor length, in float32
            n = torch.tensor(float(seq_len), dtype=torch.float32)
            b = theta * ((factor * n / max_pos) - (factor - 1)) ** (dim / (dim - 2))
            inv = 1.0 / (b ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    elif kind == "llama3":
        factor, lo, hi = d["factor"], d["low_freq_factor"], d["high_freq_factor"]
        old = d["original_max_position_embeddings"]
        out = []
        for f in inv.tolist():
            wavelen = 2 * math.pi / f
            if wavelen < old / hi:
                out.append(f)
            elif wavelen > old / lo:
                out.append(f / factor)
            else:
                smooth = (old / wavelen - lo) / (hi - lo)
                out.append((1 - smooth) * f / factor + smooth * f)
        inv = torch.tensor(out, dtype=torch.float32)
    elif kind in ("yarn", "longrope"):
        # both: the scaling factor defaults to max_position / original, and cos/sin get an attention factor
        old = d["original_max_position_embeddings"]
        factor = d.get("factor") or max_pos / old
        scale = d.get("attention_factor")
    if kind == "yarn":
        if scale is None:
            ms = lambda s, m=1.0: 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0
            if d.get("mscale") and d.get("mscale_all_dim"):
                scale = ms(factor, d["mscale"]) / ms(factor, d["mscale_all_dim"])
            else:
                scale = ms(factor)
        fast, slow = d.get("beta_fast") or 32, d.get("beta_slow") or 1
        corr = lambda rot: (dim * math.log(old / (rot * 2 * math.pi))) / (2 * math.log(theta))
        low, high = corr(fast), corr(slow)
        if d.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001
        pos = theta ** (torch.arange(0, dim, 2).float() / dim)
        ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
        keep = 1 - ramp  # share of the extrapolated (unscaled) frequency
        inv = (1.0 / (factor * pos)) * (1 - keep) + (1.0 / pos) * keep
    elif kind == "longrope":
        if scale is None:
            scale = 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(old))
        ext = torch.tensor(d["long_factor"] if seq_len > old else d["short_factor"], dtype=torch.float32)
        inv = 1.0 / (ext * theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    elif kind not in ("default", "linear", "dynamic", "llama3"):
        raise ValueError(f"reference: rope type {kind} not implemented")
    return inv, scale


def rope(x, pos, inv, rot, scale=1.0):
    # x: [T, H, D]; rotate-half on the first `rot` channels; cos/sin scaled by `scale` (yarn, longrope)
    freqs = pos.float()[:, None] * inv[None, :]
    emb = torch.cat([freqs, freqs], -1)
    cos, sin = (emb.cos() * scale).to(x.dtype)[:, None, :], (emb.sin() * scale).to(x.dtype)[:, None, :]
    xr, xp = x[..., :rot], x[..., rot:]
    h = rot // 2
    rotated = torch.cat([-xr[..., h:], xr[..., :h]], -1)
    return torch.cat([xr * cos + rotated * sin, xp], -1)


def rms_norm(x, w, eps):
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return w * xf.to(x.dtype)


def act(name, x):
    if name in ("silu", "swish"):
        return torch.nn.functional.silu(x)
    if name == "gelu":
        return torch.nn.functional.gelu(x)
    if name == "relu":
        return torch.relu(x)
    return torch.nn.functional.gelu(x, approximate="tanh")


def lin(x, w, b=None):
    return torch.nn.functional.linear(x, w, b)


def attend(q, k, v, dtype):
    # q [T,H,D], k/v [T,KV,D]; causal; head h uses kv head h // (H/KV); softmax in float32
    T, H, D = q.shape
    KV = k.shape[1]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    outs = []
    for h in range(H):
        kh, vh = k[:, h // (H // KV)], v[:, h // (H // KV)]
        s = (q[:, h] @ kh.T).float() * (D ** -0.5)
        s = s.masked_fill(~mask, float("-inf"))
        outs.append(torch.softmax(s, -1).to(dtype) @ vh)
    return torch.stack(outs, 1).reshape(T, H * D)


def forward(cfg, w, ids, dtype=torch.float32):
    """Logits [T, vocab] (float32) for one sequence of token ids."""
    w = {k: v.to(dtype) for k, v in w.items()}
    mt = cfg["model_type"]
    ids = torch.tensor(ids, dtype=torch.long)
    T = len(ids)
    pos = torch.arange(T)
    H = cfg["num_attention_heads"]
    E = cfg["hidden_size"]
    if mt == "gpt_neox":
        KV, D = H, E // H
        rot = int(D * rope_settings(cfg)["partial_rotary_factor"])
        eps = cfg.get("layer_norm_eps", 1e-5)
        inv, scale = inv_freq_for(cfg, rot, T)
        x = w["gpt_neox.embed_in.weight"][ids]
        for i in range(cfg["num_hidden_layers"]):
            p = f"gpt_neox.layers.{i}."
            ln = lambda t, n: torch.nn.functional.layer_norm(t, (E,), w[p + n + ".weight"], w[p + n + ".bias"], eps)
            a_in = ln(x, "input_layernorm")
            qkv = lin(a_in, w[p + "attention.query_key_value.weight"], w.get(p + "attention.query_key_value.bias"))
            qkv = qkv.view(T, H, 3 * D)
            q, k, v = qkv[..., :D], qkv[..., D:2 * D], qkv[..., 2 * D:]
            q, k = rope(q, pos, inv, rot, scale), rope(k, pos, inv, rot, scale)
            a = lin(attend(q, k, v, dtype), w[p + "attention.dense.weight"], w.get(p + "attention.dense.bias"))
            mlp = lambda t: lin(act(cfg.get("hidden_act", "gelu"),
                                    lin(t, w[p + "mlp.dense_h_to_4h.weight"], w[p + "mlp.dense_h_to_4h.bias"])),
                                w[p + "mlp.dense_4h_to_h.weight"], w[p + "mlp.dense_4h_to_h.bias"])
            if cfg.get("use_parallel_residual", True):
                x = mlp(ln(x, "post_attention_layernorm")) + a + x
            else:
                a = a + x
                x = mlp(ln(a, "post_attention_layernorm")) + a
        x = torch.nn.functional.layer_norm(x, (E,), w["gpt_neox.final_layer_norm.weight"],
                                           w["gpt_neox.final_layer_norm.bias"], eps)
        head = w["gpt_neox.embed_in.weight"] if cfg.get("tie_word_embeddings", False) else w["embed_out.weight"]
        return lin(x, head).float()

    KV = cfg.get("num_key_value_heads") or H
    D = cfg.get("head_dim") or E // H
    rot = int(D * rope_settings(cfg)["partial_rotary_factor"]) if mt == "phi3" else D
    eps = cfg.get("rms_norm_eps", 1e-5 if mt == "phi3" else 1e-6)
    inv, scale = inv_freq_for(cfg, rot, T)
    I = cfg["intermediate_size"]
    x = w["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        if mt == "phi3":
            qkv = lin(h, w[p + "self_attn.qkv_proj.weight"])
            q, k, v = qkv[:, :H * D], qkv[:, H * D:(H + KV) * D], qkv[:, (H + KV) * D:]
        else:
            q = lin(h, w[p + "self_attn.q_proj.weight"], w.get(p + "self_attn.q_proj.bias"))
            k = lin(h, w[p + "self_attn.k_proj.weight"], w.get(p + "self_attn.k_proj.bias"))
            v = lin(h, w[p + "self_attn.v_proj.weight"], w.get(p + "self_attn.v_proj.bias"))
        q, k, v = q.view(T, H, D), k.view(T, KV, D), v.view(T, KV, D)
        q, k = rope(q, pos, inv, rot, scale), rope(k, pos, inv, rot, scale)
        x = x + lin(attend(q, k, v, dtype), w[p + "self_attn.o_proj.weight"], w.get(p + "self_attn.o_proj.bias"))
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        a = cfg.get("hidden_act", "silu")
        if mt == "phi3":
            gu = lin(h, w[p + "mlp.gate_up_proj.weight"])
            m = lin(gu[:, I:] * act(a, gu[:, :I]), w[p + "mlp.down_proj.weight"])
        else:
            g = lin(h, w[p + "mlp.gate_proj.weight"], w.get(p + "mlp.gate_proj.bias"))
            u = lin(h, w[p + "mlp.up_proj.weight"], w.get(p + "mlp.up_proj.bias"))
            m = lin(act(a, g) * u, w[p + "mlp.down_proj.weight"], w.get(p + "mlp.down_proj.bias"))
        x = x + m
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", False) else w["lm_head.weight"]
    return lin(x, head).float()


def greedy(cfg, w, ids, n, eos=()):
    """Greedy continuation by full recomputation; stops after emitting an eos id (included)."""
    ids = list(ids)
    out = []
    for _ in range(n):
        nxt = int(forward(cfg, w, ids)[-1].argmax())
        out.append(nxt)
        ids.append(nxt)
        if nxt in eos:
            break
    return out
