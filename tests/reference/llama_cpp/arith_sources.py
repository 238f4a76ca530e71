#!/usr/bin/python3
"""Where lal's and llama.cpp's arithmetic differ, measured on logits: a plain-torch Qwen2 forward over exactly the
weights both engines hold (stored_weights.py's float32 checkpoint), with each of llama.cpp's and lal's rounding steps
switchable, against the float32 forward ("truth") and against llama.cpp's own log-probabilities.

    /usr/bin/python3 arith_sources.py --model STORED_DIR --ids 1,2,3 [--llama LOGPROBS.json] [--variants a,b,...]

STORED_DIR: `stored_weights.py MODEL OUT --type bf16|q8_0|q4_0` (or the float32 checkpoint itself for F32).
--ids: prompt and continuation; logits are compared at every position from --from (default: the last).
--llama: {"position": P, "logprobs": {token: logprob}} from llama_logprobs.mjs (llama.cpp's softmax at the last
position): each variant's logits are compared with them on the tokens there, up to a constant (log-softmax).

--llama may hold several lines (llama_logprobs.mjs --from): each is compared at its position.
A variant is a '+'-joined list of rounding steps (see STEPS), e.g. "x_bf16+kv_f16+q_f16". Prints one JSON line per
variant: max |logit - truth| over the vocabulary at the compared positions, the top-2 gap of the variant and of the
truth, and (with --llama) the largest difference from llama.cpp's relative logits over its 64 most likely tokens.
"""
import argparse
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import reference_lm  # noqa: E402

STEPS = {
    "x_bf16": "every product's input rounded to bfloat16 (llama.cpp BF16 weights: vec_dot_type BF16; lal's kernels)",
    "x_q8": "every product's input rounded to int8 per 32 columns, scale max/127 rounded to half (llama.cpp Q8_0/Q4_0)",
    "x_q8f32": "the same with the scale kept in float32 (lal before 2026-11-30 11:00)",
    "head_f32": "the lm-head's input left float32 (with x_bf16 / x_q8: every other product rounded)",
    "kv_f16": "K and V stored as float16 (llama.cpp's default cache)",
    "kv_bf16": "K and V stored as bfloat16 (lal's cache at --dtype bfloat16)",
    "q_kv": "q rounded to the cache's type for the scores (llama.cpp's flash attention: q to K's vec_dot_type)",
    "p_f16": "attention probabilities rounded to float16 before times V (llama.cpp's flash attention with F16 V)",
    "all_bf16": "every intermediate rounded to bfloat16: residual, norms, rotary, attention, products (LibTorch's "
                "bfloat16 ops: lal's --dtype bfloat16 prefill)",
    "rope_iter": "rotary angles as llama.cpp computes them: theta_i = pos * base^(-2/d) multiplied i times, in float32",
}


def bf16(t):
    return t.to(torch.bfloat16).to(torch.float32)


def f16(t):
    return t.to(torch.float16).to(torch.float32)


def q8(t, half_scale=True):
    shape = t.shape
    b = t.reshape(-1, 32)
    top = b.abs().amax(-1, keepdim=True)
    inverse = torch.where(top > 0, 127.0 / top, torch.zeros_like(top))
    q = torch.round(b * inverse)  # half to even, as _mm256_round_ps(_MM_ROUND_NEAREST)
    d = top / 127.0
    if half_scale:
        d = f16(d)
    return (q * d).reshape(shape)


