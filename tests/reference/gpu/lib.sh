# Sourced by tests/reference/gpu/*.sh. gpu_build TARGET...: unpack the carried Debian packages (.gpu-debs) into a
# prefix and build those targets of the top-level project against the PyTorch wheel's LibTorch, the way README "GPU"
# tells a user (scripts/build.sh with LAL_TORCH_PYTHON and LAL_DEPS_PREFIX; fused kernels for sm_90). Test suites:
# GPU_TEST_SUITES (default lm); more cmake arguments: GPU_CMAKE_ARGS; build folder: GPU_BUILD_DIR (default /tmp/b).
# Sets PFX and B (the build folder; binaries in $B/bin); the build's output goes to $OUT/build.txt. .gpu-debs must hold the runtime chain of libcurl too
# (core/hub): EXTRA="libpsl5 libunistring2 libidn2-0 ..." /work/shared/gpu/fetch-debs.sh; without libunistring2
# every test binary fails to start (doctest's test discovery at build time first).
gpu_build() {
  PFX=/tmp/lal-deps; mkdir -p $PFX
  for f in .gpu-debs/*.deb; do dpkg -x "$f" $PFX; done
  export PATH=$PATH:/usr/local/cuda/bin
  export LD_LIBRARY_PATH=$PFX/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  B=${GPU_BUILD_DIR:-/tmp/b}
  # shellcheck disable=SC2086  # GPU_CMAKE_ARGS is a list of arguments
  LAL_DEPS_PREFIX=$PFX LAL_TORCH_PYTHON=python3 LAL_BUILD_DIR=$B LAL_JOBS=$(nproc) LAL_TARGETS="$*" ./scripts/build.sh \
    -DLAL_BUILD_TESTS=ON "-DLAL_TEST_SUITES=${GPU_TEST_SUITES:-lm}" -DCMAKE_CUDA_ARCHITECTURES=90 \
    ${GPU_CMAKE_ARGS:-} >> $OUT/build.txt 2>&1 || { grep -E "error|Error" -A3 $OUT/build.txt | head -40; return 1; }
  grep -E "lal_lm:|lal_train:" $OUT/build.txt | sort -u
  grep -c "warning:" $OUT/build.txt | xargs echo "build warnings:"; grep "warning:" $OUT/build.txt | sort -u | head -5
}

# bench_table FILE: one line per result in FILE (JSON lines of `lal bench generate --json`, optionally with a "gemv"
# label, and of hf_parity.py bench).
bench_table() {
  python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    try: r = json.loads(line)
    except Exception: continue
    label = "hf" if "anchor" in r else f'lal {r.get("fused_kernels", "")}' + (f' gemv {r["gemv"]}' if "gemv" in r else "")
    print(f'{label:18} batch {r["batch"]:3} {r["decode_ms_per_step"]:7.3f} ms/step {r["decode_tokens_per_s"]:9.0f} '
          f'tok/s prefill {r["prefill_tokens_per_s"]:8.0f} tok/s floor {r.get("weight_read_floor_ms_per_step", 0):5.2f} '
          f'{r.get("model", "")[-50:]}')
PY
}

# bench_chat_pair LAL TURNS TIMEOUT: `lal bench chat --device cuda` on /tmp/qwen2.5-7b batched with the kernels and
# the prefix cache, then as main ran before the scheduler (one at a time, LibTorch ops, no prefix cache); JSON in
# $OUT/chat_{batched,serial}.json, the medians and each turn's answer-done time printed.
bench_chat_pair() {
  local mode
  for mode in "batched 0 auto -1" "serial 1 torch 0"; do
    set -- "$1" "$2" "$3" $mode
    timeout "$3" "$1" bench chat --model_path /tmp/qwen2.5-7b --device cuda --turns "$2" --json --max_batch "$5" \
      --kernels "$6" --prefix_cache_mb "$7" > $OUT/chat_$4.json 2>$OUT/chat_$4.err
    echo "bench chat ($4) rc=$?"; tail -2 $OUT/chat_$4.err
    python3 - $OUT/chat_$4.json $4 <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for k in ("thinking", "think_then_answer"):
    j = r[k]
    print(sys.argv[2], k, {m: round(j[m], 1) for m in j if m.startswith("median")},
          "answer done per turn:", [round(t["answer_done_ms"]) for t in j.get("turns", [])])
PY
  done
}
