#!/usr/bin/env bash
# One call on a GPU host for the kernel work of issues 10 and 12: the README's CUDA build (lib.sh) with the lm and
# train test suites; the fused-kernel, quantization (the dequantized cache), scheduler and engine tests on CUDA;
# training speed at 16 x 1024 beside PyTorch's loop (train_speed.sh on this build, with the training-kernel tests);
# `lal bench generate` on the Qwen2.5-0.5B / -7B shapes (bf16, and the 7B shape int4 with and without the
# dequantized cache); and the decode steps' kernels under torch's profiler (trace_decode.py prints them).
# Run from the repo root with .gpu-debs and .stage/tok carried; writes $OUT/*.
#   PARTS="tests train bench trace" TRAIN_SHAPES=16x1024 bash tests/reference/gpu/kernels_profile_run.sh
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
PARTS=${PARTS:-"tests train bench trace"} TRAIN_SHAPES=${TRAIN_SHAPES:-16x1024}
has() { [[ " $PARTS " == *" $1 "* ]]; }
. tests/reference/gpu/lib.sh
GPU_TEST_SUITES="lm;train" gpu_setup qwen2.5-0.5b qwen2.5-7b
el "built"
$L --version | head -4
wait $TINY
export LAL_LM_TINY_MODELS=/tmp/tiny
if has tests; then
  gpu_tests lm_kernel_tests lm_quantize_tests; el "kernel and quantization tests"
fi
if has train; then
  PREBUILT=$B TOK=.stage/tok SHAPES="$TRAIN_SHAPES" OLD= NOKERNELS= DP=none STEPS=12 \
    timeout 240 bash tests/reference/gpu/train_speed.sh > $OUT/train_speed.txt 2>&1
  grep -E "^\{|unit tests|doctest|FAILED|ERROR|largest relative" $OUT/train_speed.txt | cut -c1-300 | tail -20
  grep -E "lal kernels|gemm|attention|rotary|total|busy" /tmp/o/profile-16x1024.txt 2>/dev/null | head -20
  el "training speed"
fi
wait $MODELS; tail -2 $OUT/models.txt
if has bench; then
  for shape in qwen2.5-0.5b qwen2.5-7b; do
    timeout 100 $L bench generate --model_path /tmp/$shape --device cuda --dtype bfloat16 --batch 1,32 \
      --prompt_len 128 --new_tokens 128 --json --bandwidth --decode_mode graph --kernels fused --repeat 3 \
      2>>$OUT/bench.err >> $OUT/bench.jsonl
  done
  for cache in 0 60000; do
    timeout 100 $L bench generate --model_path /tmp/qwen2.5-7b --device cuda --dtype int4 --batch 1,16 \
      --prompt_len 128 --new_tokens 64 --json --decode_mode graph --kernels fused --repeat 2 \
      --dequantized_cache_mb $cache 2>>$OUT/bench.err >> $OUT/bench.jsonl
  done
  bench_table $OUT/bench.jsonl
  grep -o '"model": "[^"]*dequantized[^"]*"' $OUT/bench.jsonl | head -2
  el "bench generate"
fi
if has trace; then  # one generate() under torch's profiler per shape and batch: the decode steps' kernels
  for shape in qwen2.5-7b qwen2.5-0.5b; do
    timeout 100 $L bench generate --model_path /tmp/$shape --device cuda --dtype bfloat16 --batch 1,32 \
      --prompt_len 128 --new_tokens 64 --json --decode_mode graph --kernels fused --trace /tmp/trace-$shape.json \
      > /dev/null 2>>$OUT/trace.err
    for b in 1 32; do
      echo "--- $shape batch $b"
      python3 tests/reference/gpu/trace_decode.py /tmp/trace-$shape.b$b.json 22 | tee -a $OUT/trace.txt
    done
  done
  el "traces"
fi
if has tests; then
  gpu_tests lm_scheduler_tests lm_engine_tests; el "scheduler and engine tests"
fi
el "total"
