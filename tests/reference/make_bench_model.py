"""Write a random-weight model with the exact shapes of a real checkpoint, for throughput benchmarks
(`lal bench generate`), without downloading anything.

    python3 tests/reference/make_bench_model.py qwen2.5-0.5b OUT_DIR [--dtype bf16] [--device cuda]

Shapes: qwen2.5-0.5b, qwen2.5-1.5b, qwen2.5-7b, qwen2.5-32b (ELYZA-Thinking-1.0-Qwen-32B's shape), llama-2-7b (config values as published on the Hugging Face hub).
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402

SHAPES = {
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                         rope_theta=1000000.0, rms_norm_eps=1e-6, max_position_embeddings=32768),
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                         rope_theta=1000000.0, rms_norm_eps=1e-6, max_position_embeddings=32768),
    "qwen2.5-7b": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False,
                       rope_theta=1000000.0, rms_norm_eps=1e-6, max_position_embeddings=32768),
    "qwen2.5-32b": dict(model_type="qwen2", hidden_size=5120, intermediate_size=27648, num_hidden_layers=64,
                        num_attention_heads=40, num_key_value_heads=8, vocab_size=152064, tie_word_embeddings=False,
                        rope_theta=1000000.0, rms_norm_eps=1e-6, max_position_embeddings=32768),
    "llama-2-7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False,
                       rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=4096),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("out")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    cfg = dict(SHAPES[a.shape], eos_token_id=0, bos_token_id=1,
               torch_dtype="bfloat16" if a.dtype == "bf16" else "float32", architectures=[
                   "Qwen2ForCausalLM" if SHAPES[a.shape]["model_type"] == "qwen2" else "LlamaForCausalLM"])
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    E, I, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    H, KV, V = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"]
    D = E // H
    g = torch.Generator(device=a.device).manual_seed(0)

    def r(*s):
        return (torch.randn(*s, generator=g, device=a.device, dtype=torch.float32) * 0.02).to(dtype)

    def ones(n):
        return torch.ones(n, dtype=dtype)

    w = {"model.embed_tokens.weight": r(V, E), "model.norm.weight": ones(E)}
    for i in range(L):
        p = f"model.layers.{i}."
        w.update({p + "input_layernorm.weight": ones(E), p + "post_attention_layernorm.weight": ones(E),
                  p + "self_attn.q_proj.weight": r(H * D, E), p + "self_attn.k_proj.weight": r(KV * D, E),
                  p + "self_attn.v_proj.weight": r(KV * D, E), p + "self_attn.o_proj.weight": r(E, H * D),
                  p + "mlp.gate_proj.weight": r(I, E), p + "mlp.up_proj.weight": r(I, E),
                  p + "mlp.down_proj.weight": r(E, I)})
        if cfg["model_type"] == "qwen2":
            w.update({p + "self_attn.q_proj.bias": r(H * D), p + "self_attn.k_proj.bias": r(KV * D),
                      p + "self_attn.v_proj.bias": r(KV * D)})
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = r(V, E)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    # Shard by ~4 GB like the hub does.
    names, shards, cur, size = list(w), [], [], 0
    for n in names:
        nbytes = w[n].numel() * w[n].element_size()
        if cur and size + nbytes > 4 << 30:
            shards.append(cur)
            cur, size = [], 0
        cur.append(n)
        size += nbytes
    shards.append(cur)
    if len(shards) == 1:
        st_io.save(os.path.join(a.out, "model.safetensors"), w, {"format": "pt"})
    else:
        wm = {}
        for k, part in enumerate(shards):
            fn = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
            st_io.save(os.path.join(a.out, fn), {n: w[n] for n in part}, {"format": "pt"})
            wm.update({n: fn for n in part})
        with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": wm}, f)
    total = sum(t.numel() for t in w.values())
    print(f"{a.shape}: {total / 1e9:.2f} B parameters in {len(shards)} file(s) -> {a.out}")


if __name__ == "__main__":
    main()
