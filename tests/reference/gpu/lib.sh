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
