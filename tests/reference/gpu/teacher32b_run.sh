#!/usr/bin/env bash
# Issue 12's three end-to-end runs with a Qwen2.5-32B-shaped teacher (ELYZA-Thinking-1.0-Qwen-32B's shape; random
# bf16 weights, 65 GB, written by make_bench_model.py into /dev/shm) on nvidia-h200-x2, as a user would type them:
#   A  one H200, the default student (--student_config auto: the plan picks it), int4 teacher (the default on GPU);
#   B  one H200 capped at 12 GiB (--max_gpu_memory 12GiB), int4 teacher with --cpu_offload, a 0.5B student (the plan
#      then stores the teacher's top-64 log-probabilities: no teacher beside the training);
#   C  two H200 through torchrun (c10d NCCL, ZeRO-1), a Qwen2.5-7B-shaped student (config.json).
# Each prints its plan first (--dry_run), then runs end to end (teacher generation, KD training with the teacher
# online, export); nvidia-smi samples every GPU's memory twice a second; transformers loads every export.
# RUNS picks the runs of one call (default "A B": side by side, one per GPU; C runs alone on both); PHASE=1 also runs
# the engine's GPU tests; CHECK_ALSO names earlier runs whose exports transformers should load too. A warm machine
# keeps the build (/tmp/b: rebuilt incrementally) and the teacher (/dev/shm/q32) between calls:
#   PHASE=1 bash teacher32b_run.sh;  PHASE=2 RUNS=C bash teacher32b_run.sh
# EXTRA_TARGETS adds build targets (e.g. train_tests; GPU_TEST_SUITES="lm;train"); SKIP_HF=1 leaves the transformers
# checks to the caller (issue12_x2_run.sh runs them beside other work).
# Run from the repo root with .gpu-debs and .stage/tok carried; writes $W/*.
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
left() { echo $(( ${BUDGET_S:-570} - ($(date +%s) - T0) )); }
# Logs go to $W and come back as $OUT/logs-PHASE.tgz (a call returns at most 8 files); lib.sh's build log is $OUT/build.txt.
W=/tmp/w32-$(date +%H%M%S); mkdir -p $W; trap 'tar czf $OUT/logs-$PHASE.tgz -C $W .' EXIT
PHASE=${PHASE:-1} Q=/dev/shm/q32 RUNS=${RUNS:-"A B"} CHECK_ALSO=${CHECK_ALSO:-}
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader; date -u; df -h /tmp /dev/shm | tail -2
nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -lms 500 > $W/smi-$PHASE.csv &
SMI=$!
if [ ! -e $Q/model.safetensors.index.json ]; then
  (CUDA_VISIBLE_DEVICES=1 python3 tests/reference/make_bench_model.py qwen2.5-32b $Q --device cuda &&
   cp .stage/tok/tokenizer_config.json $Q/ && gunzip -c .stage/tok/tokenizer.json.gz > $Q/tokenizer.json) \
    > $W/teacher.txt 2>&1 &
  TEACHER=$!
else
  TEACHER=; echo "teacher reused: $(du -sh $Q)"
fi
NCCL_INC=$(python3 -c "import importlib.util as u; s=u.find_spec('nvidia.nccl'); print(list(s.submodule_search_locations)[0]+'/include')" 2>/dev/null)
. tests/reference/gpu/lib.sh
GPU_CMAKE_ARGS="${NCCL_INC:+-DLAL_NCCL_INCLUDE_DIR=$NCCL_INC}" \
  gpu_build lal lm_kernel_tests lm_engine_tests lm_scheduler_tests ${EXTRA_TARGETS:-} || exit 1  # incremental while the machine is warm
L=$B/bin/lal
el "built"; $L --version | head -4
[ -n "$TEACHER" ] && { wait $TEACHER; tail -1 $W/teacher.txt; el "teacher written"; }
mkdir -p /tmp/s7 && python3 -c "
import json
json.dump(dict(model_type='qwen2', architectures=['Qwen2ForCausalLM'], hidden_size=3584, intermediate_size=18944,
  num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False,
  rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=32768, torch_dtype='bfloat16'), open('/tmp/s7/config.json', 'w'))"

common=(--teacher_model $Q --num_epochs 1 --gradient_accumulation 1 --checkpoint_every 100000 --no_progress
        --log_level info)
RUN_A=(--generation_batch_size 32 --student_config auto --num_examples 32 --max_new_tokens 96 --max_length 256 --batch_size 4 --output_dir /tmp/runA
   --hf_model_name a --validation_fraction 0.1)
RUN_B=(--generation_batch_size 32 --max_gpu_memory 12GiB --quantize int4 --cpu_offload --student_config qwen2.5-0.5b --batch_size 1 --max_length 512
   --num_examples 16 --max_new_tokens 64 --output_dir /tmp/runB --hf_model_name b --validation_fraction 0.1)
