"""Independent check of an exported model: load config.json + model.safetensors with the Python reference
(tests/reference/reference_lm.py, written from transformers' Qwen2/Llama modeling code), run greedy decoding from
PROMPT_IDS (ids past the tokenizer's vocabulary excluded, as the engine does) and compare with the ids `lal generate --greedy --ids` printed; also check the config keys that
transformers' AutoModelForCausalLM needs.

    check_export.py MODEL_DIR 1,2,3 '[4, 5, 6]'
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import reference_lm  # noqa: E402

model_dir, prompt, lal_ids = sys.argv[1], [int(x) for x in sys.argv[2].split(",")], json.loads(sys.argv[3])
with open(os.path.join(model_dir, "config.json")) as f:
    cfg = json.load(f)
for key in ("architectures", "model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "intermediate_size", "rms_norm_eps", "rope_theta", "tie_word_embeddings",
            "torch_dtype"):
    assert key in cfg, f"{model_dir}/config.json lacks {key}"
assert cfg["architectures"][0] in ("Qwen2ForCausalLM", "LlamaForCausalLM"), cfg["architectures"]
with open(os.path.join(model_dir, "generation_config.json")) as f:
    eos = json.load(f)["eos_token_id"]
eos = eos if isinstance(eos, list) else [eos]
with open(os.path.join(model_dir, "tokenizer.json")) as f:
    tok = json.load(f)
# Like lal's engine, never pick ids past the tokenizer's vocabulary (rows that only pad the embedding matrix).
usable = max(list(tok["model"]["vocab"].values()) + [a["id"] for a in tok.get("added_tokens", [])]) + 1
w = {k: v.float() for k, v in reference_lm.load_weights(model_dir).items()}
ids, ref = list(prompt), []
for _ in range(len(lal_ids)):
    nxt = int(reference_lm.forward(cfg, w, ids)[-1][:usable].argmax())
    ref.append(nxt)
    ids.append(nxt)
    if nxt in eos:
        break
print("python reference:", ref)
print("lal generate:    ", lal_ids)
if ref != lal_ids:
    sys.exit("MISMATCH between the Python reference and lal generate")
print("export parity OK")
