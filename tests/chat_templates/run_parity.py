#!/usr/bin/env python3
"""`lal render` against Jinja2 with transformers' chat-template environment, byte for byte.

For every template in templates.json and every conversation in conversations/, with several option sets, this
renders the prompt twice:
  * reference: Debian's python3-jinja2, set up as transformers' apply_chat_template sets it up (reference_env.py);
  * lal:       `lal render --model_path DIR ...` where DIR holds the template (tokenizer_config.json
               "chat_template", or chat_template.jinja for every other template) and the model's special tokens.
Both must produce the same bytes, or both must refuse (raise_exception, an undefined value, a type error ...).

    run_parity.py --lal build/bin/lal [--write_expected FILE]

--write_expected stores every case and lal's output as JSON, for transformers_parity.py (run where transformers is
installed, e.g. on the GPU machine). Exit status 1 on any mismatch.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference_env  # noqa: E402

TOKEN_KEYS = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]

# (name, lal flags, reference options)
OPTION_SETS = {
    "default": ([], dict(add_generation_prompt=True)),
    "no_generation_prompt": (["--no_generation_prompt"], dict(add_generation_prompt=False)),
    "enable_thinking": (["--enable_thinking"], dict(add_generation_prompt=True, enable_thinking=True)),
    "disable_thinking": (["--disable_thinking"], dict(add_generation_prompt=True, enable_thinking=False)),
    "continue_final_message": (["--continue_final_message"],
                               dict(add_generation_prompt=False, continue_final_message=True)),
}


def options_for(conversation_name):
    if "assistant-prefix" in conversation_name:
        return ["continue_final_message", "no_generation_prompt"]
    if "thinking" in conversation_name or "single-user" in conversation_name:
        return ["default", "no_generation_prompt", "enable_thinking", "disable_thinking"]
    return ["default", "no_generation_prompt"]


def load_cases():
    with open(os.path.join(HERE, "templates.json"), encoding="utf-8") as f:
        templates = json.load(f)["templates"]
    conversations = []
    conv_dir = os.path.join(HERE, "conversations")
    for name in sorted(os.listdir(conv_dir)):
        if name.endswith(".json"):
            with open(os.path.join(conv_dir, name), encoding="utf-8") as f:
                conversations.append((name, f.read()))
    for t in templates:
        with open(os.path.join(HERE, "templates", t["file"]), encoding="utf-8", newline="") as f:
            t["source_text"] = f.read()
    return templates, conversations


def make_model_dir(root, index, t):
    d = os.path.join(root, "model%02d" % index)
    os.makedirs(d)
    config = {k: t[k] for k in TOKEN_KEYS if k in t}
    if index % 2 == 0:
        config["chat_template"] = t["source_text"]
    else:
        with open(os.path.join(d, "chat_template.jinja"), "w", encoding="utf-8", newline="") as f:
            f.write(t["source_text"])
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False)
    return d


def run_lal(lal, model_dir, flags, conversation_text):
    """One conversation, as a user runs it: the prompt on stdout, or an error and a non-zero exit."""
    p = subprocess.run([lal, "render", "--model_path", model_dir] + flags, input=conversation_text.encode("utf-8"),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode == 0:
        return True, p.stdout.decode("utf-8")
    return False, p.stderr.decode("utf-8", "replace").strip()


def run_lal_jsonl(lal, model_dir, flags, conversation_texts):
    """Many conversations in one process (--jsonl): [(ok, prompt or error)]."""
    lines = "".join(json.dumps(json.loads(t), ensure_ascii=False) + "\n" for t in conversation_texts)
    p = subprocess.run([lal, "render", "--jsonl", "--model_path", model_dir] + flags, input=lines.encode("utf-8"),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = [json.loads(l) for l in p.stdout.decode("utf-8").splitlines()]
    if len(out) != len(conversation_texts):
        raise RuntimeError("lal render --jsonl returned %d lines for %d: %s" % (len(out), len(conversation_texts),
                                                                               p.stderr.decode("utf-8", "replace")))
    return [(True, o["prompt"]) if "prompt" in o else (False, o["error"]) for o in out]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lal", required=True)
    ap.add_argument("--write_expected")
    args = ap.parse_args()
    templates, conversations = load_cases()
    failures, rendered, refused, expected = 0, 0, 0, []
    with tempfile.TemporaryDirectory() as root:
        for index, t in enumerate(templates):
            model_dir = make_model_dir(root, index, t)
            tokens = {k: t[k] for k in TOKEN_KEYS if k in t}
            # Every option set in one `lal render --jsonl` process; the first template's cases also one by one,
            # as a user runs the command (the prompt on stdout, no newline added).
            results = {}
            for option_name in OPTION_SETS:
                names = [(n, t_) for n, t_ in conversations if option_name in options_for(n)]
                flags = OPTION_SETS[option_name][0]
                for (n, t_), r in zip(names, run_lal_jsonl(args.lal, model_dir, flags, [x[1] for x in names])):
                    results[(n, option_name)] = r
                    if index == 0:
                        single = run_lal(args.lal, model_dir, flags, t_)
                        if single[0] != r[0] or (r[0] and single[1] != r[1]):
                            failures += 1
                            print("MISMATCH     --jsonl and a single run differ: %s [%s]" % (n, option_name))
            for conv_name, conv_text in conversations:
                conversation = json.loads(conv_text)
                for option_name in options_for(conv_name):
                    opts = OPTION_SETS[option_name][1]
                    ref_ok, ref = reference_env.render(t["source_text"], conversation, tokens, **opts)
                    lal_ok, out = results[(conv_name, option_name)]
                    case = "%s × %s [%s]" % (t["file"], conv_name, option_name)
                    expected.append({"template": t["file"], "conversation": conv_name, "options": opts,
                                     "tokens": tokens, "ok": lal_ok, "text": out if lal_ok else None})
                    if ref_ok and lal_ok and ref == out:
                        rendered += 1
                    elif not ref_ok and not lal_ok:
                        refused += 1
                        print("both refuse  %s\n  jinja2: %s\n  lal:    %s" % (case, ref, out))
                    else:
                        failures += 1
                        print("MISMATCH     %s" % case)
                        print("  jinja2: %s" % (json.dumps(ref, ensure_ascii=False) if ref_ok else "ERROR " + ref))
                        print("  lal:    %s" % (json.dumps(out, ensure_ascii=False) if lal_ok else "ERROR " + out))
    print("\n%d templates × %d conversations: %d cases identical, %d refused by both, %d mismatches"
          % (len(templates), len(conversations), rendered, refused, failures))
    if args.write_expected:
        with open(args.write_expected, "w", encoding="utf-8") as f:
            json.dump({"templates": {t["file"]: t["source_text"] for t in templates}, "cases": expected}, f,
                      ensure_ascii=False, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
