#!/usr/bin/python3
"""lal and llama.cpp on the same weights, in one call: prompt and decode tokens/s per dtype, and greedy agreement.

    /usr/bin/python3 tests/reference/llama_cpp/bench_vs_llama.py --lal build/bin/lal --model DIR \
        --node_dir DIR_WITH_NODE_MODULES [--work DIR] [--types f32,bf16,int8,int4] [--threads 2] \
        [--prompt_len 128] [--new_tokens 128] [--repeat 3] [--agreement_prompts 4] [--agreement_tokens 32] \
        [--prompts FILE] [--agreement_fa off] [--agreement_kv F32]

DIR is a Qwen2 safetensors checkpoint with tokenizer.json (tests/reference/make_bench_model.py qwen2.5-0.5b DIR
--dtype f32 plus a Qwen tokenizer.json, or a trained one such as models/lal-demo). --node_dir holds node_modules with
node-llama-cpp 3.21.1 (`npm i -E node-llama-cpp@3.21.1` beside package.json here). Pairs: lal float32 / llama.cpp
F32, bfloat16 / BF16, int8 / Q8_0, int4 / Q4_0; st_to_gguf.py writes the GGUF files (int8/int4: the very weights lal
computes with, see its docstring).

Speed: each engine runs `--repeat` timed generations after one warm-up, in its own process, at `--threads` threads,
one dtype after the other, llama.cpp with its default context settings (flash attention auto, F16 KV cache);
medians are reported.

Agreement: `--agreement_prompts` random prompts of 16 ids, or the lines of `--prompts` (text, tokenized with
`lal tokenize` and the model's tokenizer.json); `--agreement_tokens` greedy tokens from both engines. llama.cpp runs
with `--agreement_fa off --agreement_kv F32` by default: its flash attention on the CPU is not float32 even with an
F32 cache (measured: 1.5e-3 to 3.4e-3 off the float32 logits on the random 0.5B weights, 2e-6 with it off), and lal's
attention is float32 (its cache holds float32, or bfloat16 at --dtype bfloat16). At the first position where the ids
differ, judge() takes the float32 logits of exactly the weights both engines hold ("truth": stored_weights.py, `lal
generate --dtype float32 --logits`) and llama.cpp's own log-probabilities there (llama_logprobs.mjs). The verdict
uses issue 16's rule: a difference is a near-tie only when both tokens lie within 1e-3 (NEAR_TIE) of the truth's
best logit. Reported beside it, labelled as our looser rule and not the verdict: the dtype-wide epsilon (the largest
deviation from the truth of logits with every activation rounded to bfloat16, at that position).
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


def node_script(a, name):
    # The scripts import node-llama-cpp, which ES modules find in a node_modules folder beside the script (not
    # through NODE_PATH): run a copy in --work with node_modules linked there.
    script = os.path.join(a.work, name)
    with open(os.path.join(HERE, name)) as src, open(script, "w") as dst:
        dst.write(src.read())
    link = os.path.join(a.work, "node_modules")
    if not os.path.exists(link):
        os.symlink(os.path.abspath(os.path.join(a.node_dir, "node_modules")), link)
    return script


def llama(a, gguf, *extra):
    return last_json(run(["node", node_script(a, "bench_llama.mjs"), gguf, "--threads", str(a.threads), *extra],
                         cwd=a.work))


def llama_logprobs(a, gguf, ids):
    """llama.cpp's log-probabilities of the next token after `ids` (its agreement settings), {token: logprob}."""
    out = run(["node", node_script(a, "llama_logprobs.mjs"), gguf, "--ids", ",".join(map(str, ids)), "--kv",
               a.agreement_kv, "--fa", a.agreement_fa, "--threads", str(a.threads), "--top", "64"], cwd=a.work)
    return {int(k): v for k, v in last_json(out)["logprobs"].items()}


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
    """At a first difference after `ids`: both tokens' rank and deficit in the float32 logits of the stored weights
    ("truth"), the truth's and llama.cpp's own top-2 gaps, and the verdict by issue 16's rule (near-tie: both tokens
    within NEAR_TIE of the truth's best logit). `dtype_epsilon` (the largest deviation from the truth, at this position,
    of logits with every activation rounded to bfloat16: LibTorch's bfloat16 ops on the stored weights) and
    `near_tie_by_dtype_epsilon` are reported beside it for bf16/int8/int4: our looser rule, not the verdict."""
    model = stored_model(a, key)
    truth = last_logits(a, model, "float32", ids)
    top = max(truth)
    second = max(v for i, v in enumerate(truth) if i != truth.index(top))
    theirs = llama_logprobs(a, gguf_for(a, PAIRS[key][1]), ids)
    ranked = sorted(theirs, key=lambda t: -theirs[t])
    r = {"truth_top2_gap": top - second, "lal_deficit": top - truth[lal_token],
         "llama_deficit": top - truth[llama_token],
         "lal_rank": 1 + sum(v > truth[lal_token] for v in truth),
         "llama_rank": 1 + sum(v > truth[llama_token] for v in truth),
         "llama_own_top2_gap": theirs[ranked[0]] - theirs[ranked[1]],
         "llama_own_lal_token_deficit": theirs[ranked[0]] - theirs[lal_token] if lal_token in theirs else None}
    r["near_tie"] = r["lal_deficit"] < NEAR_TIE and r["llama_deficit"] < NEAR_TIE
    if key != "f32":
        rounded = last_logits(a, model, "bfloat16", ids)
        r["dtype_epsilon"] = max(abs(x - y) for x, y in zip(rounded, truth))
        r["near_tie_by_dtype_epsilon"] = r["lal_deficit"] <= r["dtype_epsilon"] and \
            r["llama_deficit"] <= r["dtype_epsilon"]
    return r


