#!/usr/bin/env bash
# lal vs transformers on checkpoints that transformers writes itself (conformance.py), on a GPU host, in one call.
# Run from the repo root with the Debian packages of /work/shared/gpu/fetch-debs.sh in .gpu-debs/ (see run.sh).
#   conformance.sh write   only let transformers write the checkpoints (+ its logits and greedy ids) and bring
#                          them back as $OUT/conformance.tar.gz (fixtures for tests/lm/hf5_configs)
#   conformance.sh         build lal and the lm tests (lib.sh: the top-level CUDA build), run the engine tests and the
#                          fused-kernel parity tests on CUDA, write, then check on CPU and CUDA (fused kernels on:
#                          --device cuda picks them); $OUT/conformance.jsonl holds one line per variant and device.
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
D=/tmp/conformance
python3 -c 'import torch,transformers;print("torch",torch.__version__,"cuda",torch.version.cuda,"transformers",transformers.__version__)'
if [ "${1:-}" = write ]; then
  python3 tests/reference/gpu/conformance.py write $D 2>$OUT/write.err | tee $OUT/write.jsonl; tail -5 $OUT/write.err
  python3 - <<'PY'
import inspect, os, transformers.modeling_rope_utils as r, transformers.generation.configuration_utils as g
import transformers.models.phi3.configuration_phi3 as p, transformers.models.gpt_neox.configuration_gpt_neox as n
import transformers.models.qwen2.configuration_qwen2 as q, transformers.models.llama.configuration_llama as l
import transformers.configuration_utils as c
os.makedirs("/tmp/conformance/_src", exist_ok=True)
for m in (r, g, p, n, q, l, c):
    open("/tmp/conformance/_src/" + m.__name__.split(".")[-1] + ".py", "w").write(inspect.getsource(m))
PY
  tar -C /tmp -czf $OUT/conformance.tar.gz conformance; ls -la $OUT; el "written"
  exit 0
fi
(python3 tests/reference/gpu/conformance.py write $D > $OUT/write.jsonl 2>$OUT/write.err) &
WRITER=$!
python3 tests/reference/make_tiny_models.py /tmp/tiny > /dev/null 2>&1 &
TINY=$!
. tests/reference/gpu/lib.sh
gpu_build lal lm_config_tests lm_engine_tests lm_kernel_tests || exit 1
el "built"
$B/bin/lm_config_tests 2>&1 | tail -2
wait $TINY
LAL_LM_TINY_MODELS=/tmp/tiny LAL_LM_TEST_DEVICE=cuda timeout 200 $B/bin/lm_engine_tests \
  -tc="config.json in the*,dynamic NTK*,prompt_logits*,float32 logits*,greedy generation*" > $OUT/engine_tests.txt 2>&1
echo "engine tests (CUDA) rc=$?"; tail -3 $OUT/engine_tests.txt; grep -E "ERROR" -A3 $OUT/engine_tests.txt | head -20
LAL_LM_TINY_MODELS=/tmp/tiny timeout 120 $B/bin/lm_kernel_tests > $OUT/kernel_tests.txt 2>&1
echo "kernel parity tests (CUDA) rc=$?"; grep -E "ERROR|MESSAGE|values:" -A2 $OUT/kernel_tests.txt | head -40; tail -3 $OUT/kernel_tests.txt
el "engine and kernel tests"
wait $WRITER; cat $OUT/write.jsonl; tail -3 $OUT/write.err; el "written"
python3 tests/reference/gpu/conformance.py check $D $B/bin/lal > $OUT/conformance.jsonl; cat $OUT/conformance.jsonl
el "checked"
