"""Independent check of the teacher's stored top-k log-probabilities (`lal distill --store_topk K`, topk.jsonl):
the Python reference (tests/reference/reference_lm.py) runs the teacher on every example alone, and at every
predicted position lal's K values must be the reference's K largest log-probabilities (over the ids the tokenizer
can produce), each stored id carrying the reference's value for that id (so near-ties may come in either order).

    check_topk.py TEACHER_DIR WORK_DIR MAX_LENGTH K
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import reference_lm  # noqa: E402

teacher, work, max_length, K = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open(os.path.join(teacher, "config.json")) as f:
    cfg = json.load(f)
with open(os.path.join(teacher, "tokenizer.json")) as f:
    tok = json.load(f)
usable = min(cfg["vocab_size"],
             max(list(tok["model"]["vocab"].values()) + [a["id"] for a in tok.get("added_tokens", [])]) + 1)
w = {k: v.float() for k, v in reference_lm.load_weights(teacher).items()}

examples = []  # as lal's load_examples: prompt + completion cut to max_length, at least one predicted token
with open(os.path.join(work, "data.jsonl")) as f:
    for line in f:
        if not line.endswith("\n"):
            break
        d = json.loads(line)
        ids = (d["prompt_ids"] + d["completion_ids"])[:max_length]
        if len(ids) >= 2 and len(d["prompt_ids"]) < len(ids):
            examples.append((ids, len(d["prompt_ids"])))
with open(os.path.join(work, "topk.jsonl")) as f:
    records = [json.loads(line) for line in f if line.strip()]
assert len(records) == len(examples), f"{len(records)} top-k records for {len(examples)} examples"

worst, positions = 0.0, 0
for n, (rec, (ids, prompt_len)) in enumerate(zip(records, examples)):
    assert rec["index"] == n, f"record {n} has index {rec['index']}"
    with torch.no_grad():
        lp = torch.log_softmax(reference_lm.forward(cfg, w, ids)[:, :usable].double(), -1)
    first = max(prompt_len, 1) - 1
    rows = list(range(first, len(ids) - 1))
    assert len(rec["ids"]) == len(rows), f"example {n}: {len(rec['ids'])} positions, expected {len(rows)}"
    for t, got_ids, got_lp in zip(rows, rec["ids"], rec["logprobs"]):
        assert len(got_ids) == K and len(set(got_ids)) == K, f"example {n} position {t}: ids {got_ids}"
        expected = lp[t].topk(K).values
        got = torch.tensor(got_lp, dtype=torch.float64)
        at_ids = lp[t][torch.tensor(got_ids)]
        worst = max(worst, (got - expected).abs().max().item(), (got - at_ids).abs().max().item())
        positions += 1
print(f"top-k: {len(records)} examples, {positions} positions, K={K}: max |lal - reference| {worst:.2e}")
assert worst <= 1e-4, worst
print("top-k OK")