def all_logits(a, model, dtype, ids):
    out = run([a.lal, "generate", "--model_path", model, "--device", "cpu", "--dtype", dtype, "--logits",
               "--prompt_ids", ",".join(map(str, ids))], env=lal_env(a))
    return json.loads(out)["logits"]


def forced_agreement(a, key):
    """Teacher-forced: along each text of --forced, the next-token argmax of both engines at every position (lal: one
    forward over the text; llama.cpp: the prompt's first token, then one decode step per token), each difference
    judged like judge() on the truth's logits at that position (issue 16's 1e-3 rule)."""
    dtype, gtype = PAIRS[key]
    gguf = gguf_for(a, gtype)
    truth_model = stored_model(a, key)
    positions = differences = near_ties = 0
    worst = []
    for ids in text_ids(a, a.forced):
        mine = all_logits(a, a.model, dtype, ids)
        truth = all_logits(a, truth_model, "float32", ids)
        out = run(["node", node_script(a, "llama_logprobs.mjs"), gguf, "--ids", ",".join(map(str, ids)), "--from", "0",
                   "--kv", a.agreement_kv, "--fa", a.agreement_fa, "--threads", str(a.threads), "--top", "2"],
                  cwd=a.work)
        for line in (json.loads(ln) for ln in out.splitlines() if ln.startswith("{")):
            p = line["position"]
            theirs = max(line["logprobs"], key=lambda t: line["logprobs"][t])
            lal_top = max(range(len(mine[p])), key=lambda i: mine[p][i])
            positions += 1
            if int(theirs) == lal_top:
                continue
            differences += 1
            t = truth[p]
            best = max(t)
            lal_def, llama_def = best - t[lal_top], best - t[int(theirs)]
            near_ties += lal_def < NEAR_TIE and llama_def < NEAR_TIE
            worst.append(max(lal_def, llama_def))
    return {"pair": key, "model": a.model, "forced_positions": positions, "forced_differences": differences,
            "forced_near_ties": near_ties, "forced_largest_deficit": max(worst) if worst else 0.0}


def text_ids(a, path):
    with open(path) as f:
        lines = [ln.rstrip("\n") for ln in f if ln.strip()]
    tok = os.path.join(a.model, "tokenizer.json")
    out = []
    for ln in lines:
        ids = run([a.lal, "tokenize", "--tokenizer", tok], input=ln).split()
        if not ids:
            sys.exit(f"'{ln}' gives no tokens")
        out.append([int(t) for t in ids])
    return out


def agreement_prompts(a):
    """Lists of prompt ids: the lines of --prompts tokenized with the model's tokenizer, else random ids."""
    if a.prompts:
        return text_ids(a, a.prompts)
    rng = random.Random(1234)
    return [[rng.randrange(151643) for _ in range(16)] for _ in range(a.agreement_prompts)]


