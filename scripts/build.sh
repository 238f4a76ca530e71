#!/usr/bin/env bash
# Configure and build lal into ./build (Release, ccache when present). Extra arguments go to cmake configure.
#
# GPU: LAL_TORCH_PYTHON=python3 (the LibTorch inside that python's PyTorch wheel) or LAL_TORCH_DIR=DIR (an unpacked
# libtorch, or any folder holding TorchConfig.cmake) builds against that LibTorch instead of Debian's CPU one, into
# ./build-cuda; with the CUDA toolkit (nvcc) present the fused CUDA kernels are built too. LAL_DEPS_PREFIX=DIR uses
# Debian packages unpacked there (`dpkg -x pkg.deb DIR`) on a machine without them installed. README: "GPU".
# LAL_TARGETS="a b" builds only those targets (default: all); LAL_BUILD_DIR=DIR builds there.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cuda_build=
[ -n "${LAL_TORCH_DIR:-}${LAL_TORCH_PYTHON:-}" ] && cuda_build=-cuda
build=${LAL_BUILD_DIR:-$root/build$cuda_build}
if command -v ccache >/dev/null; then
  export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
  ccache -o hash_dir=false -o max_size=5G >/dev/null 2>&1 || true
  # Paths under the checkout are hashed relative to it, so another clone or worktree reuses the same cache entries.
  export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$root}
fi
extra=()
prefixes=()
if [ -n "${LAL_TORCH_PYTHON:-}" ] && [ -z "${LAL_TORCH_DIR:-}" ]; then
  LAL_TORCH_DIR=$("$LAL_TORCH_PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)') || {
    echo "build.sh: LAL_TORCH_PYTHON=$LAL_TORCH_PYTHON cannot 'import torch' (install PyTorch for it, or set LAL_TORCH_DIR)" >&2
    exit 1
  }
fi
if [ -n "${LAL_TORCH_DIR:-}" ]; then
  torch_config=
  for dir in "$LAL_TORCH_DIR/share/cmake/Torch" "$LAL_TORCH_DIR/Torch" "$LAL_TORCH_DIR"; do
    if [ -f "$dir/TorchConfig.cmake" ]; then torch_config=$(cd "$dir" && pwd); break; fi
  done
  if [ -z "$torch_config" ]; then
    echo "build.sh: LAL_TORCH_DIR=$LAL_TORCH_DIR holds no TorchConfig.cmake (expected a libtorch folder or" \
      "python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')" >&2
    exit 1
  fi
  echo "build.sh: LibTorch from $torch_config, build in $build" >&2
  extra+=("-DTorch_DIR=$torch_config")
  prefixes+=("$(cd "$torch_config/../.." && pwd)")
  # The Python wheel's LibTorch finds the CUDA toolkit itself; build the kernels for the GPUs present unless told.
  if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
    extra+=("-DCMAKE_CUDA_COMPILER=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")
  fi
fi
if [ -n "${LAL_DEPS_PREFIX:-}" ]; then
  deps=$(cd "$LAL_DEPS_PREFIX" && pwd)
  [ -d "$deps/usr/include" ] || { echo "build.sh: LAL_DEPS_PREFIX=$deps has no usr/include (dpkg -x the .debs there)" >&2; exit 1; }
  prefixes+=("$deps/usr")
  # .pc files say prefix=/usr: the sysroot maps them into the unpacked tree.
  export PKG_CONFIG_SYSROOT_DIR=$deps
  export PKG_CONFIG_PATH=$deps/usr/lib/x86_64-linux-gnu/pkgconfig:$deps/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
  export LD_LIBRARY_PATH=$deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  [ -x "$deps/usr/bin/pkgconf" ] && extra+=("-DPKG_CONFIG_EXECUTABLE=$deps/usr/bin/pkgconf")
  # A PyTorch wheel carries fmt 12 headers; Debian's spdlog 1.10 needs its fmt 9: search those first.
  extra+=("-DLAL_FMT_INCLUDE_FIRST=$deps/usr/include")
fi
if [ ${#prefixes[@]} -gt 0 ]; then
  extra+=("-DCMAKE_PREFIX_PATH=$(IFS=';'; echo "${prefixes[*]}")")
fi
jobs=${LAL_JOBS:-$(nproc)}
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=${LAL_BUILD_TYPE:-Release} ${extra[@]+"${extra[@]}"} "$@"
cmake --build "$build" -j "$jobs" ${LAL_TARGETS:+--target $LAL_TARGETS}
