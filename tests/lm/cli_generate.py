"""`lal generate` end to end on tiny qwen2 models with a real byte-level tokenizer.json (written by
tests/chat/make_chat_model.py): text streaming, --chat, and command-line errors.

    /usr/bin/python3 tests/lm/cli_generate.py LAL_BINARY WORK_DIR

Checks
  1. The streamed stdout of --prompt equals the tokenizer's decode (`lal detokenize --skip_special_tokens`) of the
     --ids output for the same seed, and is valid UTF-8 (sampled bytes of a random model are often not: the stream
     decoder must then give exactly the U+FFFD replacements of the full decode), for plain and --chat prompts.
  2. Japanese comes out intact when its characters are split across byte tokens: a "successor" model (every layer's
     output projections zeroed so that the logits depend only on the current token, and lm_head wired so that each
     byte of a Japanese text predicts the next one) must print exactly that text, greedy and sampled.
  3. --chat renders the ChatML template: the prompt ids (logged at --log_level debug) are exactly
     <|im_start|>user\\n{text}<|im_end|>\\n<|im_start|>assistant\\n, with no BOS for this tokenizer, and exactly one
     when the tokenizer's post-processor adds one.
  4. Bad input gives a one-line error naming the problem and a non-zero exit status.
"""
import json
import os
import re
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import st_io  # noqa: E402

LAL, WORK = sys.argv[1], sys.argv[2]
MAKE_CHAT_MODEL = os.path.join(HERE, "..", "chat", "make_chat_model.py")
BOS, IM_START, IM_END = 256, 257, 258  # make_chat_model.py's special tokens: <|endoftext|>, <|im_start|>, <|im_end|>
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def lal(*args, expect_rc=0, stdin=None):
    p = subprocess.run([LAL, *args], input=stdin, capture_output=True, timeout=300)
    if (expect_rc == 0) != (p.returncode == 0):
        print(p.stdout.decode(errors="replace")[-2000:], p.stderr.decode(errors="replace")[-2000:])
    check((p.returncode == 0) if expect_rc == 0 else p.returncode != 0,
          f"lal {' '.join(args)[:160]} exited {p.returncode}, expected {'0' if expect_rc == 0 else 'non-zero'}")
    return p


def generate(model, *args):
    return lal("generate", "--model_path", model, "--device", "cpu", *args)


def streamed_text(p):
    out = p.stdout
    check(out.endswith(b"\n"), "lal generate output does not end with a newline")
    try:
        return out[:-1].decode("utf-8")
    except UnicodeDecodeError as e:
        check(False, f"streamed stdout is not valid UTF-8: {e}")
        return out[:-1].decode("utf-8", errors="replace")


def detokenize(model, ids):
    p = lal("detokenize", "--tokenizer", model, "--jsonl", "--skip_special_tokens", stdin=json.dumps(ids).encode())
    return json.loads(p.stdout.decode("utf-8"))


def prompt_ids(p):
    m = re.search(r"prompt ids \(\d+\): (\[[0-9, ]*\])", p.stderr.decode(errors="replace"))
    check(m is not None, "no 'prompt ids' line at --log_level debug")
    return json.loads(m.group(1)) if m else []


def make_model(name):
    d = os.path.join(WORK, name)
    subprocess.run([sys.executable, MAKE_CHAT_MODEL, d], check=True)
    return d


def distinct_byte_text(avoid):
    """Japanese characters (3 UTF-8 bytes each) whose bytes are all distinct and not in `avoid`, so that "next
    byte" is a function of the current byte."""
    used, chars = set(avoid), []
    for ch in "日本語東京大阪文字列漢平仮名片桜丘町駅前":
        b = ch.encode("utf-8")
        if used.isdisjoint(b) and len(set(b)) == len(b):
            chars.append(ch)
            used.update(b)
    return "".join(chars)


def make_successor_model(name, prompt_last_byte, text):
    """A model whose greedy continuation of any prompt ending in `prompt_last_byte` is `text`, then <|im_end|>."""
    d = make_model(name)
    path = os.path.join(d, "model.safetensors")
    w = st_io.load(path)
    for k in list(w):
        if k.endswith("self_attn.o_proj.weight") or k.endswith("mlp.down_proj.weight"):
            w[k] = torch.zeros_like(w[k])  # each layer adds nothing: the final state is the token's embedding
    emb = w["model.embed_tokens.weight"]
    unit = emb / emb.norm(dim=1, keepdim=True)
    chain = [prompt_last_byte] + list(text.encode("utf-8")) + [IM_END]
    head = torch.zeros_like(w["lm_head.weight"])
    for cur, nxt in zip(chain, chain[1:]):
        head[nxt] = 10.0 * unit[cur]  # logit of nxt = 10 * sqrt(E) * cos(e_cur, e_token): largest for token == cur
    w["lm_head.weight"] = head
    st_io.save(path, w)
    return d


os.makedirs(WORK, exist_ok=True)
MODEL = make_model("random")
JAPANESE_PROMPT = "日本語で短く答えてください。東京の天気は？"

# 1. Streamed text == decode(ids) for the same seed: plain and chat, sampled (default temperature) and greedy.
for args in (["--seed", "1"], ["--seed", "2", "--top_k", "40", "--top_p", "0.9"], ["--greedy"],
             ["--seed", "3", "--chat"], ["--greedy", "--chat"]):
    common = ["--prompt", JAPANESE_PROMPT, "--max_new_tokens", "48", *args]
    text = streamed_text(generate(MODEL, *common))
    ids = json.loads(generate(MODEL, *common, "--ids").stdout)
    check(isinstance(ids, list) and 0 < len(ids) <= 48, f"{args}: --ids printed {ids!r}")
    want = detokenize(MODEL, ids)
    check(text == want, f"{args}: streamed {text!r} != decode(ids) {want!r}")
