#!/usr/bin/env bash
# Issue 10, the scheduler and the kernels' launches on a GPU host in one call of under 10 minutes: the README's CUDA
# build (lib.sh), the GPU tests (fused kernels, scheduler, engine), `lal bench generate` on the Qwen2.5-0.5B/7B shapes
# greedy with programmatic dependent launch on and off (LAL_CUDA_PDL) and sampled as the thinking regions sample
# (temperature 0.7, top-k 50 from the missing generation_config.json, top-p 0.95) with the sampler's kernels on and
# off (LAL_CUDA_SAMPLER), and `lal bench chat --device cuda` on the 7B shape: batched
# with the kernels, the prefix cache and the warm-up at load against the way main ran before the scheduler (one at a
# time, LibTorch ops, no prefix cache, no warm-up); AHEAD_OFF=1 adds the batched run with LAL_SCHEDULER_AHEAD=off
# (the host reads each step before the next one is queued). Run from the repo root with .gpu-debs and
# models/lal-demo (its tokenizer); writes $OUT/*.
#   SHAPES="qwen2.5-0.5b qwen2.5-7b" BATCHES=1,2,32 TURNS=2 AHEAD_OFF=0 bash tests/reference/gpu/scheduler_run.sh
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
SHAPES=${SHAPES:-"qwen2.5-0.5b qwen2.5-7b"} BATCHES=${BATCHES:-1,2,32} TURNS=${TURNS:-2} AHEAD_OFF=${AHEAD_OFF:-0}
. tests/reference/gpu/lib.sh
gpu_setup $SHAPES qwen2.5-7b
el "built"
wait $TINY
export LAL_LM_TINY_MODELS=/tmp/tiny
gpu_tests lm_kernel_tests lm_scheduler_tests lm_engine_tests; el "tests"
wait $MODELS; tail -2 $OUT/models.txt
bench() {  # bench LABEL SHAPE BATCHES ARGS...: one `lal bench generate` (the BENCHMARKS.md command) into bench.jsonl
  local label=$1 shape=$2 batches=$3; shift 3
  timeout 100 $L bench generate --model_path /tmp/$shape --device cuda --dtype bfloat16 --batch $batches \
    --prompt_len 128 --new_tokens 128 --json --bandwidth --decode_mode graph --kernels fused --repeat 3 "$@" \
    2>>$OUT/bench.err | sed "s/^{/{\"gemv\": \"$label\", /" >> $OUT/bench.jsonl
  el "lal $shape $label $*"
}
for shape in $SHAPES; do
  bench pdl-on $shape $BATCHES
  LAL_CUDA_PDL=off bench pdl-off $shape 1
  bench sampled $shape 1,2 --temperature 0.7 --top_k 50 --top_p 0.95
  LAL_CUDA_SAMPLER=off bench sampled-ops $shape 1 --temperature 0.7 --top_k 50 --top_p 0.95
done
bench_table $OUT/bench.jsonl
bench_chat_pair $L $TURNS 90
el "chat"
[ "$AHEAD_OFF" = 1 ] && LAL_SCHEDULER_AHEAD=off bench_chat_pair $L $TURNS 90 "batched_ahead_off 0 auto -1 true"
el "total"
