"""Conformance of lal with transformers on checkpoints that transformers itself writes (GPU host; not in ctest).

  write DIR        for each variant: a random-weight model built from transformers' own config class, written with
                   save_pretrained (one sharded, one bf16), and DIR/<name>/transformers.json with transformers'
                   float32 logits (CPU and CUDA) for two prompts and its greedy ids (CPU and CUDA) for NEW tokens.
  check DIR LAL    lal's --logits and greedy --ids (CPU and CUDA) against transformers.json; one JSON line per
                   variant and a final CONFORMANCE OK/FAILED line (exit status 0/1).

The variants cover the seed families in transformers 5's config dialect (rope_parameters), the rope types lal
implements (default, linear, dynamic, llama3, yarn, longrope), partial rotary, both gpt_neox residual forms, tied and
untied heads, GQA and MHA. Positions past max_position_embeddings / original_max_position_embeddings are reached so
that dynamic NTK and longrope switch their frequencies during the run.
"""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import torch

NEW = 40
PROMPT = [1, 5, 9, 2, 77, 31, 4, 100, 12, 13, 60, 61]
LONG = [(7 * i + 3) % 250 + 4 for i in range(56)]

BASE = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def variants():
    from transformers import GPTNeoXConfig, LlamaConfig, Phi3Config, Qwen2Config
    v = {}
    v["qwen2_tied"] = (Qwen2Config, dict(BASE, num_key_value_heads=2, tie_word_embeddings=True,
                                         rope_parameters={"rope_type": "default", "rope_theta": 1e6}), {})
    v["qwen2_untied"] = (Qwen2Config, dict(BASE, num_key_value_heads=2, tie_word_embeddings=False,
                                           rope_parameters={"rope_type": "default", "rope_theta": 1e6}), {})
    v["qwen2_bf16"] = (Qwen2Config, dict(BASE, num_key_value_heads=1, tie_word_embeddings=True,
                                         rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
                       {"dtype": torch.bfloat16})
    v["llama_llama3"] = (LlamaConfig, dict(BASE, num_key_value_heads=2, rope_parameters={
        "rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32}), {})
    v["llama_mha_sharded"] = (LlamaConfig, dict(BASE, num_key_value_heads=4, rope_parameters={
        "rope_type": "default", "rope_theta": 1e4}), {"max_shard_size": "40KB"})
    v["llama_linear"] = (LlamaConfig, dict(BASE, num_key_value_heads=2, attention_bias=True, mlp_bias=True,
                                           rope_parameters={"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0}),
                         {})
    v["llama_dynamic"] = (LlamaConfig, dict(BASE, num_key_value_heads=2, max_position_embeddings=32,
                                            rope_parameters={"rope_type": "dynamic", "rope_theta": 1e4,
                                                             "factor": 2.0}), {})
    v["llama_yarn"] = (LlamaConfig, dict(BASE, num_key_value_heads=2, head_dim=24, rope_parameters={
        "rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0, "original_max_position_embeddings": 32}), {})
    v["phi3"] = (Phi3Config, dict(BASE, num_key_value_heads=2, sliding_window=None,
                                  rope_parameters={"rope_type": "default", "rope_theta": 2.5e5}), {})
    v["phi3_longrope"] = (Phi3Config, dict(BASE, num_key_value_heads=2, sliding_window=None,
                                           original_max_position_embeddings=32, partial_rotary_factor=0.75,
                                           rope_parameters={"rope_type": "longrope", "rope_theta": 1e4,
                                                            "short_factor": [1.0 + 0.1 * i for i in range(6)],
                                                            "long_factor": [1.5 + 0.5 * i for i in range(6)],
                                                            "original_max_position_embeddings": 32}), {})
    v["neox_parallel"] = (GPTNeoXConfig, dict(BASE, use_parallel_residual=True, hidden_act="gelu",
                                              rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                               "partial_rotary_factor": 0.25}), {})
    v["neox_sequential"] = (GPTNeoXConfig, dict(BASE, use_parallel_residual=False, hidden_act="gelu_new",
                                                rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                                 "partial_rotary_factor": 0.5}), {})
    return v


def write(out):
    from transformers import AutoModelForCausalLM, GenerationConfig
    cuda = torch.cuda.is_available()
    for seed, (name, (cls, kw, opts)) in enumerate(sorted(variants().items())):
        d = os.path.join(out, name)
        try:
            cfg = cls(**kw)
            torch.manual_seed(100 + seed)
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(torch.randn_like(p) * 0.15 + (1.0 if n.endswith("norm.weight") else 0.0))
            model.generation_config = GenerationConfig(
                bos_token_id=1, eos_token_id=[2, 3], pad_token_id=0, do_sample=True, temperature=0.7, top_p=0.8,
                top_k=20, repetition_penalty=1.05)
            if "dtype" in opts:
                model = model.to(opts["dtype"])
            model.save_pretrained(d, **({"max_shard_size": opts["max_shard_size"]} if "max_shard_size" in opts else {}))
            res = {"prompt": PROMPT, "long": LONG, "new": NEW}
            for dev in ["cpu"] + (["cuda"] if cuda else []):
                m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).to(dev).eval()
                with torch.no_grad():
                    for key, ids in (("prompt", PROMPT), ("long", LONG)):
                        m2 = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).to(dev).eval()
                        lg = m2(torch.tensor([ids], device=dev)).logits[0].float().cpu()
                        res[f"logits_{key}_{dev}"] = lg.tolist()
                    for key, ids in (("prompt", PROMPT), ("long", LONG)):
                        m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).to(dev).eval()
                        g = m.generate(torch.tensor([ids], device=dev), do_sample=False, max_new_tokens=NEW,
                                       min_new_tokens=NEW, top_p=None, top_k=None, temperature=None,
                                       repetition_penalty=None)
                        res[f"greedy_{key}_{dev}" if key == "long" else f"greedy_{dev}"] = g[0, len(ids):].tolist()
            with open(os.path.join(d, "transformers.json"), "w") as f:
                json.dump(res, f)
            print(json.dumps({"variant": name, "written": sorted(os.listdir(d)),
                              "greedy_cpu_eq_cuda": res.get("greedy_cpu") == res.get("greedy_cuda")}))
        except Exception as e:  # report and go on
            import traceback
            traceback.print_exc()
            print(json.dumps({"variant": name, "error": repr(e)[:400]}))


def check(root, lal):
    ok = True
    cases = []
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        tj = os.path.join(d, "transformers.json")
        if not os.path.exists(tj):
            continue
        with open(tj) as f:
            ref = json.load(f)
        for dev in ("cpu", "cuda"):
            if f"greedy_{dev}" not in ref:
                continue
            base = [lal, "generate", "--model_path", d, "--device", dev, "--dtype", "float32"]
            # transformers was called with repetition_penalty=None (no penalty): lal's --greedy would otherwise take
            # generation_config.json's 1.05.
            for key, want in (("prompt", "greedy"), ("long", "greedy_long")):
                if f"{want}_{dev}" in ref:
                    cases.append((name, dev, want, ref, base + [
                        "--prompt_ids", ",".join(map(str, ref[key])), "--greedy", "--ids", "--repetition_penalty", "1",
                        "--max_new_tokens", str(ref["new"]), "--min_new_tokens", str(ref["new"])]))
            for key in ("prompt", "long"):
                cases.append((name, dev, key, ref, base + ["--prompt_ids", ",".join(map(str, ref[key])), "--logits"]))
    with ThreadPoolExecutor(max_workers=6) as pool:
        runs = list(pool.map(lambda c: subprocess.run(c[4], capture_output=True, text=True), cases))
    rows = {}
    for (name, dev, what, ref, cmd), run in zip(cases, runs):
        row = rows.setdefault((name, dev), {"variant": name, "device": dev})
        if run.returncode != 0:
            row[what + "_error"] = run.stderr[-400:]
            ok = False
            continue
        got = json.loads(run.stdout)
        if what.startswith("greedy"):
            same = got == ref[f"{what}_{dev}"]
            row[what + "_equal"] = same
            row["new_tokens"] = len(got)
            if not same:
                row[what + "_first_difference"] = next(i for i, (a, b) in enumerate(zip(got, ref[f"{what}_{dev}"]))
                                                       if a != b)
            # phi3 longrope crossing original_max_position_embeddings during decoding: transformers 5.17 drops the
            # cache there and then runs only the newest token (it attends to itself alone); lal recomputes every
            # position with the long factors, as that code intends (core/lm/engine/README.md). Reported, not failed.
            if not (name == "phi3_longrope" and what == "greedy"):
                ok = ok and same and len(got) >= 32
        else:
            lal_logits = torch.tensor(got["logits"])
            err = (lal_logits - torch.tensor(ref[f"logits_{what}_{dev}"])).abs().max().item()
            row[f"logits_{what}_max_abs"] = err
            ok = ok and err <= 1e-4
    for row in rows.values():
        print(json.dumps(row))
    print("CONFORMANCE", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "write":
        write(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "check":
        sys.exit(check(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
