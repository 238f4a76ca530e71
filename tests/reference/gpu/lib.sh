# Sourced by tests/reference/gpu/*.sh. gpu_build TARGET...: unpack the carried Debian packages (.gpu-debs) into a
# prefix and build those targets of the top-level project against the PyTorch wheel's LibTorch, the way README "GPU"
# tells a user (scripts/build.sh with LAL_TORCH_PYTHON and LAL_DEPS_PREFIX; fused kernels for sm_90). Test suites:
# GPU_TEST_SUITES (default lm); more cmake arguments: GPU_CMAKE_ARGS; build folder: GPU_BUILD_DIR (default /tmp/b).
# Sets PFX and B (the build folder; binaries in $B/bin); the build's output goes to $OUT/build.txt. .gpu-debs must hold the runtime chain of libcurl too
# (core/hub): EXTRA="libpsl5 libunistring2 libidn2-0 ..." /work/shared/gpu/fetch-debs.sh; without libunistring2
# every test binary fails to start (doctest's test discovery at build time first).
# gpu_begin: el MESSAGE prints the seconds since gpu_begin; at exit every file under $OUT is bundled into all.tgz (at
# most 8 files come back from the device); the patches named in PATCH (space-separated, carried) are applied (to
# everything but this file, already read).
gpu_begin() {
  T0=$(date +%s)
  trap 'cd $OUT && tar czf all.tgz --exclude=all.tgz . 2>/dev/null; ls | grep -v "^all.tgz$" | xargs rm -rf' EXIT
  local p
  for p in ${PATCH:-}; do
    git apply "$p" 2>&1 || patch -p1 < "$p" || { echo "$p does not apply"; exit 1; }
    echo "applied $p"
  done
}
el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }

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

# gpu_setup SHAPE...: in the background, the random-weight bench models of those shapes in /tmp/SHAPE (made once
# per machine; qwen2.5-7b gets the demo model's tokenizer, for lal bench chat) and the tiny test models in /tmp/tiny
# (pids MODELS and TINY); meanwhile gpu_build of everything, else of lal alone. Sets L (the lal binary).
gpu_setup() {
  (for s in "$@"; do [ -d /tmp/$s ] || python3 tests/reference/make_bench_model.py $s /tmp/$s --device cuda; done
   [ -d /tmp/qwen2.5-7b ] && cp models/lal-demo/tokenizer.json models/lal-demo/tokenizer_config.json /tmp/qwen2.5-7b/
  ) > $OUT/models.txt 2>&1 &
  MODELS=$!
  python3 tests/reference/make_tiny_models.py /tmp/tiny > /dev/null 2>&1 &
  TINY=$!
  # Everything (lal bench chat loads the plugins), the tests of the lm suite only; the benchmarks need lal only.
  if ! gpu_build; then
    echo "the build failed: lal alone"; cmake --build $B -j $(nproc) --target lal >> $OUT/build.txt 2>&1 || exit 1
  fi
  L=$B/bin/lal
}

# gpu_tests NAME...: those test binaries of $B on CUDA (LAL_LM_TINY_MODELS set by the caller); output in $OUT/NAME.txt.
gpu_tests() {
  for t in "$@"; do
    LAL_LM_TEST_DEVICE=cuda timeout 150 $B/bin/$t > $OUT/$t.txt 2>&1; echo "$t (cuda) rc=$?"
    grep -E "ERROR|FATAL|SIGSEGV|values:" -A3 $OUT/$t.txt | head -30; tail -3 $OUT/$t.txt | head -2
  done
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
    if r.get("sampling", "greedy") != "greedy": label += " sampled"
    print(f'{label:18} batch {r["batch"]:3} {r["decode_ms_per_step"]:7.3f} ms/step {r["decode_tokens_per_s"]:9.0f} '
          f'tok/s prefill {r["prefill_tokens_per_s"]:8.0f} tok/s floor {r.get("weight_read_floor_ms_per_step", 0):5.2f} '
          f'{r.get("model", "")[-50:]}')
PY
}

# bench_chat_pair LAL TURNS TIMEOUT [MODES]: `lal bench chat --device cuda` on /tmp/qwen2.5-7b batched with the
# kernels, the prefix cache and the warm-up at load, then as main ran before the scheduler (one at a time, LibTorch
# ops, no prefix cache, no warm-up); JSON in $OUT/chat_{batched,serial}.json, the medians, each turn's first visible
# thought and answer-done time, the time before turn 1 (load + warm-up) and the tokens per stage printed. Every region
# generates its max_tokens (min_tokens raised to them: no end-of-sequence token ends one early), so that both runs
# decode the same numbers of tokens whatever their (differently rounded) logits sample. MODES (optional) replaces the
# list of "name max_batch kernels prefix_cache_mb warm_up" runs.
bench_chat_pair() {
  local mode modes=${4:-"batched 0 auto -1 true|serial 1 torch 0 false"}
  IFS='|' read -ra modes <<< "$modes"
  for mode in "${modes[@]}"; do
    set -- "$1" "$2" "$3" $mode
    timeout "$3" "$1" bench chat --model_path /tmp/qwen2.5-7b --device cuda --turns "$2" --json --max_batch "$5" \
      --kernels "$6" --prefix_cache_mb "$7" --set "resources.model.warm_up=$8" --set 'modules.*.config.min_tokens=100000' \
      > $OUT/chat_$4.json 2>$OUT/chat_$4.err
    echo "bench chat ($4) rc=$?"; tail -2 $OUT/chat_$4.err
    python3 - $OUT/chat_$4.json $4 <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for k in ("thinking", "think_then_answer"):
    j = r[k]
    print(sys.argv[2], k, {m: round(j[m], 1) for m in j if m.startswith("median")},
          "first visible / answer done per turn:",
          [(round(t["first_visible_ms"]), round(t["answer_done_ms"])) for t in j.get("turns", [])],
          "before turn 1:", round(j.get("start_ms", -1)), "ms; tokens per stage:",
          [t.get("tokens") for t in j.get("turns", [])])
PY
  done
}