def forward(cfg, w, ids, steps, nudge=0.0):
    E, H, KV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D, L, eps = E // H, cfg["num_hidden_layers"], cfg["rms_norm_eps"]
    T = len(ids)
    allb = "all_bf16" in steps
    r = bf16 if allb else (lambda t: t)

    def x_in(x, head=False):
        x = x * (1 + nudge) if nudge else x
        if head and "head_f32" in steps:
            return x
        if "x_bf16" in steps or allb:
            return bf16(x)
        if "x_q8" in steps:
            return q8(x)
        if "x_q8f32" in steps:
            return q8(x, half_scale=False)
        return x

    def lin(x, name, bias=True):
        y = (x_in(x, head=not bias).double() @ w[name + ".weight"].double().T).float()
        b = w.get(name + ".bias")
        return r(y + b) if (bias and b is not None) else r(y)

    def norm(x, name):
        xf = x.double()
        y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).float()
        return r(w[name] * r(y))

    theta = cfg.get("rope_theta", 10000.0)
    pos = torch.arange(T, dtype=torch.float32)
    if "rope_iter" in steps:
        scale = torch.tensor(theta, dtype=torch.float32) ** torch.tensor(-2.0 / D, dtype=torch.float32)
        inv = [torch.tensor(1.0, dtype=torch.float32)]
        for _ in range(D // 2 - 1):
            inv.append(inv[-1] * scale)
        ang = torch.stack([pos * v for v in inv], -1)  # float32 products, as llama.cpp's theta *= theta_scale
    else:
        inv = reference_lm.base_inv_freq(theta, D)
        ang = pos[:, None] * inv[None, :]
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)

    def rope(x):  # [T, heads, D], rotate-half
        h = D // 2
        rot = torch.cat([-x[..., h:], x[..., :h]], -1)
        return r(r(x * cos[:, None, :]) + r(rot * sin[:, None, :]))

    kv_round = f16 if "kv_f16" in steps else bf16 if ("kv_bf16" in steps or allb) else (lambda t: t)
    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    x = r(x)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(L):
        p = f"model.layers.{i}."
        a = norm(x, p + "input_layernorm.weight")
        q = rope(lin(a, p + "self_attn.q_proj").view(T, H, D))
        k = kv_round(rope(lin(a, p + "self_attn.k_proj").view(T, KV, D)))
        v = kv_round(lin(a, p + "self_attn.v_proj").view(T, KV, D))
        if "q_kv" in steps:
            q = kv_round(q)
        outs = []
        for h in range(H):
            s = (q[:, h].double() @ k[:, h // (H // KV)].double().T).float() / math.sqrt(D)
            s = r(s).masked_fill(~mask, float("-inf"))
            pr = r(torch.softmax(s, -1))
            if "p_f16" in steps:
                pr = f16(pr)
            outs.append(r((pr.double() @ v[:, h // (H // KV)].double()).float()))
        o = lin(torch.stack(outs, 1).reshape(T, H * D), p + "self_attn.o_proj")
        x = r(x + o)
        m = norm(x, p + "post_attention_layernorm.weight")
        g = lin(m, p + "mlp.gate_proj")
        u = lin(m, p + "mlp.up_proj")
        x = r(x + lin(r(r(torch.nn.functional.silu(g)) * u), p + "mlp.down_proj"))
    x = norm(x, "model.norm.weight")
    head = "lm_head" if "lm_head.weight" in w else "model.embed_tokens"
    return lin(x, head, bias=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--ids", required=True)
    ap.add_argument("--from", dest="start", type=int, default=None, help="first compared position (default: last)")
    ap.add_argument("--llama", default=None)
    ap.add_argument("--nudge", type=float, default=0.0,
                    help="also report each variant's sensitivity: max |logit change| when every product input is "
                         "scaled by (1 + NUDGE) before its rounding (1e-6: a float32 summation-order difference)")
    ap.add_argument("--variants", default="x_bf16,x_q8,x_q8f32,kv_f16,kv_f16+q_kv,kv_bf16+q_kv,all_bf16,rope_iter")
    a = ap.parse_args()
    cfg = json.load(open(os.path.join(a.model, "config.json")))
    w = {k: v.float() for k, v in reference_lm.load_weights(a.model).items()}
    ids = [int(t) for t in a.ids.split(",")]
    start = len(ids) - 1 if a.start is None else a.start
    torch.set_num_threads(2)
    truth = forward(cfg, w, ids, set())[start:]
    llama = [json.loads(ln) for ln in open(a.llama) if ln.strip()] if a.llama else None

    def gap(row):
        top2 = row.topk(2).values
        return float(top2[0] - top2[1])

    def vs_llama(out):
        """Per position of --llama's lines: the largest difference of relative logits over llama.cpp's top 64."""
        diffs = []
        for line in llama:
            row = out[line["position"] - start]
            lp = {int(k): v for k, v in line["logprobs"].items()}
            toks = sorted(lp, key=lambda t: -lp[t])[:64]
            ref = toks[0]
            diffs.append(round(max(abs((float(row[t]) - float(row[ref])) - (lp[t] - lp[ref])) for t in toks), 6))
        return diffs

    for name in ["truth"] + a.variants.split(","):
        steps = set() if name == "truth" else set(name.split("+"))
        unknown = steps - set(STEPS)
        if unknown:
            sys.exit(f"--variants: unknown step(s) {sorted(unknown)} (known: {', '.join(STEPS)})")
        out = truth if name == "truth" else forward(cfg, w, ids, steps)[start:]
        res = {"variant": name, "max_abs_vs_truth": float((out - truth).abs().max()),
               "argmax_changed": int((out.argmax(-1) != truth.argmax(-1)).sum()), "positions": out.shape[0],
               "top2_gap_last": gap(out[-1]), "argmax_last": int(out[-1].argmax())}
        if llama:
            res["rel_logit_diff_vs_llama_top64"] = vs_llama(out)
        if a.nudge:
            res[f"sensitivity_to_{a.nudge:g}_nudge"] = float((forward(cfg, w, ids, steps, a.nudge)[start:] - out).abs().max())
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