# C: windows of 16 questions, so each rank generates one of the two (a window is the unit of sharding and resume).
# --save_only_model: the final checkpoint holds the 30 GB of float32 weights, not also the 61 GB of AdamW state (the
# machine's 128 GB disk and a call's 10 minutes; the full checkpoint's gathering was exercised by the earlier runs).
RUN_C=(--generation_batch_size 16 --student_config /tmp/s7/config.json --num_examples 32 --max_new_tokens 96 --max_length 256 --batch_size 2
   --output_dir /tmp/runC --hf_model_name c --validation_fraction 0 --save_only_model)
plan() {  # NAME ARGS...: the plan as printed by --dry_run
  local n=$1; shift; echo "--- plan $n"; "$@" --dry_run 2>&1 | tee $W/plan-$n.txt | grep -vE "^\s*$" | tail -14
}
result() {  # NAME: exit status, stages and the summary of one run
  echo "--- run $1 rc=$(cat $W/rc-$1 2>/dev/null)"
  grep -E "teacher data|generat|training|trained|export|peak|error|Error|memory|student" $W/run-$1.txt | cut -c1-260 | tail -14
  cat /tmp/run$1/*-work/summary.json 2>/dev/null | head -c 1500; echo
  python3 - $W/smi-$PHASE.csv "$2" <<'PY'
import sys
peak = {}
for line in open(sys.argv[1]):
    try: i, m = (int(x) for x in line.split(","))
    except ValueError: continue
    peak[i] = max(peak.get(i, 0), m)
print("peak nvidia-smi memory.used MiB per GPU (this phase):", peak, "-- run on GPU(s)", sys.argv[2])
PY
}
hf_checks() {  # RUN...: transformers loads each run's export and matches the reference (CPU, float32)
  local r d
  for r in "$@"; do
    d=$(ls -d /tmp/run$r/[abc] 2>/dev/null) || { echo "--- run $r: no export"; continue; }
    echo "--- transformers loads $d"
    timeout $(( $(left) - 10 )) python3 tests/train/hf_transformers_check.py $d - 2>&1 | cut -c1-300 | tail -3
  done
}
if [ "$PHASE" = 1 ]; then
  python3 tests/reference/make_tiny_models.py /tmp/tiny > /dev/null 2>&1
  export LAL_LM_TINY_MODELS=/tmp/tiny
  (LAL_LM_TEST_DEVICE=cuda CUDA_VISIBLE_DEVICES=0 timeout 200 $B/bin/lm_kernel_tests > $W/lm_kernel_tests.txt 2>&1
   echo "lm_kernel_tests (cuda) rc=$?" >> $W/tests.txt
   LAL_LM_TEST_DEVICE=cuda CUDA_VISIBLE_DEVICES=0 timeout 200 $B/bin/lm_scheduler_tests > $W/lm_scheduler_tests.txt 2>&1
   echo "lm_scheduler_tests (cuda) rc=$?" >> $W/tests.txt) &
  TESTS=$!
fi
PIDS=
for r in $RUNS; do  # A on GPU 0 and B on GPU 1 side by side; C on both, alone
  [ $r = C ] && continue
  eval "args=(\"\${RUN_$r[@]}\")"; gpu=$([ $r = A ] && echo 0 || echo 1)
  CUDA_VISIBLE_DEVICES=$gpu plan $r $L distill "${common[@]}" "${args[@]}"
  (CUDA_VISIBLE_DEVICES=$gpu timeout $(left) $L distill "${common[@]}" "${args[@]}" > $W/run-$r.txt 2>&1
   echo $? > $W/rc-$r) &
  PIDS="$PIDS $!"
done
[ "$PHASE" = 1 ] && { wait $TESTS; cat $W/tests.txt; grep -E "test cases|assertions" $W/lm_*_tests.txt | head -6; }
# Only the runs' pids: a bare `wait` would also wait for the nvidia-smi sampler, which never ends.
# shellcheck disable=SC2086  # a list of process ids
[ -n "$PIDS" ] && wait $PIDS; el "runs $RUNS"
for r in $RUNS; do [ $r = C ] || result $r "$([ $r = A ] && echo 0 || echo 1)"; done
if [[ " $RUNS " == *" C "* ]]; then
  TR="torchrun"; command -v torchrun >/dev/null || TR="python3 -m torch.distributed.run"
  plan C $TR --nproc-per-node 2 --no-python $L distill "${common[@]}" "${RUN_C[@]}"
  timeout $(( $(left) - 150 )) $TR --nproc-per-node 2 --no-python $L distill "${common[@]}" "${RUN_C[@]}" \
    > $W/run-C.txt 2>&1; echo $? > $W/rc-C
  el "C"; result C 0,1
fi
[ "${SKIP_HF:-0}" = 1 ] || hf_checks $RUNS $CHECK_ALSO
kill $SMI; el "total"; df -h /tmp /dev/shm | tail -2
