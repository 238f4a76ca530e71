#!/usr/bin/env bash
# What issue 12 still had to show after 2026-11-30, in one call on nvidia-h200-x2 (written then, not yet run):
#   1. a distillation whose teacher transformers wrote itself: a random Qwen2ForCausalLM built from transformers'
#      Qwen2Config (real Qwen tokenizer, the tokenizer saved by AutoTokenizer.save_pretrained), save_pretrained in
#      bf16 and sharded; `lal distill` end to end on one GPU and on two (torchrun), each export loaded by transformers;
#   2. training throughput on 1 vs 2 GPUs on current main (train_speed.sh, 16 x 1024, DP=16x1024).
#   (2026-11-30 17:50: also the 2-GPU run with --shard_optimizer on beside auto, which keeps a 0.5B student's state
#   whole on each rank.)
# Run from the repo root with .gpu-debs and .stage/tok carried; writes $OUT/*.
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
trap 'cd $OUT && tar czf all.tgz --exclude=all.tgz . 2>/dev/null; ls | grep -v "^all.tgz$" | xargs rm -rf' EXIT
NCCL_INC=$(python3 -c "import importlib.util as u; s=u.find_spec('nvidia.nccl'); print(list(s.submodule_search_locations)[0]+'/include')" 2>/dev/null)
. tests/reference/gpu/lib.sh
(mkdir -p /tmp/tok && cp .stage/tok/* /tmp/tok/ && gunzip -f /tmp/tok/tokenizer.json.gz
 python3 - <<'PY'
import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
tok = AutoTokenizer.from_pretrained("/tmp/tok")
cfg = Qwen2Config(vocab_size=151936, hidden_size=512, intermediate_size=1408, num_hidden_layers=6,
                  num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=4096,
                  tie_word_embeddings=False, torch_dtype="bfloat16")
torch.manual_seed(0)
model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
model.save_pretrained("/tmp/hf-teacher", max_shard_size="200MB")
tok.save_pretrained("/tmp/hf-teacher")
print("teacher written by transformers:", sum(p.numel() for p in model.parameters()), "params")
PY
) > $OUT/teacher.txt 2>&1 &
TEACHER=$!
GPU_TEST_SUITES="lm;train" GPU_CMAKE_ARGS="${NCCL_INC:+-DLAL_NCCL_INCLUDE_DIR=$NCCL_INC}" gpu_build lal train_tests || exit 1
L=$B/bin/lal; el "built"
wait $TEACHER; tail -2 $OUT/teacher.txt; ls /tmp/hf-teacher
common=(--teacher_model /tmp/hf-teacher --student_config qwen2.5-0.5b --num_examples 32 --generation_batch_size 16
        --max_new_tokens 64 --max_length 256 --batch_size 4 --num_epochs 1 --no_progress --validation_fraction 0.1)
CUDA_VISIBLE_DEVICES=0 timeout 150 $L distill "${common[@]}" --output_dir /tmp/hf1 > $OUT/distill-1gpu.txt 2>&1
echo "1 GPU rc=$?"; tail -3 $OUT/distill-1gpu.txt
timeout 150 torchrun --nproc-per-node 2 --no-python $L distill "${common[@]}" --output_dir /tmp/hf2 \
  > $OUT/distill-2gpu.txt 2>&1
echo "2 GPUs rc=$?"; tail -3 $OUT/distill-2gpu.txt
ls /tmp/hf1/lal-brain-model
for d in /tmp/hf1/lal-brain-model /tmp/hf2/lal-brain-model; do
  timeout 100 python3 tests/train/hf_transformers_check.py $d - 2>&1 | grep -vE "Loading|^\s*$" | tail -2
done
el "distillations"
PREBUILT=$B TOK=.stage/tok SHAPES=16x1024 OLD= NOKERNELS= DP=16x1024 STEPS=12 timeout 240 \
  bash tests/reference/gpu/train_speed.sh > $OUT/train_speed.txt 2>&1
grep '^{' $OUT/train_speed.txt
# The same 2-GPU run with the AdamW state sharded (--shard_optimizer on; auto keeps this student's state whole).
SINGLE=0 DP_TAG=-sharded DP_ARGS="--shard_optimizer on" PREBUILT=$B TOK=.stage/tok SHAPES=16x1024 DP=16x1024 \
  STEPS=12 timeout 120 bash tests/reference/gpu/train_speed.sh > $OUT/train_speed_sharded.txt 2>&1
grep '^{' $OUT/train_speed_sharded.txt; grep -h "AdamW state" /tmp/o/dp2*-16x1024.txt | cut -c1-220
el "total"
