#!/usr/bin/env bash
# Configure and build lal into ./build (Release, ccache when present). Extra arguments go to cmake configure.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${LAL_BUILD_DIR:-$root/build}
if command -v ccache >/dev/null; then
  export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
  ccache -o hash_dir=false -o max_size=5G >/dev/null 2>&1 || true
  # Paths under the checkout are hashed relative to it, so another clone or worktree reuses the same cache entries.
  export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$root}
fi
jobs=${LAL_JOBS:-$(nproc)}
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=${LAL_BUILD_TYPE:-Release} "$@"
cmake --build "$build" -j "$jobs"
