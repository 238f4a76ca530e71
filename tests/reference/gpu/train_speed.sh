#!/usr/bin/env bash
# Training speed of `lal distill` beside PyTorch's own loop (tests/reference/train_loop_bench.py), in one call on a
# GPU host (core/train/BENCHMARKS.md "Training speed"): build lal against the wheel's LibTorch, run the core/train
# unit tests there (the fused AdamW on CPU exists in LibTorch 2.11), then for each batch x length: the PyTorch loop
# and `lal distill` on the same qwen2.5-0.5b-shaped student with hard labels (a text corpus cut into full-length
# rows), old path (unchunked loss, per-tensor AdamW, no packing) and new defaults, one step under torch's profiler,
# and, when two GPUs are present, the same run on 2 ranks (torchrun) for scaling. Checkpoint writes are outside the
# timed steps (per-step tokens/s from metrics.jsonl). Needs .gpu-debs/ and .tok/ (Qwen tokenizer.json + config).
# (.tok/tokenizer.json may be gzipped: tokenizer.json.gz.) Knobs: SHAPES="8x512 16x1024" STEPS=20 PEAK=989 (TFLOP/s, dense bf16),
# OLD=<shape> (the old loss/optimizer path at that shape; empty: none), NOKERNELS=all|"<shapes>" (those shapes also
# with LAL_TRAIN_KERNELS=off, profiled; empty: none), EXTRA="<lal options>" (one more run at EXTRA_SHAPE with them),
# DP=<shape> (the 2-GPU run's shape when two GPUs are present; "none": no 2-GPU run), TOK=<folder of the tokenizer>
# (default .tok), PREBUILT=<build folder that already holds bin/lal and bin/train_tests> (skips the build),
# SINGLE=0 (only the 2-GPU run: no unit tests, anchor or 1-GPU runs), DP_PROFILE=<step> (profile that step of the
# 2-GPU run on rank 0; its summary in dp2-<shape>.profile.txt), DP_TAG=<name> DP_ARGS="<lal options>" (a 2-GPU
# variant: run dp2<tag>-<shape> with those options). The student's vocabulary is the tokenizer's rounded up to a multiple of
# 64 on both sides (what lal distill does on text). Writes $O/*.
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
SHAPES=${SHAPES:-"8x512 16x1024"} OLD=${OLD-8x512} NOKERNELS=${NOKERNELS-all} EXTRA_SHAPE=${EXTRA_SHAPE:-16x1024} DP=${DP:-16x1024} STEPS=${STEPS:-15} PEAK=${PEAK:-989}
O=/tmp/o; mkdir -p $O  # logs; $OUT gets results.jsonl, logs.tgz and the first profile trace (few files come back)
trap 'cp $O/results.jsonl $OUT/ 2>/dev/null; tar czf $OUT/logs.tgz -C $O . 2>/dev/null' EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; date -u
NGPU=$(nvidia-smi -L | wc -l)
PFX=/tmp/pfx; mkdir -p $PFX; for f in .gpu-debs/*.deb .debs-extra/*.deb; do [ -e "$f" ] && dpkg -x "$f" $PFX; done
export LD_LIBRARY_PATH=$PFX/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export PKG_CONFIG_SYSROOT_DIR=$PFX PKG_CONFIG_PATH=$PFX/usr/lib/x86_64-linux-gnu/pkgconfig:$PFX/usr/share/pkgconfig
TP=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
NCCL_INC=$(python3 -c 'import nvidia.nccl,os;print(os.path.join(list(nvidia.nccl.__path__)[0],"include"))' 2>/dev/null)
B=${PREBUILT:-${B:-/tmp/bc}} TOK=${TOK:-.tok}
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[ -n "${PREBUILT:-}" ] || cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DTorch_DIR=$TP/Torch "-DCMAKE_PREFIX_PATH=$TP;$PFX/usr" \
  -DLAL_FMT_INCLUDE_FIRST=$PFX/usr/include -DCMAKE_CUDA_COMPILER=$NVCC -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DTORCH_CUDA_ARCH_LIST=9.0 -DLAL_BUILD_TESTS=ON -DLAL_TEST_SUITES=train ${NCCL_INC:+-DLAL_NCCL_INCLUDE_DIR=$NCCL_INC} \
  > $O/build.txt 2>&1 || { tail -30 $O/build.txt; exit 1; }
# The student config and the corpus while the build runs.
mkdir -p /tmp/tok && cp $TOK/* /tmp/tok/ && { [ ! -e /tmp/tok/tokenizer.json.gz ] || gunzip -f /tmp/tok/tokenizer.json.gz; }
python3 - <<'PY'
import json, os, random
os.makedirs("/tmp/anchor", exist_ok=True)
tok = json.load(open("/tmp/tok/tokenizer.json"))
vocab = len(tok["model"]["vocab"]) + len(tok.get("added_tokens", []))
vocab = (vocab + 63) // 64 * 64  # as lal distill rounds a text student's vocabulary (--vocab_multiple 64): both sides
json.dump(dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_size=896, intermediate_size=4864,
               num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, vocab_size=vocab,
               tie_word_embeddings=True, rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=32768),
          open("/tmp/anchor/config.json", "w"))
# Text: paragraphs of the repository's own docs, shuffled, repeated (the stream is cut into full max_length rows).
paras = []
for root, _, files in os.walk("docs"):
    for f in files:
        if f.endswith(".md"):
            paras += [p for p in open(os.path.join(root, f), encoding="utf-8").read().split("\n\n") if p.strip()]
random.seed(0)
with open("/tmp/corpus.txt", "w", encoding="utf-8") as out:
    for _ in range(30):
        random.shuffle(paras)
        out.write("\n\n".join(paras) + "\n\n")
PY
cp /tmp/tok/*.json /tmp/anchor/
[ -n "${PREBUILT:-}" ] || ninja -C $B -j$(nproc) lal train_tests >> $O/build.txt 2>&1 || { grep -E "error" -A3 $O/build.txt | head -40; exit 1; }
grep -E "fused CUDA kernels|no CUDA toolkit" $O/build.txt; el "built"; grep -c "warning:" $O/build.txt | xargs echo "build warnings:"; grep "warning:" $O/build.txt | sort -u | head -5
SINGLE=${SINGLE:-1}
[ "$SINGLE" = 1 ] && LAL_TRAIN_FIXTURES=/nonexistent $B/bin/train_tests -tc="AdamW*,gradient clipping*,chunked*,sequence packing*,activation*,training kernels*" > $O/unit-tests.txt 2>&1; grep -E "^\[doctest\]|ERROR|FAILED|largest relative" $O/unit-tests.txt | tail -12
el "unit tests"
LAL="$B/bin/lal distill --corpus /tmp/corpus.txt --tokenizer /tmp/anchor/tokenizer.json --student_config /tmp/anchor/config.json \
 --num_epochs 1 --gradient_accumulation 1 --checkpoint_every 100000 --validation_fraction 0.002 --save_hf_format false \
 --learning_rate 2e-4 --progress false --max_steps $STEPS"
summarise() {  # name, work dir: median tokens/s of steps 4.. (processed positions), MFU = 6 N tok/s / peak
  python3 - "$1" "$2" $PEAK <<'PY' | tee -a $O/results.jsonl
import json, statistics, sys
name, work, peak = sys.argv[1], sys.argv[2], float(sys.argv[3])
steps = [r for r in map(json.loads, open(work + "/metrics.jsonl")) if "tokens_per_s" in r]
params = json.load(open(work + "/summary.json"))["student_parameters"]
rows = [json.loads(l) for l in open(work + "/data.jsonl")]
seq = sum(len(r["prompt_ids"]) + len(r["completion_ids"]) for r in rows)
pred = sum(len(r["prompt_ids"]) + len(r["completion_ids"]) - 1 for r in rows)
tps = statistics.median(r["tokens_per_s"] for r in steps[3:]) * seq / pred  # processed positions per second
print(json.dumps({"run": name, "steps": len(steps), "params": params, "tokens_per_s": tps,
                  "mfu": 6 * params * tps / (peak * 1e12), "first_loss": steps[0]["loss"], "last_loss": steps[-1]["loss"]}))
PY
}
run_lal() {  # name, extra args
  local name=$1; shift
  /usr/bin/time -f "%e s wall, %M KiB peak RSS" $LAL --output_dir /tmp/runs/$name "$@" > $O/$name.txt 2>&1 || tail -5 $O/$name.txt
  cp /tmp/runs/$name/lal-brain-model-work/metrics.jsonl $O/$name.metrics.jsonl 2>/dev/null
  summarise $name /tmp/runs/$name/lal-brain-model-work
}
for shape in $SHAPES; do
  BS=${shape%x*}; LEN=${shape#*x}
  if [ "$SINGLE" = 1 ]; then
  python3 tests/reference/train_loop_bench.py /tmp/anchor --batch $BS --seq $LEN --steps $STEPS --warmup 3 \
    --peak_tflops $PEAK 2>&1 | grep '^{' | tee -a $O/results.jsonl
  el "anchor $shape"
  [ "$shape" = "$OLD" ] && run_lal old-$shape --batch_size $BS --max_length $LEN --loss_chunk_tokens 0 --adamw loop --pack_sequences false
  [ "$shape" = "$OLD" ] && el "lal old $shape"
  if [ "$NOKERNELS" = all ] || [[ " $NOKERNELS " == *" $shape "* ]]; then  # the same binary with the LibTorch ops instead of the training kernels
    LAL_TRAIN_KERNELS=off run_lal nokernels-$shape --batch_size $BS --max_length $LEN --profile_step 8
    python3 tests/reference/gpu/profile_summary.py /tmp/runs/nokernels-$shape/lal-brain-model-work/profile-step-8.json \
      > $O/profile-nokernels-$shape.txt 2>&1; head -30 $O/profile-nokernels-$shape.txt
    el "lal without training kernels $shape"
  fi
  run_lal new-$shape --batch_size $BS --max_length $LEN --profile_step 8
  el "lal new $shape"
  grep -E "speed settings|profiler" $O/new-$shape.txt | cut -c1-300
  cp /tmp/runs/new-$shape/lal-brain-model-work/profile-step-8.json /tmp/prof-$shape.json 2>/dev/null
  [ -e $OUT/trace.json.gz ] || gzip -c /tmp/prof-$shape.json > $OUT/trace.json.gz 2>/dev/null
  python3 tests/reference/gpu/profile_summary.py /tmp/prof-$shape.json > $O/profile-$shape.txt 2>&1; head -40 $O/profile-$shape.txt
  if [ -n "${EXTRA:-}" ] && [ "$shape" = "$EXTRA_SHAPE" ]; then  # one more variant of the new defaults
    run_lal extra-$shape --batch_size $BS --max_length $LEN $EXTRA
    el "lal $EXTRA $shape"
  fi
  fi
  if [ "$NGPU" -ge 2 ] && [ "$shape" = "$DP" ]; then
    torchrun --nproc-per-node 2 --no-python $LAL --output_dir /tmp/runs/dp2${DP_TAG:-}-$shape --batch_size $BS --max_length $LEN ${DP_ARGS:-} \
      ${DP_PROFILE:+--profile_step $DP_PROFILE} > $O/dp2${DP_TAG:-}-$shape.txt 2>&1 || tail -5 $O/dp2${DP_TAG:-}-$shape.txt
    [ -z "${DP_PROFILE:-}" ] || python3 tests/reference/gpu/profile_summary.py \
      /tmp/runs/dp2${DP_TAG:-}-$shape/lal-brain-model-work/profile-step-$DP_PROFILE.json > $O/dp2${DP_TAG:-}-$shape.profile.txt 2>&1
    [ -z "${DP_PROFILE:-}" ] || head -40 $O/dp2${DP_TAG:-}-$shape.profile.txt
    cp /tmp/runs/dp2${DP_TAG:-}-$shape/lal-brain-model-work/metrics.jsonl $O/dp2${DP_TAG:-}-$shape.metrics.jsonl 2>/dev/null
    summarise dp2${DP_TAG:-}-$shape /tmp/runs/dp2${DP_TAG:-}-$shape/lal-brain-model-work
    el "lal 2 GPUs $shape"
  fi
done
el "total"
