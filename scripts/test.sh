#!/usr/bin/env bash
# The README's test command: install what is missing, build everything, run every test.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
if [ -x "$root/scripts/fetch-test-data.sh" ]; then "$root/scripts/fetch-test-data.sh"; fi
"$root/scripts/build.sh" -DLAL_BUILD_TESTS=ON
cd "${LAL_BUILD_DIR:-$root/build}"
ctest --output-on-failure -j "${LAL_JOBS:-$(nproc)}" --timeout 900
