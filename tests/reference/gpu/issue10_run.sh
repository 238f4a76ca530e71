#!/usr/bin/env bash
# Issue 10 on a GPU host, in one call: the user's CUDA build (scripts/build.sh with LAL_TORCH_PYTHON and the .debs
# unpacked into a prefix, README "GPU"), `lal --version`, the GPU tests (fused kernels, scheduler, engine), then
# `lal bench generate` (Qwen2.5-0.5B/7B shapes, batch 1/8/32, fused kernels) beside transformers' generate(), and
# `lal bench chat --device cuda` on the 7B shape: the thinking pipeline with the batching scheduler against the
# same binary run the way main ran before (one generation at a time, LibTorch ops, no prefix cache).
# Run from the repo root with .gpu-debs carried (models/lal-demo for its tokenizer); writes $OUT/*.
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
SHAPES=${SHAPES:-"qwen2.5-0.5b qwen2.5-7b"} BATCHES=${BATCHES:-1,8,32} TURNS=${TURNS:-3} HF=${HF:-1}
KERNELS=${KERNELS:-"fused torch"} HF_BATCHES=${HF_BATCHES:-$BATCHES}
(for s in $SHAPES; do python3 tests/reference/make_bench_model.py $s /tmp/$s --device cuda; done
 cp models/lal-demo/tokenizer.json models/lal-demo/tokenizer_config.json /tmp/qwen2.5-7b/) > $OUT/models.txt 2>&1 &
python3 tests/reference/make_tiny_models.py /tmp/tiny > /dev/null 2>&1 &
. tests/reference/gpu/lib.sh  # bench_table
PFX=/tmp/lal-deps; mkdir -p $PFX; for f in .gpu-debs/*.deb; do dpkg -x "$f" $PFX; done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
export PATH=$PATH:/usr/local/cuda/bin
# The README's command for a machine without Debian's dev packages:
LAL_DEPS_PREFIX=$PFX LAL_TORCH_PYTHON=python3 LAL_JOBS=16 ./scripts/build.sh -DLAL_BUILD_TESTS=OFF \
  -DCMAKE_CUDA_ARCHITECTURES=90 > $OUT/build.txt 2>&1; echo "scripts/build.sh rc=$?"
grep -E "lal_lm:|Error|error:" $OUT/build.txt | head -20
el "built (scripts/build.sh)"
L=build-cuda/bin/lal
export LD_LIBRARY_PATH=$PFX/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
[ -x $L ] || { tail -30 $OUT/build.txt; exit 1; }
$L --version
cmake build-cuda -DLAL_BUILD_TESTS=ON >> $OUT/build.txt 2>&1 && \
  ninja -C build-cuda -j16 lm_kernel_tests lm_scheduler_tests lm_engine_tests >> $OUT/build.txt 2>&1 || grep -E "error" -A3 $OUT/build.txt | head -30
el "tests built"
wait
export LAL_LM_TINY_MODELS=/tmp/tiny
for t in lm_kernel_tests lm_scheduler_tests lm_engine_tests; do
  LAL_LM_TEST_DEVICE=cuda timeout 200 build-cuda/bin/$t > $OUT/$t.txt 2>&1; echo "$t (cuda) rc=$?"
  grep -E "ERROR|FATAL|SIGSEGV|values:" -A2 $OUT/$t.txt | head -24; tail -3 $OUT/$t.txt | head -2
done
el "tests"; tail -3 $OUT/models.txt
for shape in $SHAPES; do
  for k in $KERNELS; do  # torch: the LibTorch ops main ran before the kernels
    timeout 150 $L bench generate --model_path /tmp/$shape --device cuda --dtype bfloat16 --batch $BATCHES \
      --prompt_len 128 --new_tokens 128 --json --bandwidth --decode_mode graph --kernels $k --repeat 3 \
      >> $OUT/bench.jsonl 2>>$OUT/bench.err
    el "lal $shape $k"
  done
done
bench_chat_pair $L $TURNS 200
el "chat"
if [ "$HF" = 1 ]; then
  for shape in $SHAPES; do
    timeout 200 python3 tests/reference/hf_parity.py bench /tmp/$shape $HF_BATCHES 128 128 2>>$OUT/hf.err >> $OUT/bench.jsonl
    el "hf $shape"
  done
fi
bench_table $OUT/bench.jsonl
el "total"
