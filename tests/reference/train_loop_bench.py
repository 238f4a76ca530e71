"""The PyTorch anchor for `lal distill` / `lal train` training throughput: a plain Python training loop of the same
student (transformers' Qwen2ForCausalLM/LlamaForCausalLM from the same config.json, random init), bf16 autocast,
fused AdamW, the same micro-batch and sequence length, random token data of that shape, cross-entropy over every
position. Prints one JSON line: tokens/s (every processed position) and MFU = 6 * N * tokens/s / peak.

    python3 tests/reference/train_loop_bench.py CONFIG_JSON --batch 8 --seq 512 [--steps 10] [--warmup 3]
                                                [--peak_tflops 989]
"""
import argparse
import json
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--peak_tflops", type=float, default=989.0)
    ap.add_argument("--lr", type=float, default=2e-4)
    a = ap.parse_args()
    cfg = AutoConfig.from_pretrained(a.config)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32, attn_implementation="sdpa").cuda()
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0, fused=True)
    data = torch.randint(0, cfg.vocab_size, (a.warmup + a.steps, a.batch, a.seq), device="cuda")

    def step(ids):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.size(-1)),
                                                 ids[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for i in range(a.warmup):
        step(data[i])
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(a.steps):
        loss = step(data[a.warmup + i])
    torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    tok_s = a.steps * a.batch * a.seq / secs
    print(json.dumps({"bench": "pytorch_train_loop", "params": n_params, "batch": a.batch, "seq": a.seq,
                      "steps": a.steps, "seconds": secs, "tokens_per_s": tok_s,
                      "mfu": 6 * n_params * tok_s / (a.peak_tflops * 1e12), "final_loss": loss.item(),
                      "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
