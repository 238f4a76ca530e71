#!/usr/bin/python3
"""lal and llama.cpp on the same weights, in one call: prompt and decode tokens/s per dtype, and greedy agreement.

    /usr/bin/python3 tests/reference/llama_cpp/bench_vs_llama.py --lal build/bin/lal --model DIR \
        --node_dir DIR_WITH_NODE_MODULES [--work DIR] [--types f32,bf16,int8,int4] [--threads 2] \
        [--prompt_len 128] [--new_tokens 128] [--repeat 3] [--agreement_prompts 4] [--agreement_tokens 32]

DIR is a Qwen2 float32 safetensors checkpoint with tokenizer.json (tests/reference/make_bench_model.py
qwen2.5-0.5b DIR --dtype f32, plus a Qwen tokenizer.json). --node_dir holds node_modules with node-llama-cpp
3.21.1 (`npm i -E node-llama-cpp@3.21.1` beside package.json here). Pairs: lal float32 / llama.cpp F32, bfloat16 /
BF16, int8 / Q8_0, int4 / Q4_0; st_to_gguf.py writes the GGUF files (int8/int4: the very weights lal computes
with, see its docstring). Each engine runs `--repeat` timed generations after one warm-up, in its own process, at
`--threads` threads, one dtype after the other; medians are reported. Agreement: `--agreement_prompts` random
prompts of 16 ids, `--agreement_tokens` greedy tokens from both; at the first position where they differ, lal's
judge() decides on the float32 logits of the weights both engines hold ("truth":
stored_weights.py decodes the GGUF's bf16/q8_0/q4_0 tensors exactly into a float32 checkpoint, `lal generate --dtype
float32 --logits` over the prompt and the common prefix): a near-tie when both tokens lie within epsilon of the best
truth logit, epsilon = 1e-3 for f32 and, for bf16/int8/int4, the largest deviation from the truth at that position
of logits computed with every activation rounded to bfloat16 (the 8-bit arithmetic llama.cpp's BF16/Q8_0/Q4_0 use
for activations). Anything else is a real disagreement.
Prints one JSON object per line and a markdown table at the end.
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PAIRS = {"f32": ("float32", "f32"), "bf16": ("bfloat16", "bf16"), "int8": ("int8", "q8_0"), "int4": ("int4", "q4_0")}
NEAR_TIE = 1e-3


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return p.stdout


def last_json(out):
    return json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])


def gguf_for(a, gtype):
    path = os.path.join(a.work, f"model-{gtype}.gguf")
    if not os.path.exists(path):
        run([sys.executable, os.path.join(HERE, "st_to_gguf.py"), a.model, path, "--type", gtype])
    return path


def llama(a, gguf, *extra):
    # bench_llama.mjs imports node-llama-cpp, which ES modules find in a node_modules folder beside the script (not
    # through NODE_PATH): run a copy of it in --work with node_modules linked there.
    script = os.path.join(a.work, "bench_llama.mjs")
    with open(os.path.join(HERE, "bench_llama.mjs")) as src, open(script, "w") as dst:
        dst.write(src.read())
    link = os.path.join(a.work, "node_modules")
    if not os.path.exists(link):
        os.symlink(os.path.abspath(os.path.join(a.node_dir, "node_modules")), link)
    return last_json(run(["node", script, gguf, "--threads", str(a.threads), *extra], cwd=a.work))


def lal_env(a):
    return dict(os.environ, OMP_NUM_THREADS=str(a.threads))


def speed(a, key):
    dtype, gtype = PAIRS[key]
    lal = last_json(run([a.lal, "bench", "generate", "--model_path", a.model, "--device", "cpu", "--dtype", dtype,
                         "--prompt_len", str(a.prompt_len), "--new_tokens", str(a.new_tokens), "--warmup", "1",
                         "--repeat", str(a.repeat), "--json"], env=lal_env(a)))
    ll = llama(a, gguf_for(a, gtype), "--prompt_len", str(a.prompt_len), "--new_tokens", str(a.new_tokens),
               "--warmup", "1", "--repeat", str(a.repeat))
    med = lambda runs, k: statistics.median(r[k] for r in runs)  # noqa: E731
    return {"pair": f"lal {dtype} / llama.cpp {gtype.upper()}",
            "lal_prompt_tok_s": med(lal["runs"], "prefill_tokens_per_s"),
            "lal_decode_tok_s": med(lal["runs"], "decode_tokens_per_s"),
            "llama_prompt_tok_s": med(ll["runs"], "prefill_tokens_per_s"),
            "llama_decode_tok_s": med(ll["runs"], "decode_tokens_per_s"),
            "lal_weight_bytes": lal["weight_bytes"], "lal_model": lal["model"],
            "lal_runs": lal["runs"], "llama_runs": ll["runs"]}


def stored_model(a, key):
    """A float32 checkpoint of exactly the weights both engines compute with for pair `key` (stored_weights.py)."""
    if key == "f32":
        return a.model
    gtype = PAIRS[key][1]
    path = os.path.join(a.work, f"stored-{gtype}")
    if not os.path.exists(os.path.join(path, "model.safetensors")):
        run([sys.executable, os.path.join(HERE, "stored_weights.py"), a.model, path, "--type", gtype])
    return path


def last_logits(a, model, dtype, ids):
    out = run([a.lal, "generate", "--model_path", model, "--device", "cpu", "--dtype", dtype, "--logits",
               "--prompt_ids", ",".join(map(str, ids))], env=lal_env(a))
    return json.loads(out)["logits"][-1]


def judge(a, key, ids, lal_token, llama_token):
    """At a first difference after `ids`: is it a near-tie? On the float32 logits of the stored weights ("truth"),
    both tokens must lie within epsilon of the best logit, epsilon being the error bound of the dtype's arithmetic:
    f32 NEAR_TIE (1e-3); bf16/int8/int4 the largest deviation from the truth, at this position, of logits computed
    with 8-bit-mantissa activations (LibTorch's bfloat16 ops on the stored weights: every activation rounded to
    bfloat16) -- llama.cpp's BF16 rounds activations to bfloat16, its Q8_0/Q4_0 quantise them to int8 per 32-block,
    so its logits may be that far from the truth."""
    model = stored_model(a, key)
    truth = last_logits(a, model, "float32", ids)
    top = max(truth)
    second = max(v for i, v in enumerate(truth) if i != truth.index(top))
    if key == "f32":
        epsilon = NEAR_TIE
    else:
        rounded = last_logits(a, model, "bfloat16", ids)
        epsilon = max(abs(x - y) for x, y in zip(rounded, truth))
    r = {"truth_top2_gap": top - second, "lal_deficit": top - truth[lal_token],
         "llama_deficit": top - truth[llama_token], "epsilon": epsilon,
         "lal_rank": 1 + sum(v > truth[lal_token] for v in truth),
         "llama_rank": 1 + sum(v > truth[llama_token] for v in truth)}
    r["near_tie"] = r["lal_deficit"] <= epsilon and r["llama_deficit"] <= epsilon
    return r


def agreement(a, key):
    dtype, gtype = PAIRS[key]
    gguf = gguf_for(a, gtype)
    rng = random.Random(1234)
    results = []
    for p in range(a.agreement_prompts):
        prompt = [rng.randrange(151643) for _ in range(16)]
        ids = ",".join(map(str, prompt))
        mine = json.loads(run([a.lal, "generate", "--model_path", a.model, "--device", "cpu", "--dtype", dtype,
                               "--prompt_ids", ids, "--greedy", "--ids", "--max_new_tokens",
                               str(a.agreement_tokens)], env=lal_env(a)))
        theirs = llama(a, gguf, "--prompt_ids", ids, "--new_tokens", str(a.agreement_tokens), "--warmup", "0",
                       "--repeat", "1", "--ids")["tokens"]
        n = min(len(mine), len(theirs))
        k = next((i for i in range(n) if mine[i] != theirs[i]), n)
        r = {"prompt": p, "compared": n, "equal_prefix": k}
        if k < n:
            r["lal"], r["llama"] = mine[k], theirs[k]
            r.update(judge(a, key, prompt + mine[:k], mine[k], theirs[k]))
        results.append(r)
    ok = all(r["equal_prefix"] == r["compared"] or r["near_tie"] for r in results)
    return {"pair": key, "agree_except_near_ties": ok, "prompts": results}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lal", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--node_dir", required=True)
    ap.add_argument("--work", default=None, help="GGUF files (default: MODEL/gguf)")
    ap.add_argument("--types", default="f32,bf16,int8,int4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt_len", type=int, default=128)
    ap.add_argument("--new_tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--agreement_prompts", type=int, default=4)
    ap.add_argument("--agreement_tokens", type=int, default=32)
    ap.add_argument("--skip_speed", action="store_true")
    ap.add_argument("--skip_agreement", action="store_true")
    a = ap.parse_args()
    a.work = a.work or os.path.join(a.model, "gguf")
    os.makedirs(a.work, exist_ok=True)
    keys = a.types.split(",")
    for k in keys:
        if k not in PAIRS:
            sys.exit(f"--types: '{k}' (expected some of {','.join(PAIRS)})")
    speeds, agreements = [], []
    for k in keys:
        if not a.skip_speed:
            speeds.append(speed(a, k))
            print(json.dumps(speeds[-1]), flush=True)
    for k in keys:
        if not a.skip_agreement:
            agreements.append(agreement(a, k))
            print(json.dumps(agreements[-1]), flush=True)
    if speeds:
        print(f"\n| pair ({a.prompt_len} + {a.new_tokens} tokens, {a.threads} threads, median of {a.repeat}) | lal prompt "
              "tok/s | llama.cpp prompt tok/s | lal decode tok/s | llama.cpp decode tok/s | lal ÷ llama.cpp (decode) |")
        print("|---|---|---|---|---|---|")
        for s in speeds:
            print(f"| {s['pair']} | {s['lal_prompt_tok_s']:.1f} | {s['llama_prompt_tok_s']:.1f} | "
                  f"{s['lal_decode_tok_s']:.2f} | {s['llama_decode_tok_s']:.2f} | "
                  f"{s['lal_decode_tok_s'] / s['llama_decode_tok_s']:.2f}× |")
    for g in agreements:
        parts = [f"{r['equal_prefix']}/{r['compared']}" +
                 (f" (truth: lal #{r['lal_rank']} -{r['lal_deficit']:.1e}, "
                  f"llama.cpp #{r['llama_rank']} -{r['llama_deficit']:.1e}, "
                  f"epsilon {r['epsilon']:.1e}: {'near-tie' if r['near_tie'] else 'REAL'})" if "epsilon" in r else "")
                 for r in g["prompts"]]
        print(f"- {g['pair']}: equal greedy prefix per prompt {', '.join(parts)} -> "
              f"{'agree except near-ties' if g['agree_except_near_ties'] else 'DISAGREE beyond near-ties'}")


if __name__ == "__main__":
    main()
