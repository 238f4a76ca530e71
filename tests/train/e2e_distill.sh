#!/usr/bin/env bash
# End to end: lal distill on a tiny teacher (questions -> teacher data -> training -> export), then the export is
# loaded by lal generate and by the independent Python reference, which must agree token for token.
# Second run: --trim_vocab with stored top-k teacher log-probabilities, reusing the first run's teacher data.
set -euo pipefail
LAL=$1 FX=$2 OUT=$3 PY=$4
HERE=$(cd "$(dirname "$0")" && pwd)
rm -rf "$OUT" && mkdir -p "$OUT"
# The teacher in transformers 5's layout: save_pretrained writes the chat template to chat_template.jinja, not into
# tokenizer_config.json. The export must carry it (the student is trained on that format).
T=$OUT/teacher
cp -r "$FX/teacher" "$T"
"$PY" - "$T" <<'PY'
import json, os, sys
d = sys.argv[1]
cfg = json.load(open(os.path.join(d, "tokenizer_config.json")))
open(os.path.join(d, "chat_template.jinja"), "w").write(cfg.pop("chat_template"))
json.dump(cfg, open(os.path.join(d, "tokenizer_config.json"), "w"), ensure_ascii=False, indent=1)
PY
common=(--teacher_model "$T" --num_examples 24 --generation_batch_size 8 --max_length 256 --batch_size 4
        --gradient_accumulation 2 --num_epochs 2 --checkpoint_every 3 --export_dtype float32 --threads 1
        --no_progress --learning_rate 3e-3)

echo "== dry run"
"$LAL" distill "${common[@]}" --output_dir "$OUT" --dry_run | tee "$OUT/plan.txt"
grep -q "memory estimate" "$OUT/plan.txt"
grep -q "student           half-teacher (auto: the largest that fits): qwen2, 2 layers" "$OUT/plan.txt"
grep -q "verdict           FITS" "$OUT/plan.txt"
grep -qE "^  disk              ~.* step checkpoint\(s\) x .* available at " "$OUT/plan.txt"

echo "== distill (half-teacher student initialised from teacher layers 0 and 3)"
"$LAL" distill "${common[@]}" --output_dir "$OUT" --log_level info
M=$OUT/lal-brain-model W=$OUT/lal-brain-model-work
for f in config.json model.safetensors tokenizer.json tokenizer_config.json generation_config.json README.md; do
  test -s "$M/$f" || { echo "missing $M/$f"; exit 1; }
done
for f in questions.jsonl data.jsonl metrics.jsonl loss.svg summary.json options.yaml checkpoints/best/model.safetensors; do
  test -s "$W/$f" || { echo "missing $W/$f"; exit 1; }
done
test "$(wc -l < "$W/data.jsonl")" -eq 24
cmp "$T/chat_template.jinja" "$M/chat_template.jinja"
if grep -q '"chat_template"' "$M/tokenizer_config.json"; then echo "chat_template put back into tokenizer_config"; exit 1; fi
conv='{"messages":[{"role":"user","content":"オームの法則とは？"}]}'
test "$(echo "$conv" | "$LAL" render --model_path "$M")" = "$(echo "$conv" | "$LAL" render --model_path "$T")"
# The plan's disk estimate counts 12 bytes per student parameter for a step checkpoint (float32 weights + AdamW's
# two moments): the checkpoints written are that size (headers and the trainer state aside).
"$PY" - "$W" <<'PY'
import glob, json, os, sys
w = sys.argv[1]
n = json.load(open(os.path.join(w, "summary.json")))["student_parameters"]
for d in glob.glob(os.path.join(w, "checkpoints", "step-*")):
    size = sum(os.path.getsize(os.path.join(d, f)) for f in ("model.safetensors", "optimizer.safetensors"))
    assert 12 * n <= size <= 12 * n * 1.05 + 65536, (d, size, 12 * n)
print("step checkpoints: 12 bytes per parameter, as the plan counts")
PY
grep -q '"val_kl"' "$W/metrics.jsonl"
grep -q '<svg' "$W/loss.svg"

echo "== export parity: lal generate vs the Python reference"
ids=$("$LAL" generate --model_path "$M" --prompt_ids 5,17,33,2,100 --greedy --ids --max_new_tokens 12 --device cpu)
"$PY" "$HERE/check_export.py" "$M" 5,17,33,2,100 "$ids"
"$LAL" generate --model_path "$M" --chat --prompt "オームの法則とは？" --greedy --max_new_tokens 8 --device cpu > /dev/null

echo "== trimmed vocabulary + stored top-k (reusing the teacher data)"
W2=$OUT/trimmed-work
mkdir -p "$W2" && cp "$W/questions.jsonl" "$W/data.jsonl" "$W2/"
"$LAL" distill "${common[@]}" --output_dir "$OUT" --hf_model_name trimmed --trim_vocab --store_topk 8 \
  --student_config tiny --student_init random --log_level info
test "$(wc -l < "$W2/topk.jsonl")" -eq 24
"$PY" "$HERE/check_topk.py" "$FX/teacher" "$W2" 256 8  # scored in batches == the reference, one example at a time
vocab=$(grep -o '"vocab_size": [0-9]*' "$OUT/trimmed/config.json" | grep -o '[0-9]*$')
echo "trimmed vocabulary: $vocab tokens (teacher: 384)"
test "$vocab" -lt 321
cmp "$T/chat_template.jinja" "$OUT/trimmed/chat_template.jinja"
ids=$("$LAL" generate --model_path "$OUT/trimmed" --prompt_ids 5,17,33,2,100 --greedy --ids --max_new_tokens 12 --device cpu)
"$PY" "$HERE/check_export.py" "$OUT/trimmed" 5,17,33,2,100 "$ids"
"$LAL" generate --model_path "$OUT/trimmed" --chat --prompt "オームの法則とは？" --greedy --max_new_tokens 8 --device cpu > /dev/null

echo "== errors name what and where"
# Teacher data whose prompts leave no answer token within --max_length: the error says so and what to change.
mkdir -p "$OUT/short/lal-brain-model-work" && cp "$W/questions.jsonl" "$W/data.jsonl" "$OUT/short/lal-brain-model-work/"
short=("${common[@]/#256/20}")  # --max_length 20
if "$LAL" distill "${short[@]}" --output_dir "$OUT/short" 2> "$OUT/err.txt"; then exit 1; fi
grep -q "no usable examples .*: 24 of 24 have a prompt of at least --max_length 20 tokens (the longest [0-9]*); raise --max_length" "$OUT/err.txt"
if "$LAL" distill --teacher_model "$FX/teacher" --batch_size x 2> "$OUT/err.txt"; then exit 1; fi
grep -q "batch_size: 'x' is not an integer" "$OUT/err.txt"
if "$LAL" distill --teacher_model "$FX/nowhere" --output_dir "$OUT/x" --no_progress 2> "$OUT/err.txt"; then exit 1; fi
cat "$OUT/err.txt"
echo "e2e OK"
