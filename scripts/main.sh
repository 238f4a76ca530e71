#!/usr/bin/env bash
# The README's main command: install what is missing, build, and chat with the thinking pipeline on the bundled
# demo model (models/lal-demo). Extra arguments go to `lal chat` (e.g. --model_path DIR for a real model,
# --output jsonl, --user NAME). Reads the conversation from the terminal, or one turn per line from a pipe.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
# A given LibTorch (LAL_TORCH_DIR / LAL_TORCH_PYTHON) replaces Debian's: don't install that one.
[ -n "${LAL_TORCH_DIR:-}${LAL_TORCH_PYTHON:-}" ] && export LAL_NO_TORCH=1
"$root/scripts/install-deps.sh" >&2
"$root/scripts/build.sh" -DLAL_BUILD_TESTS=OFF >&2
# build.sh builds into ./build, or ./build-cuda with LAL_TORCH_DIR / LAL_TORCH_PYTHON (README "GPU").
cuda_build=
[ -n "${LAL_TORCH_DIR:-}${LAL_TORCH_PYTHON:-}" ] && cuda_build=-cuda
exec "${LAL_BUILD_DIR:-$root/build$cuda_build}/bin/lal" chat "$@"
