#!/usr/bin/env bash
# Issue 10, the decode kernels (small-batch GEMV with the bias / SwiGLU / float32-logits epilogues, rotary + K/V
# append in one kernel, the token statistics in two) on a GPU host, in one call of under 10 minutes: the README's
# CUDA build (lib.sh), the fused-kernel tests on CUDA, `lal bench generate` on the Qwen2.5-0.5B/7B shapes (the
# BENCHMARKS.md command) with LAL_CUDA_GEMV on and off (cuBLAS for every matrix, the other kernels on), the scheduler and engine tests on CUDA, and, while the call has time left
# (CHAT_BEFORE_S), `lal bench chat --device cuda` on the 7B shape: batched with the kernels against the way main ran
# before the scheduler (one at a time, LibTorch ops, no prefix cache). Run from the repo root with .gpu-debs and
# models/lal-demo (its tokenizer); writes $OUT/*.
#   SHAPES="qwen2.5-0.5b qwen2.5-7b" BATCHES=1,2,4,8,32 GEMVS="on off" TURNS=2 CHAT=1 bash decode_kernels_run.sh
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
SHAPES=${SHAPES:-"qwen2.5-0.5b qwen2.5-7b"} BATCHES=${BATCHES:-1,2,4,8,32} GEMVS=${GEMVS:-"on off"}
BATCHES_CMP=${BATCHES_CMP:-1}  # the batches of the off run (from 2 rows on every setting runs cuBLAS)
TURNS=${TURNS:-2} CHAT=${CHAT:-1}
. tests/reference/gpu/lib.sh
gpu_setup $SHAPES
el "built"
$L --version | head -4
wait $TINY
export LAL_LM_TINY_MODELS=/tmp/tiny
gpu_tests lm_kernel_tests; el "tests"
grep -E "MESSAGE" -A1 $OUT/lm_kernel_tests.txt | grep -v MESSAGE | head -8
wait $MODELS; tail -2 $OUT/models.txt
for shape in $SHAPES; do
  for g in $GEMVS; do
    batches=$BATCHES; [ $g = on ] || batches=$BATCHES_CMP
    LAL_CUDA_GEMV=$g timeout 100 $L bench generate --model_path /tmp/$shape --device cuda --dtype bfloat16 \
      --batch $batches --prompt_len 128 --new_tokens 128 --json --bandwidth --decode_mode graph --kernels fused \
      --repeat 3 2>>$OUT/bench.err | sed "s/^{/{\"gemv\": \"$g\", /" >> $OUT/bench.jsonl
    el "lal $shape gemv $g"
  done
done
bench_table $OUT/bench.jsonl
gpu_tests lm_scheduler_tests lm_engine_tests; el "tests"
if [ "$CHAT" = 1 ] && [ $(( $(date +%s) - T0 )) -lt ${CHAT_BEFORE_S:-300} ]; then
  bench_chat_pair $L $TURNS 60
  el "chat"
fi
el "total"
