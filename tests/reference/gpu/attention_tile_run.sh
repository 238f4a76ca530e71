#!/usr/bin/env bash
# Issue 10, one nvidia-h200 call: the tile decode-attention kernel (LAL_CUDA_ATTENTION=tile, the default) against the
# warp kernel it replaces, with 1 to 8 query heads per block (LAL_CUDA_ATTENTION_HEADS); cuDNN attention kept off at
# inference (LAL_CUDA_SDPA_CUDNN). (Its 20:05 UTC run also measured LAL_CUDA_ATTENTION_FOLD, since removed.) In order:
#   1. lm_kernel_tests (both attention kernels vs float64 on six head shapes), lm_engine_tests, lm_scheduler_tests on CUDA;
#   2. lal bench generate, Qwen2.5-7B and -0.5B shapes, batch 1 and 32, each setting of SETTINGS; transformers on the
#      same checkpoints (hf_parity.py bench; HF=0 leaves it out);
#   3. per-kernel times of the default's decode steps (torch profiler, PDL off; trace_decode.py);
#   4. lal bench chat on the 7B shape, the pipeline now and as before (bench_chat_pair);
#   5. with NCU=1, Nsight Compute on the attention kernels (7B, batch 1).
# Run from the repo root with .gpu-debs (and PATCH=FILE..., carried); writes $OUT/*.
set -u
. tests/reference/gpu/lib.sh
gpu_begin
gpu_setup qwen2.5-7b qwen2.5-0.5b
el "built"
export LAL_LM_TINY_MODELS=/tmp/tiny; wait $TINY
gpu_tests lm_kernel_tests lm_engine_tests lm_scheduler_tests
el "tests"; wait $MODELS
# Settings: kernel, query heads per block of the tile kernel (- = the engine's choice).
for setting in ${SETTINGS:-"tile -" "tile 4" "tile 2" "warp -"}; do
  set -- $setting
  h=$2; [ "$h" = - ] && h=
  for m in qwen2.5-7b qwen2.5-0.5b; do
    LAL_CUDA_ATTENTION=$1 LAL_CUDA_ATTENTION_HEADS=$h \
      timeout 100 $L bench generate --model_path /tmp/$m --device cuda --dtype bfloat16 --batch 1,32 --prompt_len 128 \
      --new_tokens 128 --json --bandwidth --decode_mode graph --kernels fused --repeat 3 2>/dev/null \
      | sed "s/^{/{\"gemv\": \"$1-heads-$2\", /" >> $OUT/bench.jsonl
  done
done
# The anchor in the same call: transformers on the same checkpoints.
[ "${HF:-1}" = 1 ] && for m in qwen2.5-7b qwen2.5-0.5b; do
  timeout 150 python3 tests/reference/hf_parity.py bench /tmp/$m 1,32 128 128 >> $OUT/bench.jsonl 2> $OUT/hf_$m.err
done
bench_table $OUT/bench.jsonl
el "bench"
(export LAL_CUDA_PDL=off
 for m in qwen2.5-7b qwen2.5-0.5b; do
   timeout 60 $L bench generate --model_path /tmp/$m --device cuda --dtype bfloat16 --batch 1,32 --prompt_len 128 \
     --new_tokens 64 --json --decode_mode graph --kernels fused --trace /tmp/trace-$m.json > /dev/null 2>&1
   for b in 1 32; do echo "--- $m batch $b (PDL off)"; python3 tests/reference/gpu/trace_decode.py /tmp/trace-$m.b$b.json 14; done
 done) > $OUT/trace.txt 2>&1
grep -E "^---|step span|attention|combine" $OUT/trace.txt | head -24
el "traces"
bench_chat_pair $L 2 120
el "chat"
[ "${NCU:-0}" = 1 ] || exit 0
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null)
LAL_CUDA_PDL=off timeout 100 $NCU --graph-profiling node -k regex:"decode_attention|combine_splits" --launch-skip 100 \
  --launch-count 2 --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
  --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio \
  $L bench generate --model_path /tmp/qwen2.5-7b --device cuda --dtype bfloat16 --batch 1 --prompt_len 128 \
  --new_tokens 16 --decode_mode graph --kernels fused > $OUT/ncu_attention.txt 2>&1
grep -E "decode_attention|Duration|Achieved Occupancy|Registers Per|Warp Cycles Per Issued|stalled_(long_score|wait|no_inst)" \
  $OUT/ncu_attention.txt | head -24
el "total"
