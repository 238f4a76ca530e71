"""Fixtures for the core/train tests, written with plain torch (no transformers, no tokenizers package):

    /usr/bin/python3 tests/train/make_train_fixtures.py OUT_DIR

OUT_DIR/teacher/      a tiny random Qwen2 teacher: 4 layers, GQA 4/2, untied head, config vocab 384 padded past
                      its 321-token tokenizer (like Qwen's 152064 vs 151936), with a small byte-level BPE
                      tokenizer.json (merges learned here from a Japanese/English text) and a ChatML template
OUT_DIR/kd_reference.safetensors
                      random student/teacher logits, targets, top-k inputs and the expected KD loss parts and their
                      gradients with respect to the student logits, computed with torch autograd from the formula
                      alpha*T^2*KL(softmax(t/T) || softmax(s/T)) + (1-alpha)*CE(s, y) (independent of the C++ code)
"""
import collections
import json
import os
import re
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import st_io  # noqa: E402
from byte_level import bytes_to_unicode  # noqa: E402

TEXT = """
電気回路ではオームの法則が基本です。電圧は電流と抵抗の積に等しい。
キルヒホッフの法則は、回路の節点に流れ込む電流の和がゼロであることを示します。
二次関数の最大値と最小値を求めるには、平方完成をします。
Pythonのリスト内包表記は、短く読みやすいコードを書くために使います。
The quick brown fox jumps over the lazy dog. Ohm's law relates voltage, current and resistance.
Binary search halves the interval at every step, so it needs O(log n) comparisons.
"""


def make_tokenizer(n_merges=60):
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: i for i, b in enumerate(sorted(b2u))}
    words = re.findall(r" ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]+|\s+", TEXT)
    seqs = collections.Counter(tuple(b2u[b] for b in w.encode()) for w in words)
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for s, c in seqs.items():
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append(f"{a} {b}")
        vocab.setdefault(a + b, len(vocab))
        new = collections.Counter()
        for s, c in seqs.items():
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            new[tuple(out)] += c
        seqs = new
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    added = []
    for s in specials:
        added.append({"id": len(vocab) + len(added), "content": s, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": s not in ("<think>", "</think>")})
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }
    chat = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
            "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    tok_cfg = {"add_bos_token": False, "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
               "model_max_length": 4096, "tokenizer_class": "Qwen2Tokenizer", "chat_template": chat,
               "added_tokens_decoder": {str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in added}}
    return tok, tok_cfg, len(vocab) + len(added)


def make_teacher(out):
    tok, tok_cfg, n_tokens = make_tokenizer()
    d = os.path.join(out, "teacher")
    os.makedirs(d, exist_ok=True)
    im_end = n_tokens - 3
    cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 384, "hidden_size": 64,
           "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
           "max_position_embeddings": 512, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "hidden_act": "silu",
           "tie_word_embeddings": False, "use_sliding_window": False, "eos_token_id": im_end,
           "torch_dtype": "float32"}
    g = torch.Generator().manual_seed(20261128)
    E, I, H, KV, V = 64, 128, 4, 2, 384
    D = E // H
    r = lambda *s, std=0.12: torch.randn(*s, generator=g) * std  # noqa: E731
    w = {"model.embed_tokens.weight": r(V, E, std=0.5), "model.norm.weight": 1 + r(E, std=0.05),
         "lm_head.weight": r(V, E, std=0.5)}
    for i in range(4):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = 1 + r(E, std=0.05)
        w[p + "post_attention_layernorm.weight"] = 1 + r(E, std=0.05)
        w[p + "self_attn.q_proj.weight"] = r(H * D, E)
        w[p + "self_attn.k_proj.weight"] = r(KV * D, E)
        w[p + "self_attn.v_proj.weight"] = r(KV * D, E)
        w[p + "self_attn.q_proj.bias"] = r(H * D, std=0.02)
        w[p + "self_attn.k_proj.bias"] = r(KV * D, std=0.02)
        w[p + "self_attn.v_proj.bias"] = r(KV * D, std=0.02)
        w[p + "self_attn.o_proj.weight"] = r(E, H * D)
        w[p + "mlp.gate_proj.weight"] = r(I, E)
        w[p + "mlp.up_proj.weight"] = r(I, E)
        w[p + "mlp.down_proj.weight"] = r(E, I)
    st_io.save(os.path.join(d, "model.safetensors"), w, {"format": "pt"})
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": [im_end, n_tokens - 5]}, f)
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False, indent=1)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(tok_cfg, f, ensure_ascii=False, indent=1)
    with open(os.path.join(out, "questions.txt"), "w") as f:
        for line in TEXT.strip().splitlines():
            f.write(line.strip() + "\n")


def kd(s, t, y, T, alpha):
    lq = torch.log_softmax(s / T, -1)
    p = torch.softmax(t / T, -1)
    lp = torch.where(p > 0, torch.log_softmax(t / T, -1), torch.zeros_like(p))
    kl = (p * (lp - lq)).sum(-1).mean()
    ce = torch.nn.functional.cross_entropy(s, y)
    return alpha * T * T * kl + (1 - alpha) * ce, kl, ce


def kd_topk(s, ids, lps, y, T, alpha):
    valid = ids >= 0
    scaled = (lps / T).masked_fill(~valid, float("-inf"))
    p = torch.softmax(scaled, -1)
    lp = torch.where(valid, torch.log_softmax(scaled, -1), torch.zeros_like(p))
    lq = torch.log_softmax(s / T, -1).gather(1, ids.clamp(min=0))
    kl = (torch.where(valid, p * (lp - lq), torch.zeros_like(p))).sum(-1).mean()
    ce = torch.nn.functional.cross_entropy(s, y)
    return alpha * T * T * kl + (1 - alpha) * ce, kl, ce


def make_kd_reference(out):
    g = torch.Generator().manual_seed(7)
    N, V, K = 11, 37, 5
    T, alpha = 2.0, 0.7
    s = (torch.randn(N, V, generator=g) * 3).double()
    t = (torch.randn(N, V, generator=g) * 3).double()
    t[:, -3:] = float("-inf")  # vocabulary padding the teacher cannot produce
    y = torch.randint(0, V - 3, (N,), generator=g)
    res = {"student": s.float(), "teacher": t.float(), "targets": y, "T": torch.tensor([T]), "alpha": torch.tensor([alpha])}
    sv = s.clone().requires_grad_(True)
    total, kl, ce = kd(sv, t, y, T, alpha)
    total.backward()
    res.update({"total": total.detach().float().reshape(1), "kl": kl.detach().float().reshape(1),
                "ce": ce.detach().float().reshape(1), "grad": sv.grad.float()})
    ids = torch.stack([torch.randperm(V - 3, generator=g)[:K] for _ in range(N)])
    ids[0, -2:] = -1  # unused slots
    lps = torch.log_softmax(t[:, : V - 3], -1).gather(1, ids.clamp(min=0)).double()
    sv = s.clone().requires_grad_(True)
    total, kl, ce = kd_topk(sv, ids, lps, y, T, alpha)
    total.backward()
    res.update({"topk_ids": ids, "topk_logprobs": lps.float(), "topk_total": total.detach().float().reshape(1),
                "topk_kl": kl.detach().float().reshape(1), "topk_grad": sv.grad.float()})
    st_io.save(os.path.join(out, "kd_reference.safetensors"), res)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_train_fixtures.py OUT_DIR")
    os.makedirs(sys.argv[1], exist_ok=True)
    make_teacher(sys.argv[1])
    make_kd_reference(sys.argv[1])
    print("wrote train fixtures to", sys.argv[1])
