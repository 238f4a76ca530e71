#!/usr/bin/env bash
# One nvidia-h200-x2 call (written 2026-11-30 for issues 10 and 12): an unlanded patch of decode kernels (optional,
# PATCH=file: applied to the copy on the device) is built with the whole project (README "GPU" way, lib.sh), then
#   GPU 0: lm_kernel / lm_scheduler / lm_engine tests on CUDA, then `lal bench generate` on the 0.5B and 7B shapes
#          (batch 1 and 32, BENCHMARKS.md's command) and one traced decode per shape (PDL off);
#   GPU 1 meanwhile: train_speed.sh's 1-GPU runs (PyTorch loop and lal, 16 x 1024);
#   then both: the 2-GPU run (torchrun), its step 8 profiled on rank 0;
#   then, with time left, `lal bench chat` batched vs serial (bench_chat_pair).
# Run from the repo root with .gpu-debs, .stage/tok (and the patch) carried; writes $OUT/*.
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
# Few files come back from a call: at exit everything but a summary goes into one archive.
trap 'cd $OUT && tar czf all.tgz --exclude=all.tgz --exclude=trace.json.gz . 2>/dev/null; ls | grep -vE "^(all.tgz|trace.json.gz)$" | xargs rm -rf' EXIT
if [ -n "${PATCH:-}" ]; then
  git apply "$PATCH" 2>&1 || patch -p1 < "$PATCH" || { echo "the patch does not apply"; exit 1; }
  echo "applied $PATCH"
fi
NCCL_INC=$(python3 -c "import importlib.util as u; s=u.find_spec('nvidia.nccl'); print(list(s.submodule_search_locations)[0]+'/include')" 2>/dev/null)
. tests/reference/gpu/lib.sh
GPU_TEST_SUITES="lm;train" GPU_CMAKE_ARGS="${NCCL_INC:+-DLAL_NCCL_INCLUDE_DIR=$NCCL_INC}" gpu_setup qwen2.5-0.5b qwen2.5-7b
el "built"
wait $TINY
export LAL_LM_TINY_MODELS=/tmp/tiny
# GPU 1: the 1-GPU training runs, while GPU 0 tests and benchmarks decoding (TRAIN1=0: none).
if [ "${TRAIN1:-1}" = 1 ]; then
(CUDA_VISIBLE_DEVICES=1 PREBUILT=$B TOK=.stage/tok SHAPES=16x1024 OLD= NOKERNELS= DP=none STEPS=12 timeout 200 \
  bash tests/reference/gpu/train_speed.sh > $OUT/train_1gpu.txt 2>&1; cp /tmp/o/results.jsonl /tmp/train1.jsonl) &
fi
TRAIN1=$!
export CUDA_VISIBLE_DEVICES=0
gpu_tests lm_kernel_tests; el "kernel tests"
wait $MODELS; tail -1 $OUT/models.txt
for shape in qwen2.5-0.5b qwen2.5-7b; do
  timeout 100 $L bench generate --model_path /tmp/$shape --device cuda --dtype bfloat16 --batch 1,32 --prompt_len 128 \
    --new_tokens 128 --json --bandwidth --decode_mode graph --kernels fused --repeat 3 2>>$OUT/bench.err >> $OUT/bench.jsonl
  LAL_CUDA_PDL=off timeout 60 $L bench generate --model_path /tmp/$shape --device cuda --dtype bfloat16 --batch 1,32 \
    --prompt_len 128 --new_tokens 32 --decode_mode graph --kernels fused --trace /tmp/trace-$shape.json > /dev/null 2>&1
  for b in 1 32; do
    echo "== $shape batch $b (PDL off)"
    python3 tests/reference/gpu/trace_decode.py /tmp/trace-$shape.b$b.json 2>&1 | head -24
  done
  el "bench $shape"
done > $OUT/decode.txt 2>&1
[ "${LONG:-0}" = 1 ] && timeout 60 $L bench generate --model_path /tmp/qwen2.5-7b --device cuda --dtype bfloat16 \
  --batch 1,32 --prompt_len 2000 --new_tokens 48 --json --bandwidth --decode_mode graph --kernels fused --repeat 2 \
  2>>$OUT/bench.err >> $OUT/bench.jsonl
bench_table $OUT/bench.jsonl
gpu_tests lm_scheduler_tests lm_engine_tests; el "scheduler and engine tests"
wait $TRAIN1; cat /tmp/train1.jsonl; grep -E "ERROR|FAILED|^\[doctest\] test cases" $OUT/train_1gpu.txt | head -5
unset CUDA_VISIBLE_DEVICES
# The 2-GPU run, once per variant in DP_VARIANTS ("tag:lal options|tag:options", e.g. "-auto:|-sharded:--shard_optimizer on").
IFS='|' read -ra variants <<< "${DP_VARIANTS:--auto:}"
[ "$(nvidia-smi -L | wc -l)" -ge 2 ] || variants=()  # one GPU: no 2-GPU runs
for v in ${variants[@]+"${variants[@]}"}; do
  tag=${v%%:*} args=${v#*:}
  DP_TAG=$tag DP_ARGS="$args" SINGLE=0 PREBUILT=$B TOK=.stage/tok SHAPES=16x1024 DP=16x1024 DP_PROFILE=8 STEPS=12 \
    timeout 150 bash tests/reference/gpu/train_speed.sh > $OUT/train_dp2$tag.txt 2>&1
  echo "== 2 GPUs, $tag ($args)"; grep '^{' $OUT/train_dp2$tag.txt | tail -1
  grep -h "AdamW state\|all-reduce:" /tmp/o/dp2$tag-16x1024.txt | cut -c1-200 | head -3
  head -12 /tmp/o/dp2$tag-16x1024.profile.txt
done
el "training"
if [ $(( $(date +%s) - T0 )) -lt ${CHAT_BEFORE_S:-430} ]; then
  bench_chat_pair $L 2 60; el "chat"
fi
el "total"
