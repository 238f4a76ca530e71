"""Logit error and weight memory of lal's int8/int4 weight format (lal/lm/quantize.hpp: symmetric, group-wise,
float16 scales) on a model directory, against the same model in bf16 — re-implemented here in torch, independently
of the C++ code, and run through transformers. Prints one JSON line per mode.

    python3 tests/reference/quant_error.py MODEL_DIR [--group 64] [--tokens 256]
"""
import argparse
import json

import torch
from transformers import AutoModelForCausalLM


def fake_quant(w, bits, group):
    out, inp = w.shape
    g = group if inp % group == 0 else inp
    qmax = 127.0 if bits == 8 else 7.0
    x = w.float().view(out, inp // g, g)
    scale = (x.abs().amax(-1, keepdim=True) / qmax).clamp_min(1e-10).half().float()
    q = (x / scale).round().clamp(-qmax, qmax)
    return (q * scale).view(out, inp).to(w.dtype), out * inp * bits // 8 + out * (inp // g) * 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--group", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=256)
    a = ap.parse_args()
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.bfloat16).cuda().eval()
    ids = torch.randint(0, model.config.vocab_size, (1, a.tokens), generator=torch.Generator().manual_seed(0)).cuda()
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n}
    dense_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    lin_bytes = sum(m.weight.numel() * 2 for m in linears.values())
    originals = {n: m.weight.data.clone() for n, m in linears.items()}
    with torch.no_grad():
        ref = model(ids).logits.float()
        print(json.dumps({"mode": "bf16", "weight_bytes": dense_bytes, "decoder_linear_bytes": lin_bytes}))
        for bits in (8, 4):
            packed = 0
            for n, m in linears.items():
                m.weight.data, b = fake_quant(originals[n], bits, a.group)
                packed += b
            out = model(ids).logits.float()
            lp, lq = ref.log_softmax(-1), out.log_softmax(-1)
            kl = (lp.exp() * (lp - lq)).sum(-1).mean().item()
            print(json.dumps({"mode": f"int{bits}", "group": a.group,
                              "weight_bytes": dense_bytes - lin_bytes + packed, "decoder_linear_bytes": packed,
                              "max_abs_logit_err": (out - ref).abs().max().item(),
                              "max_abs_logit": ref.abs().max().item(),
                              "kl_bf16_to_quant_nats_per_token": kl,
                              "top1_agreement": (out.argmax(-1) == ref.argmax(-1)).float().mean().item()}))
            for n, m in linears.items():
                m.weight.data = originals[n]


if __name__ == "__main__":
    main()
