#!/usr/bin/env bash
# One truth for pipelines: every shipped configs/*.yaml pipeline passes `lal validate` and runs a turn under
# `lal run` (exit 0, some output), the way the README presents them; and what `lal run` refuses at start (a plugin
# config value out of range, e.g. working_memory `capacity: -1`), `lal validate` refuses.
#   shipped_configs.sh LAL SOURCE_DIR
set -u
lal=$1 src=$2
failures=0
for f in "$src"/configs/*.yaml; do
  grep -q '^modules:' "$f" || continue  # configs/distill.yaml holds lal distill options, not a pipeline
  if ! v=$("$lal" validate "$f" 2>&1); then
    echo "FAIL: lal validate $f"$'\n'"$v"; failures=$((failures + 1)); continue
  fi
  out=$(printf 'こんにちは。今日はいい天気ですね。\n' | timeout 600 "$lal" run "$f" 2>&1); rc=$?
  if [ $rc -ne 0 ] || [ -z "$out" ]; then
    echo "FAIL: echo ... | lal run $f exited $rc"$'\n'"$out"; failures=$((failures + 1)); continue
  fi
  echo "ok: $(basename "$f")"
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed 's/capacity: 7/capacity: -1/' "$src/configs/hello.yaml" > "$work/capacity.yaml"
if "$lal" validate "$work/capacity.yaml" >/dev/null 2>&1; then
  echo "FAIL: lal validate accepts working_memory capacity: -1, which lal run refuses"; failures=$((failures + 1))
fi
[ $failures -eq 0 ] || { echo "$failures failure(s)"; exit 1; }
