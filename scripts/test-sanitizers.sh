#!/usr/bin/env bash
# The torch-free code under AddressSanitizer + UndefinedBehaviorSanitizer, and the libFuzzer targets (tests/fuzz),
# built with clang into ./build-fuzz (LAL_FUZZ_BUILD_DIR). Runs the runtime, tokenizer, memory, brain (plugins),
# hardening and fuzz tests there: the fuzz corpus is replayed and each target fuzzes for LAL_FUZZ_SECONDS (60).
# Called by scripts/test.sh after the main suite (LAL_SANITIZERS=0 skips it there). Fails when clang or its
# sanitizer/libFuzzer runtime is missing (scripts/install-deps.sh installs clang and libclang-rt-dev): a stage that
# quietly ran nothing would read as passed.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${LAL_FUZZ_BUILD_DIR:-$root/build-fuzz}
jobs=${LAL_JOBS:-$(nproc)}
if ! command -v clang++ >/dev/null; then
  echo "test-sanitizers: clang++ not found: run scripts/install-deps.sh (clang, libclang-rt-dev), or skip this stage" \
    "with LAL_SANITIZERS=0 ./scripts/test.sh" >&2
  exit 1
fi
if command -v ccache >/dev/null; then
  export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
  export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$root}
fi
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DLAL_WITH_TORCH=OFF -DLAL_FUZZ=ON -DLAL_BUILD_TESTS=ON -DLAL_USE_PCH=OFF \
  -DLAL_TEST_SUITES="runtime;tokenizer;memory;brain" -DLAL_FUZZ_SECONDS="${LAL_FUZZ_SECONDS:-60}" "$@"
if ! grep -q '^LAL_FUZZ:BOOL=ON' "$build/CMakeCache.txt"; then
  echo "test-sanitizers: clang cannot link -fsanitize=fuzzer here (see the CMake warning above): install" \
    "libclang-rt-dev (scripts/install-deps.sh), or skip this stage with LAL_SANITIZERS=0 ./scripts/test.sh" >&2
  exit 1
fi
start=$SECONDS
cmake --build "$build" -j "$jobs"
echo "test-sanitizers: build took $((SECONDS - start)) s"
cd "$build"
# LeakSanitizer on, and every sanitizer report fails the test that triggered it.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# sdk_template_out_of_tree builds the SDK template against an installed lal with the system compiler: it is covered
# by the main suite and would mix sanitized and unsanitized objects here.
start=$SECONDS
ctest --output-on-failure -j "$jobs" --timeout 900 -E "sdk_template_out_of_tree"
echo "test-sanitizers: tests took $((SECONDS - start)) s; the stage passed in $SECONDS s"
