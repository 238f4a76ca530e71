#!/usr/bin/env bash
# Kill -9 a distillation run after a checkpoint, resume it, and require the result to equal an uninterrupted run:
# byte-identical final weights and optimizer state, identical loss trajectory. Also: teacher data with a torn last
# line (a crash mid-write) is completed to exactly the uninterrupted run's file.
set -euo pipefail
LAL=$1 FX=$2 OUT=$3
rm -rf "$OUT" && mkdir -p "$OUT"
common=(--teacher_model "$FX/teacher" --num_examples 24 --generation_batch_size 8 --max_length 256 --batch_size 2
        --gradient_accumulation 2 --num_epochs 6 --checkpoint_every 2 --keep_checkpoints 100 --threads 1
        --no_progress --student_config tiny --export_dtype float32 --learning_rate 3e-3 --eval_every 3)
A=$OUT/a/lal-brain-model-work B=$OUT/b/lal-brain-model-work

echo "== uninterrupted run"
"$LAL" distill "${common[@]}" --output_dir "$OUT/a"

echo "== interrupted run: teacher data torn in the middle of record 12, then kill -9 after checkpoint step 4"
mkdir -p "$B"
cp "$A/questions.jsonl" "$B/"
bytes=$(head -n 11 "$A/data.jsonl" | wc -c)
head -c $((bytes + 40)) "$A/data.jsonl" > "$B/data.jsonl"
"$LAL" distill "${common[@]}" --output_dir "$OUT/b" &
pid=$!
while [ ! -d "$B/checkpoints/step-00000004" ]; do
  kill -0 $pid 2>/dev/null || { echo "the run ended before it could be killed"; exit 1; }
  sleep 0.01
done
kill -9 $pid
wait $pid 2>/dev/null || true
last=$(ls "$B/checkpoints" | grep '^step-' | tail -n 1)
echo "killed; newest checkpoint: $last; metrics lines: $(wc -l < "$B/metrics.jsonl")"
test "$last" != "step-00000036"
cmp "$A/data.jsonl" "$B/data.jsonl"
echo "teacher data completed identically"

echo "== resume"
"$LAL" distill "${common[@]}" --output_dir "$OUT/b" --resume_from "$B"
final=$(ls "$A/checkpoints" | grep '^step-' | tail -n 1)
cmp "$A/checkpoints/$final/model.safetensors" "$B/checkpoints/$final/model.safetensors"
cmp "$A/checkpoints/$final/optimizer.safetensors" "$B/checkpoints/$final/optimizer.safetensors"
cmp "$A/checkpoints/best/model.safetensors" "$B/checkpoints/best/model.safetensors"
cmp "$OUT/a/lal-brain-model/model.safetensors" "$OUT/b/lal-brain-model/model.safetensors"
traj() { grep -o '"step":[0-9]*\|"loss":[-0-9.e]*\|"val_loss":[-0-9.e]*\|"grad_norm":[-0-9.e]*' "$1"; }
diff <(traj "$A/metrics.jsonl") <(traj "$B/metrics.jsonl")
echo "resumed run == uninterrupted run ($final: weights, optimizer, best checkpoint, export, $(traj "$A/metrics.jsonl" | grep -c loss) loss records)"

echo "== --save_only_model: the same weights, checkpoints without the optimizer state, a resume refused by name"
C=$OUT/c/lal-brain-model-work
mkdir -p "$C" && cp "$A/questions.jsonl" "$A/data.jsonl" "$C/"
"$LAL" distill "${common[@]}" --output_dir "$OUT/c" --save_only_model
test -f "$C/checkpoints/$final/model.safetensors"
if ls "$C"/checkpoints/*/optimizer.safetensors 2>/dev/null; then echo "optimizer state written"; exit 1; fi
cmp "$A/checkpoints/$final/model.safetensors" "$C/checkpoints/$final/model.safetensors"
if "$LAL" distill "${common[@]}" --output_dir "$OUT/c" --resume_from "$C" > "$OUT/c.err" 2>&1; then
  echo "a resume from a checkpoint without optimizer state ran"; exit 1
fi
grep -q "holds no optimizer state (written with --save_only_model" "$OUT/c.err" || { cat "$OUT/c.err"; exit 1; }
echo "save_only_model: $final weights equal the full run's, no optimizer.safetensors, resume refused"
