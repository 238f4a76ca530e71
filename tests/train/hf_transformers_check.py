"""Load lal exports with Hugging Face transformers (AutoModelForCausalLM + AutoTokenizer) and compare with the
independent Python reference (tests/reference/reference_lm.py) and with ids lal's tokenizer produced. Runs where
transformers is installed (the GPU host; Debian has no transformers):

    python3 tests/train/hf_transformers_check.py MODEL_DIR [LAL_IDS.jsonl] ...   (pairs: dir, ids file or -)
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import reference_lm  # noqa: E402

TEXTS = ["「ls」は何をするものですか？ ファイルをコピーする。", "Ohm's law: V = I R."]
ok = True
args = sys.argv[1:]
for model_dir, ids_file in zip(args[0::2], args[1::2]):
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    w = {k: v.float() for k, v in reference_lm.load_weights(model_dir).items()}
    ids = [min(i * 37 + 5, len(tok) - 1) for i in range(12)]
    with torch.no_grad():
        hf = model(torch.tensor([ids])).logits[0].float()
    ref = reference_lm.forward(cfg, w, ids)
    diff = (hf - ref).abs().max().item()
    rec = {"model": model_dir, "class": type(model).__name__, "params": sum(p.numel() for p in model.parameters()),
           "max_abs_logit_diff_hf_vs_reference": diff}
    if ids_file != "-":
        with open(ids_file) as f:
            lal_ids = [json.loads(line) for line in f if line.strip()]
        hf_ids = [tok.encode(t, add_special_tokens=False) for t in TEXTS]
        rec["tokenizer_equal_lal_hf"] = hf_ids == lal_ids
        if hf_ids != lal_ids:
            rec["hf_ids"], rec["lal_ids"] = hf_ids, lal_ids
    msgs = [{"role": "user", "content": "「ls」は何をするものですか？"}]
    rec["chat_prompt"] = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True)
    if not isinstance(enc, list):
        enc = enc["input_ids"]
    out = model.generate(torch.tensor([enc]), max_new_tokens=12, do_sample=False)
    rec["hf_generate"] = tok.decode(out[0], skip_special_tokens=False)[-80:]
    ok = ok and diff < 1e-4 and rec.get("tokenizer_equal_lal_hf", True)
    print(json.dumps(rec, ensure_ascii=False))
print("transformers check", "OK" if ok else "FAILED")
sys.exit(0 if ok else 1)
