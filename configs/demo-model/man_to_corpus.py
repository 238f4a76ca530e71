"""Turn Debian's Japanese manual pages (package manpages-ja, /usr/share/man/ja) into a training corpus for the
bundled demo model:

    python3 configs/demo-model/man_to_corpus.py /usr/share/man/ja OUT_DIR

OUT_DIR/man-ja.txt    the pages' running text, one paragraph per blank-line-separated block (roff stripped)
OUT_DIR/man-ja-qa.jsonl   {"question": "「ls」コマンドは何をするものですか？", "answer": "ls は、ディレクトリの内容を..."}
                          from each page's 名前 (NAME) line, so the chat format is learnt too
Pure standard library; deterministic (pages in sorted order).
"""
import gzip
import json
import os
import re
import sys

ESCAPES = [(r"\\f\[[^\]]*\]", ""), (r"\\f\(..", ""), (r"\\f.", ""), (r"\\s[+-]?\d+", ""), (r"\\\(aq", "'"),
           (r"\\\(dq", '"'), (r"\\\(em", "—"), (r"\\\(en", "–"), (r"\\\(bu", "・"), (r"\\\(co", "©"),
           (r"\\\(..", ""), (r"\\\*\(..", ""), (r"\\\*.", ""), (r"\\-", "-"), (r"\\&", ""), (r"\\e", "\\\\"),
           (r"\\ ", " "), (r"\\\|", ""), (r"\\\^", ""), (r"\\c", ""), (r"\\/", ""), (r"\\,", ""), (r"\\%", ""),
           (r"\\\"", "")]


def clean(line):
    for pat, rep in ESCAPES:
        line = re.sub(pat, rep, line)
    return line.replace("\\\\", "\\").strip()


def page_text(raw):
    paras, cur, name = [], [], None
    in_name = False
    for line in raw.splitlines():
        if line.startswith(".\\\"") or line.startswith("'\\\""):
            continue
        if line.startswith(".") or line.startswith("'"):
            req = line[1:].split(None, 1)
            macro = req[0] if req else ""
            arg = clean(req[1]) if len(req) > 1 else ""
            if macro in ("SH", "SS", "PP", "P", "LP", "TP", "IP", "HP", "sp", "br", "RS", "RE", "nf", "fi"):
                if cur:
                    paras.append(" ".join(cur))
                    cur = []
                if macro == "SH":
                    in_name = arg.strip('"') in ("名前", "NAME", "名称")
                if macro in ("SH", "SS") and arg:
                    paras.append(arg.strip('"'))
            if macro in ("B", "I", "BR", "IR", "RB", "RI", "BI", "IB") and arg:
                cur.append(arg.replace('"', ""))
            continue
        text = clean(line)
        if text:
            if in_name and name is None:
                name = text
            cur.append(text)
    if cur:
        paras.append(" ".join(cur))
    return [p for p in paras if p.strip()], name


def main(src, out):
    os.makedirs(out, exist_ok=True)
    files = []
    for root, _, names in os.walk(src):
        files += [os.path.join(root, n) for n in names if n.endswith(".gz")]
    texts, qa, seen = [], [], set()
    for f in sorted(files):
        try:
            raw = gzip.open(f, "rt", encoding="utf-8", errors="strict").read()
        except (UnicodeDecodeError, OSError):
            continue
        if raw.startswith(".so "):
            continue  # a link to another page
        paras, name = page_text(raw)
        texts.append("\n\n".join(paras))
        m = re.match(r"^(\S+(?:\s*,\s*\S+)*)\s+-+\s+(.+)$", name or "")
        if m and m.group(1) not in seen and re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", m.group(2)):
            seen.add(m.group(1))
            cmd, desc = m.group(1), m.group(2).rstrip("。 ")
            qa.append({"question": f"「{cmd}」は何をするものですか？", "answer": f"{cmd} は、{desc}。"})
    with open(os.path.join(out, "man-ja.txt"), "w", encoding="utf-8") as f:
        f.write("\n\n".join(texts) + "\n")
    with open(os.path.join(out, "man-ja-qa.jsonl"), "w", encoding="utf-8") as f:
        for r in qa:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{len(texts)} pages, {sum(len(t) for t in texts)} characters, {len(qa)} question/answer pairs -> {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: man_to_corpus.py MAN_DIR OUT_DIR")
    main(sys.argv[1], sys.argv[2])
