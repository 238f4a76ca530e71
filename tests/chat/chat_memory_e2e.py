"""Issue 9's done-when, end to end on a tiny real model: what a user says once is recalled by the next process —
after a normal exit, after SIGKILL right after the answer, and after SIGTERM — and recall shows each memory once.

    /usr/bin/python3 tests/chat/chat_memory_e2e.py LAL_BINARY WORK_DIR
"""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

LAL, WORK = sys.argv[1], sys.argv[2]
HERE = os.path.dirname(os.path.abspath(__file__))
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def fresh(name):
    path = os.path.join(WORK, name)
    for suffix in ("", "-wal", "-shm", ".pending.jsonl"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return path


def args(db, user="alice"):
    return [LAL, "chat", "--model_path", MODEL, "--seed", "7", "--output", "jsonl", "--memory_db", db, "--user", user]


def chat(db, line, user="alice"):
    p = subprocess.run(args(db, user), input=line + "\n", capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        print(p.stdout[-2000:], p.stderr[-2000:])
    check(p.returncode == 0, f"lal chat exited {p.returncode}")
    return [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]


def recalled(events):
    return [e["text"] for e in events if e.get("stage") == "recall" and e.get("kind") == "memory"]


def until_answered(db, lines, user="alice"):
    """Start lal chat, send `lines` one at a time, wait for each turn's turn_done event; return the live process."""
    proc = subprocess.Popen(args(db, user), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    for line in lines:
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        deadline = time.time() + 300
        while time.time() < deadline:
            out = proc.stdout.readline()
            if not out:
                break
            if '"turn_done"' in out:
                break
    return proc


def journaled(db, n):
    """Wait (up to 60 s) until the short-term journal holds n entries: the turn's episode has been written, which
    happens when the turn is done, just after its answer was shown."""
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with sqlite3.connect(db, timeout=5) as c:
                if c.execute("SELECT count(*) FROM short_term_journal").fetchone()[0] >= n:
                    return True
        except sqlite3.Error:
            pass
        time.sleep(0.1)
    return False


os.makedirs(WORK, exist_ok=True)
MODEL = os.path.join(WORK, "model")
if not os.path.exists(os.path.join(MODEL, "config.json")):
    subprocess.run(["/usr/bin/python3", os.path.join(HERE, "make_chat_model.py"), MODEL], check=True)

TOLD = "私の名前は太郎です。好きな食べ物はカレーです。"
ASK = "私の好きな食べ物を覚えていますか？"

# 1. Told once, without 「覚えて」: a new process recalls カレー and 太郎.
db = fresh("told-once.db")
chat(db, TOLD)
r = recalled(chat(db, ASK))
check(any("カレー" in t for t in r), f"run 2 did not recall カレー: {r}")
check(any("太郎" in t for t in r), f"run 2 did not recall 太郎: {r}")
for t in r:  # the clean display form: the user's words once, never doubled
    check(t.count(TOLD) <= 1 and t.count("私の名前は太郎です。") <= 1, f"recall text repeats itself: {t}")
check(len(r) == len(set(r)), f"the same memory recalled twice: {r}")
check(not recalled(chat(db, ASK, user="bob")), "bob recalled alice's memories")

# 2. Killed with SIGKILL right after the answer: nothing told is lost (the important statement is consolidated at
#    once; the plan, less important, waits in the short-term journal and is consolidated by the next start).
db = fresh("killed.db")
proc = until_answered(db, [TOLD, "週末は京都に行く予定です。"])
check(journaled(db, 2), "the two episodes were never journaled")
proc.send_signal(signal.SIGKILL)
proc.wait(timeout=60)
check(proc.returncode == -signal.SIGKILL, f"run 1 was not killed: {proc.returncode}")
r = recalled(chat(db, ASK))
check(any("カレー" in t for t in r), f"after SIGKILL, run 2 did not recall カレー: {r}")
check(any("太郎" in t for t in r), f"after SIGKILL, run 2 did not recall 太郎: {r}")
r = recalled(chat(db, "週末の予定は何でしたっけ？"))
check(any("京都" in t for t in r), f"after SIGKILL, the journaled plan was not recalled: {r}")
lt = subprocess.run([LAL, "memory", "--memory_db", db, "--user", "alice", "list", "--tier", "long_term"],
                    capture_output=True, text=True).stdout
check("京都に行く予定" in lt, f"the dead session's journal was not consolidated into long-term memory: {lt}")

# 3. SIGTERM ends the session like EOF: exit 0, short-term consolidated, the journal empty.
db = fresh("terminated.db")
proc = until_answered(db, ["週末は京都に行く予定です。"])
check(journaled(db, 1), "the episode was never journaled")
proc.send_signal(signal.SIGTERM)
proc.stdin.close()
proc.wait(timeout=120)
check(proc.returncode == 0, f"SIGTERM: exit status {proc.returncode}")
st = subprocess.run([LAL, "memory", "--memory_db", db, "--user", "alice", "list"], capture_output=True, text=True).stdout
check("京都に行く予定" in st and "short_term journal" not in st, f"after SIGTERM: {st}")

# 4. Issue 14 (writes never dropped): the database is locked by another program for the whole session. The chat
#    answers, its memory writes wait and retry, and at exit what could not be written is kept in <db>.pending.jsonl;
#    the user is told (stderr) and the exit status is 3. The next run stores it and recalls it.
db = fresh("locked.db")
proc = until_answered(db, ["こんにちは"])  # running, with the file open
other = sqlite3.connect(db, timeout=30, isolation_level=None)
other.execute("BEGIN IMMEDIATE")  # held from now on (WAL: the chat can still read)
out, err = proc.communicate("来月、札幌に転勤する予定です。\n", timeout=600)
check(proc.returncode == 3, f"locked database: exit status {proc.returncode}, expected 3: {err[-800:]}")
check("pending.jsonl" in err and "will be stored at the next start" in err, f"the user was not told: {err[-800:]}")
check(os.path.exists(db + ".pending.jsonl"), "nothing was kept in the pending file")
other.execute("ROLLBACK")
other.close()
r = recalled(chat(db, "来月の予定を覚えていますか？"))
check(any("札幌" in t for t in r), f"the kept memory was not stored and recalled by the next run: {r}")
check(not os.path.exists(db + ".pending.jsonl"), "the pending file was not consumed")

# 5. /memory search and /forget in the REPL, the same as `lal memory`.
db = fresh("repl.db")
chat(db, TOLD)
p = subprocess.run([LAL, "chat", "--model_path", MODEL, "--seed", "7", "--memory_db", db, "--user", "alice"],
                   input="/memory search カレー\n/forget --all\n/memory search カレー\n", capture_output=True,
                   text=True, timeout=600)
check(p.returncode == 0, f"REPL exited {p.returncode}: {p.stderr[-500:]}")
check("1. #" in p.stdout and "カレー" in p.stdout.split("件の記憶を忘れました")[0], f"/memory search: {p.stdout}")
check("件の記憶を忘れました" in p.stdout, f"/forget --all: {p.stdout}")
check("思い出せるものはありません" in p.stdout, f"after /forget --all something was still found: {p.stdout}")

print("chat memory e2e:", "FAILED" if failures else "ok", f"({len(failures)} failures)")
sys.exit(1 if failures else 0)
