#!/usr/bin/env bash
# The lm engine on a GPU host, in one call: build (lib.sh: the top-level CUDA build of lal and the lm tests), engine
# tests on CUDA, CPU-vs-CUDA sampling,
# parity with transformers, benchmarks (lal and the transformers anchor). Run from the repo root with the Debian
# packages of /work/shared/gpu/fetch-debs.sh in .gpu-debs/; writes $OUT/log.txt, $OUT/bench.jsonl, $OUT/parity.jsonl.
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
# The benchmark models are written on the GPU while the engine compiles.
(python3 tests/reference/make_bench_model.py qwen2.5-0.5b /tmp/qwen2.5-0.5b --device cuda && \
 python3 tests/reference/make_bench_model.py qwen2.5-7b /tmp/qwen2.5-7b --device cuda) > $OUT/models.txt 2>&1 &
MODELS=$!
python3 tests/reference/make_tiny_models.py /tmp/tiny > /dev/null 2>&1 &
TINY=$!
. tests/reference/gpu/lib.sh
python3 -c 'import torch,transformers;print("torch",torch.__version__,"cuda",torch.version.cuda,"transformers",transformers.__version__)'
gpu_build lal lm_engine_tests || exit 1
el "built"
wait $TINY
LAL_LM_TINY_MODELS=/tmp/tiny LAL_LM_TEST_DEVICE=cuda timeout 150 $B/bin/lm_engine_tests > $OUT/engine_tests.txt 2>&1; echo "engine tests rc=$?"
tail -4 $OUT/engine_tests.txt; grep -E "ERROR|SIGSEGV|FATAL" -A4 $OUT/engine_tests.txt | head -30
if grep -q "SIGSEGV" $OUT/engine_tests.txt; then
  LAL_LM_TINY_MODELS=/tmp/tiny timeout 60 cuda-gdb -q -batch -ex run -ex bt --args $B/bin/lm_engine_tests -tc="load errors*" 2>&1 | grep -v "^\[New Thread\|^\[Thread" | tail -40
fi
el "engine tests"
# Sampled ids: CPU vs CUDA (float32), same seed, on two tiny models.
for m in qwen2_tied_gqa llama_llama3_headdim; do
  for d in cpu cuda; do $B/bin/lal generate --model_path /tmp/tiny/$m --prompt_ids 1,5,9,2,77 --max_new_tokens 16 --temperature 1.2 --top_p 0.95 --seed 3 --ids --device $d --dtype float32; done
done
timeout 150 python3 tests/reference/hf_parity.py parity /tmp/tiny $B/bin/lal > $OUT/parity.jsonl 2>$OUT/parity.err; tail -3 $OUT/parity.err
grep -c '"greedy_equal_lal_hf": true' $OUT/parity.jsonl | xargs echo "greedy equal:"; grep -c '"greedy_equal_lal_hf": false' $OUT/parity.jsonl | xargs echo "greedy differ:"; tail -1 $OUT/parity.jsonl
el "parity"
wait $MODELS; tail -2 $OUT/models.txt; el "models"
for shape in qwen2.5-0.5b qwen2.5-7b; do
  timeout 90 $B/bin/lal bench generate --model_path /tmp/$shape --device cuda --dtype bfloat16 --batch 1,8 --prompt_len 128 --new_tokens 128 --json --bandwidth --decode_mode graph --repeat 3 | tee -a $OUT/bench.jsonl
  el "lal $shape"
done
for shape in qwen2.5-0.5b qwen2.5-7b; do
  timeout 100 python3 tests/reference/hf_parity.py bench /tmp/$shape 1,8 128 128 2>>$OUT/hf.err | tee -a $OUT/bench.jsonl
  el "hf $shape"
done
timeout 40 $B/bin/lal bench generate --model_path /tmp/qwen2.5-0.5b --device cuda --dtype bfloat16 --batch 1 --prompt_len 128 --new_tokens 128 --json --decode_mode dynamic --repeat 2 | tee -a $OUT/bench.jsonl
el "total"
