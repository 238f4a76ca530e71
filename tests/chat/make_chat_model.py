"""Write a tiny random Qwen2 chat model with a real (byte-level BPE) tokenizer.json, for `lal chat` tests.

    /usr/bin/python3 tests/chat/make_chat_model.py OUT_DIR [--peak SCALE]

The tokenizer has the 256 byte-level symbols as its vocabulary (no merges) plus ChatML's special tokens, so any
UTF-8 text (Japanese included) round-trips. `--peak` scales the output embedding: large values give a confident
(low-entropy) model, small ones a hesitant (high-entropy) one.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import st_io  # noqa: E402
from byte_level import bytes_to_unicode  # noqa: E402


def main():
    out = sys.argv[1]
    peak = float(sys.argv[sys.argv.index("--peak") + 1]) if "--peak" in sys.argv else 1.0
    os.makedirs(out, exist_ok=True)
    alphabet = bytes_to_unicode()
    vocab = {alphabet[b]: b for b in range(256)}
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    added = [{"id": 256 + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, s in enumerate(specials)]
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False)
    template = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                   "chat_template": template, "model_max_length": 4096}, f)
    V, E, I, L, H, KV = 259, 32, 64, 2, 4, 2
    cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": V, "hidden_size": E,
           "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": KV,
           "max_position_embeddings": 4096, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
           "tie_word_embeddings": False, "torch_dtype": "float32", "bos_token_id": 256, "eos_token_id": 258,
           "hidden_act": "silu", "use_sliding_window": False}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 256, "eos_token_id": [258, 256], "do_sample": True}, f)
    g = torch.Generator().manual_seed(1234)
    r = lambda *s, std=0.2: torch.randn(*s, generator=g) * std
    D = E // H
    w = {"model.embed_tokens.weight": r(V, E), "model.norm.weight": torch.ones(E),
         "lm_head.weight": r(V, E, std=0.2 * peak)}
    for i in range(L):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = torch.ones(E)
        w[p + "post_attention_layernorm.weight"] = torch.ones(E)
        w[p + "self_attn.q_proj.weight"] = r(H * D, E)
        w[p + "self_attn.q_proj.bias"] = r(H * D)
        w[p + "self_attn.k_proj.weight"] = r(KV * D, E)
        w[p + "self_attn.k_proj.bias"] = r(KV * D)
        w[p + "self_attn.v_proj.weight"] = r(KV * D, E)
        w[p + "self_attn.v_proj.bias"] = r(KV * D)
        w[p + "self_attn.o_proj.weight"] = r(E, H * D)
        w[p + "mlp.gate_proj.weight"] = r(I, E)
        w[p + "mlp.up_proj.weight"] = r(I, E)
        w[p + "mlp.down_proj.weight"] = r(E, I)
    st_io.save(os.path.join(out, "model.safetensors"), w)


if __name__ == "__main__":
    main()
