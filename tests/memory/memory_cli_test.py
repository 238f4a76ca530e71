"""`lal memory`: list, search, export → import round trip, forget that leaves no trace in the file's bytes (and
leaves other users untouched), stats, and bad input (malformed JSONL with its line number, unknown user, corrupt
or locked database) with clear errors and nothing lost.

    /usr/bin/python3 tests/memory/memory_cli_test.py LAL_BINARY WORK_DIR
"""
import json
import os
import sqlite3
import subprocess
import sys

LAL, WORK = sys.argv[1], sys.argv[2]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def lal(*args, expect=0, stdin=None):
    p = subprocess.run([LAL, "memory", *args], capture_output=True, text=True, input=stdin, timeout=300)
    if p.returncode != expect:
        print("$ lal memory", " ".join(args), "\n", p.stdout[-2000:], p.stderr[-2000:])
    check(p.returncode == expect, f"lal memory {' '.join(args)} exited {p.returncode}, expected {expect}")
    return p


def fresh(name):
    path = os.path.join(WORK, name)
    for suffix in ("", "-wal", "-shm", ".pending.jsonl"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return path


def file_bytes(db):
    data = b""
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            with open(db + suffix, "rb") as f:
                data += f.read()
    return data


os.makedirs(WORK, exist_ok=True)
T = 1_767_225_600 * 10**9
rows = [
    {"tier": "long_term", "id": 1, "user": "alice", "kind": "episodic", "text": "私の名前はアリス太郎です。好きな食べ物はカレーです。",
     "answer": "よろしくね", "importance": 1.0, "strategy": "deep", "created_ns": T, "use_count": 1, "recent_uses": [T]},
    {"tier": "long_term", "id": 2, "user": "alice", "kind": "semantic", "text": "私の名前はアリス太郎です。", "importance": 1.0,
     "created_ns": T, "use_count": 1, "recent_uses": [T], "slot": "name", "source_id": 1},
    {"tier": "long_term", "id": 3, "user": "alice", "kind": "semantic", "text": "東京に住んでいます。", "importance": 0.7,
     "created_ns": T, "use_count": 2, "recent_uses": [T, T + 5], "slot": "residence", "superseded_by": 4},
    {"tier": "long_term", "id": 4, "user": "alice", "kind": "semantic", "text": "大阪に引っ越しました。", "importance": 0.7,
     "created_ns": T + 10**12, "use_count": 1, "recent_uses": [T + 10**12], "slot": "residence"},
    {"tier": "short_term", "user": "alice", "session": "s1", "text": "週末はアリス山に登る予定です。", "answer": "",
     "importance": 0.55, "created_ns": T + 2 * 10**12, "recalls": 0},
    {"tier": "long_term", "id": 5, "user": "bob", "kind": "episodic", "text": "ボブの猫はミケという名前です。", "answer": "かわいい",
     "importance": 0.6, "created_ns": T, "use_count": 1, "recent_uses": [T]},
]
src = os.path.join(WORK, "src.jsonl")
with open(src, "w", encoding="utf-8") as f:
    for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")

db = fresh("m.db")
lal("--memory_db", db, "import", src)

# list / search / stats
out = lal("--memory_db", db, "--user", "alice", "list").stdout
check("カレー" in out and "週末はアリス山" in out and "ミケ" not in out, f"list shows alice's memories only: {out}")
js = [json.loads(l) for l in lal("--memory_db", db, "--user", "alice", "list", "--json").stdout.splitlines()]
check(len(js) == 5, f"list --json: 5 rows for alice, got {len(js)}")
out = lal("--memory_db", db, "--user", "alice", "list", "--tier", "short_term").stdout
check("アリス山" in out and "カレー" not in out, f"--tier short_term: {out}")
out = lal("--memory_db", db, "--user", "alice", "search", "どこに住んでいますか？", "--k", "3").stdout
check(out.startswith("1. #4") and "以前: 東京に住んでいます。" in out, f"search: newest residence first with history: {out}")
check("score" in out and "bm25" in out, "search shows scores")
out = lal("--memory_db", db, "stats").stdout
check("alice: 1 episodes, 3 facts (1 superseded" in out and "bob: 1 episodes" in out, f"stats: {out}")

# export → import into an empty file → export: the same lines
exp1 = os.path.join(WORK, "alice1.jsonl")
exp2 = os.path.join(WORK, "alice2.jsonl")
lal("--memory_db", db, "--user", "alice", "export", exp1)
db2 = fresh("m2.db")
lal("--memory_db", db2, "import", exp1)
lal("--memory_db", db2, "--user", "alice", "export", exp2)
with open(exp1, encoding="utf-8") as a, open(exp2, encoding="utf-8") as b:
    check(a.read() == b.read(), "export → import → export does not round-trip exactly")

# malformed input: the line number, nothing imported
bad = os.path.join(WORK, "bad.jsonl")
with open(bad, "w", encoding="utf-8") as f:
    f.write(json.dumps(rows[0], ensure_ascii=False) + "\n")
    f.write(json.dumps(rows[5], ensure_ascii=False) + "\n")
    f.write('{"tier": "long_term", "user": "alice", "kind": "episodic", "text": \n')
db3 = fresh("m3.db")
p = lal("--memory_db", db3, "import", bad, expect=1)
check("bad.jsonl:3:" in p.stderr and "nothing was imported" in p.stderr, f"malformed line: {p.stderr}")
with open(bad, "w", encoding="utf-8") as f:
    f.write(json.dumps(dict(rows[0], importance=7), ensure_ascii=False) + "\n")
p = lal("--memory_db", db3, "import", bad, expect=1)
check("bad.jsonl:1:" in p.stderr and "importance" in p.stderr, f"out-of-range value: {p.stderr}")
with open(bad, "w", encoding="utf-8") as f:
    f.write(json.dumps(dict(rows[0], strategy="fast"), ensure_ascii=False) + "\n")
p = lal("--memory_db", db3, "import", bad, expect=1)
check("bad.jsonl:1:" in p.stderr and "unknown strategy 'fast' (expected direct or deep)" in p.stderr,
      f"unknown strategy: {p.stderr}")
check(sqlite3.connect(db3).execute("SELECT count(*) FROM long_term_memories").fetchone()[0] == 0,
      "a failed import wrote something")
# The strategy column keeps the name earlier versions wrote ('' for none).
check(sqlite3.connect(db).execute("SELECT group_concat(strategy, '|') FROM long_term_memories WHERE id IN (1, 2)")
      .fetchone()[0] == "deep|", "strategy column spelling")
p = lal("--memory_db", db, "--user", "carol", "list", expect=1)
check("user 'carol' has no memories" in p.stderr and "alice, bob" in p.stderr, f"unknown user: {p.stderr}")
p = lal("--memory_db", db, "--user", "alice", "forget", "999", expect=1)
check("no memory #999" in p.stderr, f"unknown id: {p.stderr}")
p = lal("--memory_db", db, "--user", "alice", "forget", expect=2)
check("exactly one of" in p.stderr, f"forget without a target: {p.stderr}")
p = lal("--memory_db", db, "--user", "alice", "frobnicate", expect=2)
check("unknown action" in p.stderr, f"unknown action: {p.stderr}")

# a locked database: a clear error, nothing changed
other = sqlite3.connect(db, timeout=0, isolation_level=None)
other.execute("BEGIN IMMEDIATE")
p = lal("--memory_db", db, "--busy_timeout_ms", "100", "--user", "alice", "forget", "--all", expect=1)
check("locked" in p.stderr and db in p.stderr, f"locked database: {p.stderr}")
other.execute("ROLLBACK")
other.close()
check("カレー" in lal("--memory_db", db, "--user", "alice", "list").stdout, "a refused forget lost memories")

# a corrupt database: refused, untouched
corrupt = fresh("corrupt.db")
with open(corrupt, "wb") as f:
    f.write(b"not a database at all " * 200)
p = lal("--memory_db", corrupt, "--user", "alice", "list", expect=1)
check("corrupt.db" in p.stderr and "damaged" in p.stderr or "not a SQLite" in p.stderr, f"corrupt: {p.stderr}")
with open(corrupt, "rb") as f:
    check(f.read() == b"not a database at all " * 200, "the corrupt file was modified")

# forget: one id (with the facts stated in it), --match, then --all: no trace of alice in the files, bob untouched
bob_before = lal("--memory_db", db, "--user", "bob", "list", "--json").stdout
out = lal("--memory_db", db, "--user", "alice", "forget", "1").stdout
check("forgot 2 memories" in out, f"forget 1 takes the fact stated in episode 1 along: {out}")
check("アリス太郎".encode() not in file_bytes(db), "forget ID left the text in the file")
lal("--memory_db", db, "--user", "alice", "forget", "--match", "大阪")
left = lal("--memory_db", db, "--user", "alice", "list").stdout
check("大阪" not in left and "東京に住んでいます。" in left, f"forget --match: {left}")
check("superseded" not in left, "a fact whose newer value was forgotten is current again")
lal("--memory_db", db, "--user", "alice", "forget", "--all")
raw = file_bytes(db)
for text in ("アリス", "カレー", "東京に住んで", "大阪", "週末はアリス山"):
    check(text.encode() not in raw, f"'{text}' is still in the database files after forget --all")
check(b"alice" not in raw, "the user name alice is still in the database files")
check(lal("--memory_db", db, "--user", "bob", "list", "--json").stdout == bob_before, "bob's memories changed")
p = lal("--memory_db", db, "--user", "alice", "list", expect=1)
check("has no memories" in p.stderr, "alice still has memories")

print("memory cli:", "FAILED" if failures else "ok", f"({len(failures)} failures)")
sys.exit(1 if failures else 0)
