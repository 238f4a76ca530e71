#!/usr/bin/env bash
# Same student, data and steps; one run learns from the teacher's distributions (alpha 0.9), the other from the
# teacher's sampled tokens only (alpha 0). The distilled one must end closer to the teacher on held-out data
# (lower KL(teacher || student) per token).
set -euo pipefail
LAL=$1 FX=$2 OUT=$3
rm -rf "$OUT" && mkdir -p "$OUT"
common=(--teacher_model "$FX/teacher" --num_examples 40 --generation_batch_size 8 --max_length 192 --batch_size 4
        --gradient_accumulation 1 --num_epochs 10 --checkpoint_every 1000 --threads 1 --no_progress
        --student_config tiny --student_init random --validation_fraction 0.2 --learning_rate 3e-3
        --distillation_temperature 1.0 --no_save_hf_format)
"$LAL" distill "${common[@]}" --output_dir "$OUT" --hf_model_name kd --alpha 0.9
mkdir -p "$OUT/hard-work" && cp "$OUT/kd-work/questions.jsonl" "$OUT/kd-work/data.jsonl" "$OUT/hard-work/"
"$LAL" distill "${common[@]}" --output_dir "$OUT" --hf_model_name hard --alpha 0
kl() { grep -o '"val_kl": [-0-9.e]*' "$1" | grep -o '[-0-9.e]*$'; }
kd=$(kl "$OUT/kd-work/summary.json") hard=$(kl "$OUT/hard-work/summary.json")
echo "held-out KL(teacher || student): distilled $kd, hard labels $hard"
awk -v a="$kd" -v b="$hard" 'BEGIN { exit !(a < b) }'
