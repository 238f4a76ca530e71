#!/usr/bin/env bash
# Issue 10, one nvidia-h200-x2 call (its 128 GB disk holds the 32B shape's random bf16 weights, which the one-GPU
# machine's 64 GB do not): lal bench generate on the Qwen2.5-32B shape (the teacher's) at batch 1 and 16 on GPU 0,
# while GPU 1 runs lm_kernel_tests and the 7B shape at batch 32 with 2 to 12 key splits of decode attention
# (LAL_CUDA_ATTENTION_SPLITS; empty = the engine's count). Run from the repo root with .gpu-debs (and PATCH=FILE...,
# carried); writes $OUT/*.
set -u
. tests/reference/gpu/lib.sh
gpu_begin
(CUDA_VISIBLE_DEVICES=0 python3 tests/reference/make_bench_model.py qwen2.5-32b /tmp/qwen2.5-32b --device cuda \
   > $OUT/models32.txt 2>&1; echo "32B model rc=$?" >> $OUT/models32.txt) &
M32=$!
export CUDA_VISIBLE_DEVICES=1
gpu_setup qwen2.5-7b
el "built"
export LAL_LM_TINY_MODELS=/tmp/tiny; wait $TINY
gpu_tests lm_kernel_tests
wait $MODELS
for sp in "" 2 6 12; do
  LAL_CUDA_ATTENTION_SPLITS=$sp timeout 60 $L bench generate --model_path /tmp/qwen2.5-7b --device cuda --dtype bfloat16 \
    --batch 32 --prompt_len 128 --new_tokens 128 --json --bandwidth --decode_mode graph --kernels fused --repeat 3 \
    2>/dev/null | sed "s/^{/{\"gemv\": \"splits-${sp:-engine}\", /" >> $OUT/bench.jsonl
done
bench_table $OUT/bench.jsonl
el "7B batch 32"
wait $M32; tail -2 $OUT/models32.txt; el "32B model written"
CUDA_VISIBLE_DEVICES=0 timeout 200 $L bench generate --model_path /tmp/qwen2.5-32b --device cuda --dtype bfloat16 \
  --batch 1,16 --prompt_len 128 --new_tokens 128 --json --bandwidth --decode_mode graph --kernels fused --repeat 2 \
  2>$OUT/bench32.err > $OUT/bench32.jsonl
tail -3 $OUT/bench32.err; bench_table $OUT/bench32.jsonl
el "total"
