"""Generate tiny random Hugging Face-style checkpoints (config.json + safetensors) for the lal engine tests, plus
the reference outputs for each: full-sequence logits (float32 and bfloat16) and greedy continuations.

    /usr/bin/python3 tests/reference/make_tiny_models.py OUT_DIR

Besides the MODELS below, every config in tests/lm/hf_configs/transformers{4,5}/<variant>/ (config.json files
as transformers 4 and transformers 5 write them; the transformers 5 ones were written by save_pretrained, see
tests/reference/gpu/conformance.py) gets random weights as OUT_DIR/hf{4,5}_<variant>/, with its own
generation_config.json, and one more prompt (LONG_PROMPT, past the dynamic/longrope switch points).

Each OUT_DIR/<name>/ holds config.json, generation_config.json, the weights, and expected.safetensors with
  prompt.<i>        I64 [T]      prompt ids
  logits.<i>        F32 [T, V]   reference logits, float32
  logits_bf16.<i>   F32 [T, V]   reference logits computed in bfloat16
  greedy.<i>        I64 [n]      greedy continuation (stops after eos, eos included)
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_lm  # noqa: E402
import st_io  # noqa: E402

GREEDY_TOKENS = 10
PROMPTS = [[1, 5, 9, 2, 77, 31, 4], [3], [60, 61, 62, 2, 2, 11, 40, 41, 80, 7, 13, 25]]
LONG_PROMPT = [(7 * i + 3) % 90 + 4 for i in range(40)]
HF_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lm", "hf_configs")


def llama_like(cfg, g, std):
    mt, E, I, H = cfg["model_type"], cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads", H)
    D = cfg.get("head_dim") or E // H
    V = cfg["vocab_size"]
    r = lambda *s: torch.randn(*s, generator=g) * std
    w = {"model.embed_tokens.weight": r(V, E), "model.norm.weight": 1 + r(E)}
    qkv_bias = mt == "qwen2" or cfg.get("attention_bias", False)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = 1 + r(E)
        w[p + "post_attention_layernorm.weight"] = 1 + r(E)
        if mt == "phi3":
            w[p + "self_attn.qkv_proj.weight"] = r((H + 2 * KV) * D, E)
            w[p + "mlp.gate_up_proj.weight"] = r(2 * I, E)
        else:
            w[p + "self_attn.q_proj.weight"] = r(H * D, E)
            w[p + "self_attn.k_proj.weight"] = r(KV * D, E)
            w[p + "self_attn.v_proj.weight"] = r(KV * D, E)
            if qkv_bias:
                w[p + "self_attn.q_proj.bias"] = r(H * D)
                w[p + "self_attn.k_proj.bias"] = r(KV * D)
                w[p + "self_attn.v_proj.bias"] = r(KV * D)
            w[p + "mlp.gate_proj.weight"] = r(I, E)
            w[p + "mlp.up_proj.weight"] = r(I, E)
            if cfg.get("mlp_bias", False):
                w[p + "mlp.gate_proj.bias"] = r(I)
                w[p + "mlp.up_proj.bias"] = r(I)
                w[p + "mlp.down_proj.bias"] = r(E)
        w[p + "self_attn.o_proj.weight"] = r(E, H * D)
        if mt == "llama" and cfg.get("attention_bias", False):
            w[p + "self_attn.o_proj.bias"] = r(E)
        w[p + "mlp.down_proj.weight"] = r(E, I)
    if not cfg.get("tie_word_embeddings", False):
        w["lm_head.weight"] = r(V, E)
    return w


def neox(cfg, g, std):
    E, I, H, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"], cfg["vocab_size"]
    r = lambda *s: torch.randn(*s, generator=g) * std
    w = {"gpt_neox.embed_in.weight": r(V, E), "gpt_neox.final_layer_norm.weight": 1 + r(E),
         "gpt_neox.final_layer_norm.bias": r(E), "embed_out.weight": r(V, E)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"gpt_neox.layers.{i}."
        for n in ("input_layernorm", "post_attention_layernorm"):
            w[p + n + ".weight"] = 1 + r(E)
            w[p + n + ".bias"] = r(E)
        w[p + "attention.query_key_value.weight"] = r(3 * E, E)
        w[p + "attention.query_key_value.bias"] = r(3 * E)
        w[p + "attention.dense.weight"] = r(E, E)
        w[p + "attention.dense.bias"] = r(E)
        w[p + "mlp.dense_h_to_4h.weight"] = r(I, E)
        w[p + "mlp.dense_h_to_4h.bias"] = r(I)
        w[p + "mlp.dense_4h_to_h.weight"] = r(E, I)
        w[p + "mlp.dense_4h_to_h.bias"] = r(E)
    return w


BASE = {"vocab_size": 96, "hidden_size": 64, "intermediate_size": 112, "num_hidden_layers": 2,
        "num_attention_heads": 4, "max_position_embeddings": 256, "eos_token_id": 2, "bos_token_id": 1, "pad_token_id": 0}

MODELS = {
    # Qwen2: GQA 4/2, q/k/v bias, tied embeddings
    "qwen2_tied_gqa": dict(BASE, model_type="qwen2", num_key_value_heads=2, tie_word_embeddings=True,
                           rope_theta=1000000.0, rms_norm_eps=1e-6),
    # Llama: untied, GQA 4/1, explicit head_dim != hidden/heads, llama3 rope scaling, stored as bf16
    "llama_llama3_headdim": dict(BASE, model_type="llama", num_key_value_heads=1, head_dim=24,
                                 tie_word_embeddings=False, rope_theta=500000.0, rms_norm_eps=1e-5,
                                 rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                               "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                                 torch_dtype="bfloat16", _store="bf16"),
    # Llama: attention + mlp bias, linear rope scaling, 3 layers in 2 shards
    "llama_bias_linear_sharded": dict(BASE, model_type="llama", num_hidden_layers=3, attention_bias=True,
                                      mlp_bias=True, rope_scaling={"type": "linear", "factor": 2.0},
                                      _shards=2),
    # Phi-3: fused qkv / gate_up, GQA 4/2, partial rotary 0.5, stored as f16
    "phi3_partial_rotary": dict(BASE, model_type="phi3", num_key_value_heads=2, partial_rotary_factor=0.5,
                                rms_norm_eps=1e-5, sliding_window=None, _store="f16"),
    # GPT-NeoX: parallel residual, rotary_pct 0.25, exact gelu
    "neox_parallel": dict(BASE, model_type="gpt_neox", rotary_pct=0.25, rotary_emb_base=10000,
                          use_parallel_residual=True, hidden_act="gelu", layer_norm_eps=1e-5),
    # GPT-NeoX: sequential residual, rotary_pct 0.5, tanh gelu
    "neox_sequential": dict(BASE, model_type="gpt_neox", rotary_pct=0.5, rotary_emb_base=10000,
                            use_parallel_residual=False, hidden_act="gelu_new", layer_norm_eps=1e-5),
}


def write_model(d, cfg, gen, w, shards, prompts, eos):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump(gen, f)
    for old in os.listdir(d):
        if old.startswith("model"):
            os.remove(os.path.join(d, old))
    if shards == 1:
        st_io.save(os.path.join(d, "model.safetensors"), w, {"format": "pt"})
    else:
        names = sorted(w)
        weight_map = {}
        for s in range(shards):
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: w[n] for n in names[s::shards]}
            st_io.save(os.path.join(d, fname), part, {"format": "pt"})
            weight_map.update({n: fname for n in part})
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1)
    wf = {k: v.float() for k, v in w.items()}
    expected = {}
    for i, p in enumerate(prompts):
        expected[f"prompt.{i}"] = torch.tensor(p, dtype=torch.int64)
        expected[f"logits.{i}"] = reference_lm.forward(cfg, wf, p)
        expected[f"logits_bf16.{i}"] = reference_lm.forward(cfg, wf, p, torch.bfloat16)
        if i < len(PROMPTS):  # greedy by full recomputation: within the switch points of dynamic/longrope
            expected[f"greedy.{i}"] = torch.tensor(reference_lm.greedy(cfg, wf, p, GREEDY_TOKENS, eos=eos),
                                                   dtype=torch.int64)
    st_io.save(os.path.join(d, "expected.safetensors"), expected)


def ids(v):
    return [] if v is None else (v if isinstance(v, list) else [v])


def main(out):
    for seed, (name, spec) in enumerate(sorted(MODELS.items())):
        cfg = {k: v for k, v in spec.items() if not k.startswith("_")}
        g = torch.Generator().manual_seed(1234 + seed)
        w = neox(cfg, g, 0.15) if cfg["model_type"] == "gpt_neox" else llama_like(cfg, g, 0.15)
        store = {"bf16": torch.bfloat16, "f16": torch.float16}.get(spec.get("_store"), torch.float32)
        w = {k: v.to(store) for k, v in w.items()}
        write_model(os.path.join(out, name), cfg, {"eos_token_id": [2, 3], "bos_token_id": 1}, w,
                    spec.get("_shards", 1), PROMPTS, (2, 3))
    count = len(MODELS)
    for dialect in ("transformers4", "transformers5"):
        root = os.path.join(HF_CONFIGS, dialect)
        for seed, variant in enumerate(sorted(os.listdir(root))):
            with open(os.path.join(root, variant, "config.json")) as f:
                cfg = json.load(f)
            gen = {}
            if os.path.exists(os.path.join(root, variant, "generation_config.json")):
                with open(os.path.join(root, variant, "generation_config.json")) as f:
                    gen = json.load(f)
            g = torch.Generator().manual_seed(4321 + seed + (100 if dialect.endswith("5") else 0))
            w = neox(cfg, g, 0.15) if cfg["model_type"] == "gpt_neox" else llama_like(cfg, g, 0.15)
            dtype = cfg.get("dtype", cfg.get("torch_dtype"))
            store = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype, torch.float32)
            w = {k: v.to(store) for k, v in w.items()}
            eos = tuple(ids(cfg.get("eos_token_id")) + ids(gen.get("eos_token_id")))
            write_model(os.path.join(out, "hf" + dialect[-1] + "_" + variant), cfg, gen, w,
                        3 if "sharded" in variant else 1, PROMPTS + [LONG_PROMPT], eos)
            count += 1
    print(f"wrote {count} models to {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_tiny_models.py OUT_DIR")
    main(sys.argv[1])
