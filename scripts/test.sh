#!/usr/bin/env bash
# The README's test command: install what is missing, build everything, run every test, then the torch-free code
# again under ASan+UBSan with the fuzz targets (scripts/test-sanitizers.sh; LAL_SANITIZERS=0 skips that stage).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
# A given LibTorch (LAL_TORCH_DIR / LAL_TORCH_PYTHON) replaces Debian's: don't install that one.
[ -n "${LAL_TORCH_DIR:-}${LAL_TORCH_PYTHON:-}" ] && export LAL_NO_TORCH=1
"$root/scripts/install-deps.sh"
if [ -x "$root/scripts/fetch-test-data.sh" ]; then "$root/scripts/fetch-test-data.sh"; fi
"$root/scripts/build.sh" -DLAL_BUILD_TESTS=ON
cuda_build=
[ -n "${LAL_TORCH_DIR:-}${LAL_TORCH_PYTHON:-}" ] && cuda_build=-cuda
cd "${LAL_BUILD_DIR:-$root/build$cuda_build}"
ctest --output-on-failure -j "${LAL_JOBS:-$(nproc)}" --timeout 900
# The torch-free code again under ASan+UBSan, with the fuzz corpus replayed and each fuzz target run for a minute
# (LAL_FUZZ_SECONDS): scripts/test-sanitizers.sh, into ./build-fuzz. Part of every run, CI's included; LAL_SANITIZERS=0
# skips it (a quick local check). Cost on a 2-core machine: docs/benchmarks.md, "Reliability".
if [ "${LAL_SANITIZERS:-1}" != 0 ]; then
  "$root/scripts/test-sanitizers.sh"
else
  echo "test.sh: the sanitizer and fuzzing stage is skipped (LAL_SANITIZERS=0)"
fi
