"""End-to-end tests of `lal chat` on a tiny real model: jsonl events, staged streaming, memory across process
restarts, per-user isolation, REPL commands and error handling.

    /usr/bin/python3 tests/chat/chat_e2e.py LAL_BINARY WORK_DIR
"""
import json
import os
import subprocess
import sys

LAL, WORK = sys.argv[1], sys.argv[2]
HERE = os.path.dirname(os.path.abspath(__file__))
STAGES = {"intuition", "exploration", "analysis", "insight", "conclusion", "recall", "emotion"}
KINDS = {"thought", "answer", "memory", "state"}
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def chat(lines, *args, expect_rc=0):
    p = subprocess.run([LAL, "chat", "--model_path", MODEL, "--seed", "7", *args], input="\n".join(lines) + "\n",
                       capture_output=True, text=True, timeout=600)
    if p.returncode != expect_rc:
        print(p.stdout[-3000:], p.stderr[-3000:])
    check(p.returncode == expect_rc, f"lal chat {' '.join(args)} exited {p.returncode}, expected {expect_rc}")
    return p


def events(stdout):
    out = []
    for n, line in enumerate(stdout.splitlines(), 1):
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            check(False, f"jsonl line {n} is not JSON: {line[:200]}")
            continue
        for key in ("t_ms", "turn", "stage", "kind", "text"):
            check(key in e, f"jsonl line {n} lacks '{key}': {line[:200]}")
        check(e.get("stage") in STAGES, f"jsonl line {n}: unknown stage {e.get('stage')}")
        check(e.get("kind") in KINDS, f"jsonl line {n}: unknown kind {e.get('kind')}")
        out.append(e)
    return out


os.makedirs(WORK, exist_ok=True)
MODEL = os.path.join(WORK, "model")
subprocess.run(["/usr/bin/python3", os.path.join(HERE, "make_chat_model.py"), MODEL], check=True)
db = os.path.join(WORK, "memory.db")
for suffix in ("", "-wal", "-shm"):
    if os.path.exists(db + suffix):
        os.remove(db + suffix)

# 1. A session in jsonl: every event well-formed; the intuition streams before the analysis ends; turns end.
first = chat(["私の名前は太郎です。覚えておいてね。", "オームの法則を教えて。"], "--output", "jsonl", "--memory_db", db,
             "--user", "alice")
ev = events(first.stdout)
turns = sorted({e["turn"] for e in ev})
check(len(turns) == 2, f"expected 2 turns, saw {turns}")
for t in turns:
    te = [e for e in ev if e["turn"] == t]
    visible = [e for e in te if e["kind"] in ("thought", "answer") and e["text"]]
    analysis_end = [e["t_ms"] for e in te if e["stage"] == "analysis"]
    # The regions decode together (the model's batching scheduler): the intuition may share the first moments with
    # the exploration, but it is an early reaction, seen before the analysis begins.
    check(visible and visible[0]["stage"] in ("intuition", "exploration", "emotion", "recall"),
          f"turn {t}: first visible event is {visible[0]['stage'] if visible else None}, not an early stage")
    first_intuition = [e["t_ms"] for e in visible if e["stage"] == "intuition"]
    first_analysis = [e["t_ms"] for e in visible if e["stage"] == "analysis"]
    check(first_intuition and (not first_analysis or first_intuition[0] <= first_analysis[0]),
          f"turn {t}: the intuition was not visible before the analysis began")
    if analysis_end:
        check(min(e["t_ms"] for e in te if e["stage"] == "intuition") < max(analysis_end),
              f"turn {t}: intuition did not appear before the analysis ended")
    check(any(e["kind"] == "answer" for e in te), f"turn {t}: no answer event")
    check(any(e.get("event") == "turn_done" for e in te), f"turn {t}: no turn_done event")
    ts = [e["t_ms"] for e in te]
    check(ts == sorted(ts), f"turn {t}: t_ms not monotonic")

# 2. Memory across process restarts: a new process recalls what alice said, and only for alice.
# The model and the dtype `--dtype auto` chose are printed at start (stderr), with stdin not a terminal too.
check("lal chat — " in first.stderr and any(d in first.stderr for d in ("float32", "bfloat16", "float16")),
      f"the model/dtype choice is not printed at start: {first.stderr[-500:]}")
