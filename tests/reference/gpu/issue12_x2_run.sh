#!/usr/bin/env bash
# One call on nvidia-h200-x2 for what issue 12 still had to show, plus decode traces for issue 10:
#   1. teacher32b_run.sh run C (2 GPUs, torchrun, the 32B-shaped int4 teacher online, a 7B-shaped student), with the
#      train suite built too;
#   2. then side by side: transformers loads run C's export (CPU), training speed at 16 x 1024 beside PyTorch's loop
#      on GPU 0 (train_speed.sh on this build, with the training-kernel unit tests), and on GPU 1 the decode steps of
#      `lal bench generate` under torch's profiler (Qwen2.5-0.5B / -7B shapes, batch 1 and 32, programmatic dependent
#      launch off so that each kernel's time is its own; trace_decode.py prints them).
# Run from the repo root with .gpu-debs and .stage/tok carried. Logs come back as $OUT/*.tgz and text files (8 at most).
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
GPU_TEST_SUITES="lm;train" EXTRA_TARGETS=train_tests SKIP_HF=1 PHASE=2 RUNS=C BUDGET_S=${BUDGET_S:-590} \
  bash tests/reference/gpu/teacher32b_run.sh
el "run C"
B=/tmp/b L=/tmp/b/bin/lal
export LD_LIBRARY_PATH=/tmp/lal-deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}  # lib.sh's prefix (ICU, yaml-cpp, ...)
# transformers on run C's export (CPU only) while the GPUs measure
d=$(ls -d /tmp/runC/c 2>/dev/null) && \
  (timeout 200 python3 tests/train/hf_transformers_check.py $d - > /tmp/hf-C.txt 2>&1; echo "rc=$?" >> /tmp/hf-C.txt) &
HF=$!
(CUDA_VISIBLE_DEVICES=0 PREBUILT=$B TOK=.stage/tok SHAPES=16x1024 OLD= NOKERNELS= DP=none STEPS=12 \
   timeout 150 bash tests/reference/gpu/train_speed.sh > $OUT/train_speed.txt 2>&1) &
TRAIN=$!
(export CUDA_VISIBLE_DEVICES=1 LAL_CUDA_PDL=off
 for shape in qwen2.5-0.5b qwen2.5-7b; do
   python3 tests/reference/make_bench_model.py $shape /tmp/$shape --device cuda > /dev/null 2>&1 || continue
   timeout 60 $L bench generate --model_path /tmp/$shape --device cuda --dtype bfloat16 --batch 1,32 --prompt_len 128 \
     --new_tokens 64 --json --decode_mode graph --kernels fused --trace /tmp/trace-$shape.json >> /tmp/trace-bench.jsonl
   for b in 1 32; do
     echo "--- $shape batch $b (PDL off)"
     python3 tests/reference/gpu/trace_decode.py /tmp/trace-$shape.b$b.json 30
   done
   rm -rf /tmp/$shape
 done) > $OUT/trace.txt 2>&1 &
TRACE=$!
wait $TRAIN; el "training speed"
grep -E "^\{|doctest\] (test cases|assertions)|FAILED|ERROR" $OUT/train_speed.txt | cut -c1-300
grep -E "step span|gemm|lal kernels|copy|rotary" /tmp/o/profile-16x1024.txt 2>/dev/null | head -8
wait $TRACE; el "traces"; head -45 $OUT/trace.txt
wait $HF; el "transformers"; tail -4 /tmp/hf-C.txt
tar czf $OUT/traces.tgz -C /tmp hf-C.txt trace-qwen2.5-0.5b.b1.json trace-qwen2.5-7b.b1.json trace-bench.jsonl 2>/dev/null
el "total"