again = json.loads(generate(MODEL, "--prompt", JAPANESE_PROMPT, "--max_new_tokens", "48", "--seed", "1", "--ids").stdout)
other = json.loads(generate(MODEL, "--prompt", JAPANESE_PROMPT, "--max_new_tokens", "48", "--seed", "9", "--ids").stdout)
first = json.loads(generate(MODEL, "--prompt", JAPANESE_PROMPT, "--max_new_tokens", "48", "--seed", "1", "--ids").stdout)
check(again == first, "the same seed gave different ids")
check(other != first, "seeds 1 and 9 gave the same 48 ids")

# 2. Japanese split across byte tokens comes out intact, streamed.
target = distinct_byte_text(avoid=b"\n")
check(len(target) >= 3, f"too few distinct-byte characters: {target!r}")
SUCC = make_successor_model("successor", ord("\n"), target)
for args in (["--greedy"], ["--seed", "5"], ["--greedy", "--chat"], ["--decode_mode", "static", "--greedy"]):
    p = generate(SUCC, "--prompt", "何か言って\n", "--max_new_tokens", "64", *args)
    check(streamed_text(p) == target, f"successor model {args}: printed {p.stdout!r}, expected {target!r}")

# 3. --chat renders ChatML; no BOS unless the post-processor adds one, and then exactly one.
user = "こんにちは、世界"
chatml = [IM_START, *b"user\n", *user.encode(), IM_END, *b"\n", IM_START, *b"assistant\n"]
p = generate(MODEL, "--prompt", user, "--chat", "--greedy", "--max_new_tokens", "2", "--log_level", "debug")
check(prompt_ids(p) == chatml, f"--chat prompt ids {prompt_ids(p)} != ChatML {chatml}")
p = generate(MODEL, "--prompt", user, "--greedy", "--max_new_tokens", "2", "--log_level", "debug")
check(prompt_ids(p) == list(user.encode()), "plain --prompt ids are not the text's bytes")

BOSM = make_model("with_bos")
with open(os.path.join(BOSM, "tokenizer.json"), encoding="utf-8") as f:
    tj = json.load(f)
tj["post_processor"] = {"type": "TemplateProcessing",
                        "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                                   {"Sequence": {"id": "A", "type_id": 0}}],
                        "pair": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                                 {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [BOS],
                                                             "tokens": ["<|endoftext|>"]}}}
with open(os.path.join(BOSM, "tokenizer.json"), "w", encoding="utf-8") as f:
    json.dump(tj, f, ensure_ascii=False)
with open(os.path.join(BOSM, "tokenizer_config.json")) as f:
    tc = json.load(f)
tc["bos_token"] = "<|endoftext|>"
with open(os.path.join(BOSM, "tokenizer_config.json"), "w") as f:
    json.dump(tc, f)
p = generate(BOSM, "--prompt", user, "--chat", "--greedy", "--max_new_tokens", "2", "--log_level", "debug")
check(prompt_ids(p) == [BOS] + chatml, f"--chat with a BOS-adding tokenizer: {prompt_ids(p)}")
p = generate(BOSM, "--prompt", "<|endoftext|>" + user, "--greedy", "--max_new_tokens", "2", "--log_level", "debug")
check(prompt_ids(p) == [BOS] + list(user.encode()), f"a prompt that starts with BOS got another: {prompt_ids(p)}")

# 4. Errors: one line naming the problem, exit status != 0.
ERRORS = [
    ([], "give exactly one of --prompt and --prompt_ids"),
    (["--prompt", "x", "--prompt_ids", "1,2"], "give exactly one of --prompt and --prompt_ids"),
    (["--prompt_ids", "1,x,3"], "'x' is not a token id"),
    (["--prompt_ids", "1,-4"], "'-4' is not a token id"),
    (["--prompt_ids", "1,999999"], "token id 999999 outside the model's vocabulary"),
    (["--prompt_ids", "1,2", "--chat"], "--chat needs --prompt"),
    (["--prompt", "x", "--device", "tpu"], "device 'tpu'"),
    (["--prompt", "x", "--device", "cuda"], "CUDA is not available"),
    (["--prompt", "x", "--dtype", "fp8"], "dtype 'fp8'"),
    (["--prompt", "x", "--decode_mode", "warp"], "decode mode 'warp'"),
]
for args, message in ERRORS:
    if "--device" in args and "cuda" in args and torch.cuda.is_available():
        continue
    cmd = ["generate", "--model_path", MODEL, *args]
    if "--device" not in args:
        cmd += ["--device", "cpu"]
    p = lal(*cmd, expect_rc=1)
    err = p.stderr.decode(errors="replace")
    check(message in err, f"lal {' '.join(cmd[3:])}: stderr lacks {message!r}: {err.strip()[-300:]!r}")
missing = os.path.join(WORK, "no_such_model")
p = lal("generate", "--model_path", missing, "--prompt", "x", expect_rc=1)
check(missing in p.stderr.decode(errors="replace"), "a missing model directory is not named in the error")

print(f"{len(failures)} failure(s)")
sys.exit(1 if failures else 0)