def agreement(a, key):
    dtype, gtype = PAIRS[key]
    gguf = gguf_for(a, gtype)
    results = []
    for p, prompt in enumerate(agreement_prompts(a)):
        ids = ",".join(map(str, prompt))
        n = str(a.agreement_tokens)
        # lal stops after an end-of-sequence token (its ids end with it); llama.cpp's run goes on past it: the ids
        # are compared up to the shorter, so an end of generation is compared as a token and nothing after it.
        mine = json.loads(run([a.lal, "generate", "--model_path", a.model, "--device", "cpu", "--dtype", dtype,
                               "--prompt_ids", ids, "--greedy", "--ids", "--max_new_tokens", n], env=lal_env(a)))
        theirs = llama(a, gguf, "--prompt_ids", ids, "--new_tokens", n, "--warmup", "0", "--repeat", "1", "--ids",
                       "--fa", a.agreement_fa, "--kv", a.agreement_kv)["tokens"]
        n = min(len(mine), len(theirs))
        k = next((i for i in range(n) if mine[i] != theirs[i]), n)
        r = {"prompt": p, "compared": n, "equal_prefix": k}
        if k < n:
            r["lal"], r["llama"] = mine[k], theirs[k]
            r.update(judge(a, key, prompt + mine[:k], mine[k], theirs[k]))
        results.append(r)
    ok = all(r["equal_prefix"] == r["compared"] or r["near_tie"] for r in results)
    loose = all(r["equal_prefix"] == r["compared"] or r.get("near_tie_by_dtype_epsilon", r["near_tie"])
                for r in results)
    return {"pair": key, "model": a.model, "llama_settings": {"flash_attention": a.agreement_fa, "kv": a.agreement_kv},
            "agree_except_near_ties": ok, "agree_by_dtype_epsilon": loose, "prompts": results}


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
    ap.add_argument("--prompts", default=None, help="agreement prompts: a text file, one prompt per line")
    ap.add_argument("--forced", default=None,
                    help="also a teacher-forced check along the texts of this file (one per line): both engines' "
                         "next-token argmax at every position")
    ap.add_argument("--agreement_fa", default="off", choices=["auto", "on", "off"],
                    help="llama.cpp's flash attention in the agreement runs (off: float32 attention, as lal's)")
    ap.add_argument("--agreement_kv", default="F32", help="llama.cpp's KV cache type in the agreement runs")
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
    forced = []
    for k in keys:
        if not a.skip_agreement:
            agreements.append(agreement(a, k))
            print(json.dumps(agreements[-1]), flush=True)
        if a.forced:
            forced.append(forced_agreement(a, k))
            print(json.dumps(forced[-1]), flush=True)
    if speeds:
        print(f"\n| pair ({a.prompt_len} + {a.new_tokens} tokens, {a.threads} threads, median of {a.repeat}) | lal prompt "
              "tok/s | llama.cpp prompt tok/s | lal decode tok/s | llama.cpp decode tok/s | lal ÷ llama.cpp (decode) |")
        print("|---|---|---|---|---|---|")
        for s in speeds:
            print(f"| {s['pair']} | {s['lal_prompt_tok_s']:.1f} | {s['llama_prompt_tok_s']:.1f} | "
                  f"{s['lal_decode_tok_s']:.2f} | {s['llama_decode_tok_s']:.2f} | "
                  f"{s['lal_decode_tok_s'] / s['llama_decode_tok_s']:.2f}× |")
    for g in agreements:
        parts = []
        for r in g["prompts"]:
            part = f"{r['equal_prefix']}/{r['compared']}"
            if "near_tie" in r:
                part += (f" (truth gap {r['truth_top2_gap']:.1e}: lal #{r['lal_rank']} -{r['lal_deficit']:.1e}, "
                         f"llama.cpp #{r['llama_rank']} -{r['llama_deficit']:.1e}; llama.cpp's own gap "
                         f"{r['llama_own_top2_gap']:.1e}: {'near-tie' if r['near_tie'] else 'DIFFERENCE'}"
                         + (f"; dtype epsilon {r['dtype_epsilon']:.1e}" if "dtype_epsilon" in r else "") + ")")
            parts.append(part)
        print(f"- {g['pair']}: equal greedy prefix per prompt {', '.join(parts)} -> by issue 16's 1e-3 rule: "
              f"{'agree except near-ties' if g['agree_except_near_ties'] else 'DISAGREE beyond near-ties'}"
              + ("" if g["pair"] == "f32" else f" (by the dtype-wide epsilon, not the verdict: "
                 f"{'agree' if g['agree_by_dtype_epsilon'] else 'disagree'})"))


    for f in forced:
        print(f"- {f['pair']} teacher-forced: {f['forced_positions'] - f['forced_differences']}/{f['forced_positions']} "
              f"positions with the same argmax; {f['forced_differences']} differences, {f['forced_near_ties']} of them "
              f"near-ties by the 1e-3 rule (largest truth deficit {f['forced_largest_deficit']:.1e})")


if __name__ == "__main__":
    main()