second = chat(["私の名前を覚えていますか？"], "--output", "jsonl", "--memory_db", db, "--user", "alice")
recalled = [e["text"] for e in events(second.stdout) if e["stage"] == "recall" and e["kind"] == "memory"]
check(any("太郎" in r for r in recalled), f"alice's second session did not recall 太郎: {recalled}")
third = chat(["私の名前を覚えていますか？"], "--output", "jsonl", "--memory_db", db, "--user", "bob")
leaked = [e["text"] for e in events(third.stdout) if e["stage"] == "recall" and "太郎" in e["text"]]
check(not leaked, f"bob recalled alice's memory: {leaked}")

# 3. Text mode and the REPL commands.
text = chat(["/help", "こんにちは", "/emotion", "/memory", "/bogus", "/exit", "これは読まれない"], "--memory_db", db,
            "--user", "alice")
check("[直感]" in text.stdout, "text output has no [直感] stage label")
check("/memory" in text.stdout and "/emotion" in text.stdout, "/help did not list the commands")
check("感情:" in text.stdout, "/emotion did not show a state")
check("太郎" in text.stdout, "/memory did not list alice's memory")
check("知らないコマンドです: /bogus" in text.stdout, "unknown command not reported")
check("これは読まれない" not in text.stdout, "input after /exit was processed")
hidden = chat(["こんにちは"], "--memory_db", db, "--hide_thoughts")
check("[直感]" not in hidden.stdout and hidden.stdout.strip(), "--hide_thoughts still shows thoughts (or nothing)")

# 4. Swapping modules in YAML changes behaviour without a rebuild.
CONFIGS = os.path.join(HERE, "..", "..", "configs")
minimal = chat(["こんにちは！とても嬉しいです！"], "--config", os.path.join(CONFIGS, "minimal.yaml"), "--output", "jsonl",
               "--memory_db", db)
check(not [e for e in events(minimal.stdout) if e["stage"] == "emotion"], "minimal.yaml (no emotion module) emitted emotion")
baseline = chat(["こんにちは"], "--config", os.path.join(CONFIGS, "think-then-answer.yaml"), "--memory_db", db)
check("[直感]" not in baseline.stdout and baseline.stdout.strip(), "think-then-answer showed an intuition (or nothing)")
for name in ("chat.yaml", "minimal.yaml", "fast.yaml", "think-then-answer.yaml"):
    v = subprocess.run([LAL, "validate", os.path.join(CONFIGS, name)], capture_output=True, text=True)
    check(v.returncode == 0, f"{name} does not validate: {v.stderr}")

# 4b. The runtime owns `resources:`: `lal run` on the chat pipeline has the model too, and the output slot and
# wildcard overrides work there as in `lal chat`.
run = subprocess.run([LAL, "run", os.path.join(CONFIGS, "chat.yaml"), "--set", f"resources.model.path={MODEL}",
                      "--set", f'modules.*.config.path="{db}"', "--set", "output=jsonl"],
                     input="hi\n", capture_output=True, text=True, timeout=600)
check(run.returncode == 0, f"lal run configs/chat.yaml exited {run.returncode}: {run.stderr[-500:]}")
run_events = events(run.stdout)
check([e for e in run_events if e.get("event") == "turn_done"], f"lal run chat.yaml: no turn_done: {run.stdout[-500:]}")
check([e for e in run_events if e["kind"] == "answer" and e["text"]], "lal run chat.yaml: no answer text")

# 5. Bad input: clear errors, non-zero exit, nothing lost.
bad = subprocess.run([LAL, "chat", "--model_path", os.path.join(WORK, "nope")], input="", capture_output=True,
                     text=True)
check(bad.returncode != 0 and "nope" in bad.stderr, f"missing model: rc={bad.returncode} {bad.stderr[-300:]}")
bad = subprocess.run([LAL, "chat", "--model_path", MODEL, "--output", "xml"], input="", capture_output=True, text=True)
check(bad.returncode == 2 and "--output must be text or jsonl" in bad.stderr, f"bad --output: {bad.stderr[-300:]}")
corrupt = os.path.join(WORK, "corrupt.db")
with open(corrupt, "wb") as f:
    f.write(b"this is not a database" * 100)
bad = chat(["こんにちは"], "--memory_db", corrupt, expect_rc=1)
check("corrupt.db" in bad.stderr, f"corrupt database not named in the error: {bad.stderr[-500:]}")
with open(corrupt, "rb") as f:
    check(f.read() == b"this is not a database" * 100, "the corrupt file was modified")

print("chat e2e:", "FAILED" if failures else "ok", f"({len(failures)} failures)")
sys.exit(1 if failures else 0)
