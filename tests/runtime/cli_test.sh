#!/usr/bin/env bash
# The CLI as users call it: exit codes, file:line:col errors on stderr, results on stdout.
set -u
lal=$1 data=$2 src=$3
fail() { echo "FAIL: $*"; exit 1; }

out=$("$lal" validate "$data/broken.yaml" 2>&1); rc=$?
[ $rc -ne 0 ] || fail "validate of a broken file exited 0"
echo "$out" | grep -q "broken.yaml:7:17: module 'memory': config key 'capacity' must be int, found string" || fail "capacity error: $out"
echo "$out" | grep -q "broken.yaml:10:13: module 'intuition': unknown plugin 'first_impresion' (did you mean 'first_impression'?)" || fail "plugin error: $out"
echo "$out" | grep -q "broken.yaml:14:14: module 'speaker': unknown config key 'labes'" || fail "config key error: $out"
echo "$out" | grep -q "broken.yaml:15:14: input 'thought' of module 'speaker' is wired to topic 'thought.stream' that nobody produces" || fail "producer error: $out"
echo "$out" | grep -q "^4 errors in" || fail "error count: $out"

"$lal" validate "$src/configs/hello.yaml" >/dev/null || fail "hello.yaml does not validate"
"$lal" validate /nonexistent.yaml 2>&1 | grep -q "cannot open" || fail "missing file not reported"

g=$("$lal" graph "$src/configs/hello.yaml" --format mermaid) || fail "graph failed"
echo "$g" | grep -q 'm_intuition -->|"thought.stream: lal.ThoughtChunk/2"| m_speaker' || fail "mermaid edge: $g"
echo "$g" | grep -q 'm_intuition -.->|"memory.recall: lal.RecallRequest/1 → lal.RecallReply/1"| m_memory' || fail "mermaid request edge: $g"
d=$("$lal" graph "$src/configs/hello.yaml") || fail "dot failed"
echo "$d" | grep -q '"input" -> "memory" \[label="turn.input\\nlal.Percept/1"\]' || fail "dot edge: $d"

p=$("$lal" plugins) || fail "plugins failed"
echo "$p" | grep -q "working_memory  (memory_tier, version 0.1.0, ABI 3)" || fail "plugins listing: $p"
echo "$p" | grep -q "server recall: lal.RecallRequest/1 → lal.RecallReply/1" || fail "plugins ports: $p"

r=$(printf 'こんにちは\n東京の天気は？\n' | "$lal" run "$src/configs/hello.yaml") || fail "run failed"
[ "$(echo "$r" | wc -l)" = 2 ] || fail "run output: $r"
echo "$r" | grep -q '^\[直感\] 挨拶ですね。' || fail "run output: $r"

"$lal" run 2>&1 | grep -q "give a FILE.yaml" || fail "run without file"
"$lal" run "$src/configs/hello.yaml" --bogus 2>&1 | grep -q "unrecognised option '--bogus'" || fail "unknown option"
"$lal" nonsense >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown command exit code"
"$lal" --version | grep -q "SDK ABI 3" || fail "version"
for c in plugins validate graph run "bench bus"; do
  "$lal" $c --help | grep -q "Usage: lal $c" || fail "--help of $c"
done
# Every command that loads a pipeline says so in its usage line (chat, serve, bench chat only in a LibTorch build).
for c in validate graph run chat serve "bench chat"; do
  "$lal" --help | grep -q "^  $c " || continue
  "$lal" $c --help | head -1 | grep -q "\[--plugin_path DIR\] \[--set PATH=VALUE\]" || fail "usage of $c: $("$lal" $c --help | head -1)"
done
echo "cli ok"
