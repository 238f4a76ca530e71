# Sourced by tests/reference/gpu/*.sh: unpack the carried Debian packages (.gpu-debs) into a prefix and configure
# tests/reference/gpu/CMakeLists.txt into $B with the PyTorch wheel's LibTorch. Sets PFX, TP, B; writes
# $OUT/build.txt. Extra arguments go to cmake.
gpu_configure() {
  PFX=/tmp/pfx; mkdir -p $PFX
  for f in .gpu-debs/*.deb; do dpkg -x "$f" $PFX; done
  export LD_LIBRARY_PATH=$PFX/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  TP=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  B=/tmp/b
  cmake -S tests/reference/gpu -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TP;$PFX/usr" \
    -DFMT_FIRST=$PFX/usr/include -DCMAKE_CUDA_ARCHITECTURES=90 -DTORCH_CUDA_ARCH_LIST=9.0 "$@" > $OUT/build.txt 2>&1 ||
    { tail -40 $OUT/build.txt; return 1; }
}
