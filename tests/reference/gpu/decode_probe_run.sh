#!/usr/bin/env bash
# Issue 10's open questions after 2026-11-30 (written then, not yet run), in one nvidia-h200 call:
#   1. Why decode attention takes ~16 us a 7B layer at batch 1 for ~200 cached keys (its bytes need ~1 us, its
#      arithmetic less): Nsight Compute on a few launches (speed of light, occupancy, warp stall reasons, source
#      counters), --decode_mode graph as the benchmark runs it.
#   2. Where a `lal bench chat` turn loses ~1 s that its decode steps do not account for (batched thinking turn 1:
#      exploration + analysis at 10.9 ms a token against 4.9 in the answer; turn 2: 1.15 s between the analysis's
#      end and the answer's first token): the same bench with --log_level debug (timestamps of every stage) and a
#      torch trace of the turn would show whether it is prefill of new lengths (cuDNN attention plans are made per
#      shape), the scheduler, or a module.
# Run from the repo root with .gpu-debs (and PATCH=FILE..., carried); writes $OUT/*. Its 19:20 UTC run (PATCH: the then
# unlanded cuDNN switch and fold branches) is in docs/benchmarks.md.
set -u
. tests/reference/gpu/lib.sh
gpu_begin
(sleep 20; timeout 90 python3 tests/reference/gpu/sdpa_plan_probe.py > $OUT/sdpa_probe.txt 2>&1) &
gpu_setup qwen2.5-7b qwen2.5-0.5b
el "built"; wait $MODELS
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null)
LAL_CUDA_PDL=off timeout 150 $NCU --graph-profiling node -k regex:decode_attention --launch-skip 100 --launch-count 3 \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section SourceCounters \
  --section InstructionStats --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio \
  $L bench generate --model_path /tmp/qwen2.5-7b --device cuda --dtype bfloat16 --batch 1 --prompt_len 128 \
  --new_tokens 16 --decode_mode graph --kernels fused > $OUT/ncu_attention.txt 2>&1
grep -E "Duration|Achieved Occupancy|Registers|Stall|Warp Cycles|Memory Throughput|Compute \(SM\)|stalled_(no_inst|long_score|short_score|wait|barrier|math|mio|lg_thr|branch|dispatch|not_sel|select)" $OUT/ncu_attention.txt | head -60
cat $OUT/sdpa_probe.txt
el "ncu"
export LAL_LM_TINY_MODELS=/tmp/tiny; wait $TINY
gpu_tests lm_kernel_tests lm_engine_tests lm_scheduler_tests
for m in qwen2.5-7b qwen2.5-0.5b; do timeout 100 $L bench generate --model_path /tmp/$m --device cuda --dtype bfloat16 --batch 1,32 --prompt_len 128 \
  --new_tokens 128 --json --bandwidth --decode_mode graph --kernels fused --repeat 2 2>/dev/null >> $OUT/bench.jsonl; done; bench_table $OUT/bench.jsonl
# LibTorch's attention choice (cuDNN first on sm90) against cuDNN kept off at inference.
for cudnn in on off; do
  LAL_CUDA_SDPA_CUDNN=$cudnn timeout 100 $L bench chat --model_path /tmp/qwen2.5-7b --device cuda --turns 2 --json \
    --log_level debug --set 'modules.*.config.min_tokens=100000' > $OUT/chat_$cudnn.json 2> $OUT/chat_debug_$cudnn.txt
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], [(k, {m: round(v) for m, v in r[k].items() if m.endswith('ms')}) for k in r])" $OUT/chat_$cudnn.json "cudnn $cudnn"
done
grep -E "concluding|prefill|admit|turn" $OUT/chat_debug_on.txt | head -30
el "total"
