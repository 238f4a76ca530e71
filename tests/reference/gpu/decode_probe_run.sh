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
# Run from the repo root with .gpu-debs carried; writes $OUT/*.
set -u
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
trap 'cd $OUT && tar czf all.tgz --exclude=all.tgz . 2>/dev/null; ls | grep -v "^all.tgz$" | xargs rm -rf' EXIT
. tests/reference/gpu/lib.sh
gpu_setup qwen2.5-7b
el "built"; wait $MODELS
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null)
LAL_CUDA_PDL=off timeout 200 $NCU --graph-profiling node -k regex:decode_attention --launch-skip 100 --launch-count 3 \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section SourceCounters \
  $L bench generate --model_path /tmp/qwen2.5-7b --device cuda --dtype bfloat16 --batch 1 --prompt_len 128 \
  --new_tokens 16 --decode_mode graph --kernels fused > $OUT/ncu_attention.txt 2>&1
grep -E "Duration|Achieved Occupancy|Registers|Stall|Warp Cycles|Memory Throughput|Compute \(SM\)" $OUT/ncu_attention.txt | head -40
el "ncu"
timeout 120 $L bench chat --model_path /tmp/qwen2.5-7b --device cuda --turns 2 --json --log_level debug \
  --set 'modules.*.config.min_tokens=100000' > $OUT/chat.json 2> $OUT/chat_debug.txt
grep -E "concluding|prefill|admit|turn" $OUT/chat_debug.txt | head -40
el "total"
