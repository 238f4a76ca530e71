#!/usr/bin/env bash
# Training on text (no teacher): the student's vocabulary is the tokenizer's rounded up to --vocab_multiple (fast
# GEMM shapes), the extra rows are never produced, and the export is loaded by lal generate and by the independent
# Python reference, which agree token for token. --vocab_multiple 1 keeps the tokenizer's exact size.
set -euo pipefail
LAL=$1 FX=$2 OUT=$3 PY=$4
HERE=$(cd "$(dirname "$0")" && pwd)
rm -rf "$OUT" && mkdir -p "$OUT"
for i in $(seq 1 40); do
  printf 'The battery drives a current of %d amperes through the resistor, and the voltage drops by %d volts.\n\n' \
    "$i" "$((i * 3))"
  printf 'オームの法則では電圧は電流と抵抗の積です。%d 番目の例です。\n\n' "$i"
done > "$OUT/corpus.txt"
tok_size=$("$PY" -c "import json,sys; t=json.load(open(sys.argv[1])); print(max(list(t['model']['vocab'].values()) + [a['id'] for a in t.get('added_tokens', [])]) + 1)" "$FX/teacher/tokenizer.json")
common=(--corpus "$OUT/corpus.txt" --tokenizer "$FX/teacher/tokenizer.json" --student_config tiny --max_length 64
        --batch_size 4 --max_steps 3 --threads 1 --no_progress --export_dtype float32 --learning_rate 3e-3)

"$LAL" distill "${common[@]}" --output_dir "$OUT/padded"
M=$OUT/padded/lal-brain-model
vocab=$(grep -o '"vocab_size": [0-9]*' "$M/config.json" | grep -o '[0-9]*$')
echo "tokenizer: $tok_size tokens; student vocabulary: $vocab"
test $((vocab % 64)) -eq 0
test "$vocab" -ge "$tok_size"
test "$vocab" -lt $((tok_size + 64))
ids=$("$LAL" generate --model_path "$M" --prompt_ids 5,17,33,2,100 --greedy --ids --max_new_tokens 12 --device cpu)
"$PY" "$HERE/check_export.py" "$M" 5,17,33,2,100 "$ids"

"$LAL" distill "${common[@]}" --output_dir "$OUT/exact" --vocab_multiple 1
exact=$(grep -o '"vocab_size": [0-9]*' "$OUT/exact/lal-brain-model/config.json" | grep -o '[0-9]*$')
echo "--vocab_multiple 1: $exact"
test "$exact" -eq "$tok_size"
if "$LAL" distill "${common[@]}" --output_dir "$OUT/bad" --vocab_multiple 0 2> "$OUT/bad.txt"; then exit 1; fi
grep -q "vocab_multiple" "$OUT/bad.txt"
# A fused AdamW where this LibTorch has none is refused before anything runs (Debian's 1.13 has none; >= 2.4 does).
if ! "$LAL" distill "${common[@]}" --output_dir "$OUT/fused" --adamw fused --dry_run > /dev/null 2> "$OUT/fused.txt"; then
  grep -q "has no fused AdamW kernel" "$OUT/fused.txt"
  test ! -e "$OUT/fused/lal-brain-model-work/data.jsonl"
  echo "--adamw fused refused: $(grep -o 'this LibTorch ([^)]*)' "$OUT/fused.txt")"
fi
echo "corpus training: OK"
