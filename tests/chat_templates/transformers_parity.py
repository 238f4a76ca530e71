#!/usr/bin/env python3
"""transformers' own apply_chat_template against lal's outputs (needs transformers; run on the GPU machine).

    run_parity.py --lal build/bin/lal --write_expected expected.json      # here: lal's outputs, every case
    transformers_parity.py expected.json [result.json]                    # there: transformers renders the same

Each case is rendered with a PreTrainedTokenizerFast that carries the template and the model's special tokens
(a one-word vocabulary is enough: only the text is compared, tokenize=False). Prints a summary; exit status 1 on any
mismatch. Both refusing (raise_exception, a type error in the template ...) counts as agreement, as in run_parity.py.
"""
import json
import sys

import transformers
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast


def make_tokenizer(template, tokens):
    vocab = {"<unk>": 0}
    for v in tokens.values():
        vocab.setdefault(v, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=core, chat_template=template, **tokens)


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        data = json.load(f)
    templates, cases = data["templates"], data["cases"]
    conversations = {}
    same = both_refuse = 0
    mismatches = []
    tokenizers = {}
    for case in cases:
        key = (case["template"], json.dumps(case["tokens"], sort_keys=True))
        if key not in tokenizers:
            tokenizers[key] = make_tokenizer(templates[case["template"]], case["tokens"])
        tok = tokenizers[key]
        if case["conversation"] not in conversations:
            with open(case["conversation_path"] if "conversation_path" in case else "conversations/" +
                      case["conversation"], encoding="utf-8") as f:
                conversations[case["conversation"]] = json.load(f)
        conv = conversations[case["conversation"]]
        kwargs = {k: v for k, v in conv.items() if k not in ("messages", "tools", "documents")}
        opts = dict(case["options"])
        if "enable_thinking" in opts:
            kwargs["enable_thinking"] = opts.pop("enable_thinking")
        try:
            text = tok.apply_chat_template(conv["messages"], tools=conv.get("tools"), documents=conv.get("documents"),
                                           tokenize=False, **opts, **kwargs)
            ok = True
        except Exception as e:  # noqa: BLE001
            ok, text = False, "%s: %s" % (type(e).__name__, e)
        if ok and case["ok"] and text == case["text"]:
            same += 1
        elif not ok and not case["ok"]:
            both_refuse += 1
        else:
            mismatches.append({"case": "%s × %s %s" % (case["template"], case["conversation"], case["options"]),
                               "transformers": text if ok else "ERROR " + text,
                               "lal": case["text"] if case["ok"] else "ERROR"})
    summary = {"transformers": transformers.__version__, "cases": len(cases), "identical": same,
               "both_refuse": both_refuse, "mismatches": len(mismatches),
               "templates": len(templates), "conversations": len(conversations)}
    print(json.dumps(summary))
    for m in mismatches[:40]:
        print(json.dumps(m, ensure_ascii=False))
    if len(sys.argv) > 2:
        with open(sys.argv[2], "w", encoding="utf-8") as f:
            json.dump({"summary": summary, "mismatches": mismatches}, f, ensure_ascii=False, indent=1)
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
