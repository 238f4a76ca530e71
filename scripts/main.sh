#!/usr/bin/env bash
# The README's main command: install what is missing, build, and run the main job.
# Until `lal chat` and the bundled model land, the main job is the hello pipeline on a few sample lines.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" -DLAL_BUILD_TESTS=OFF
lal="${LAL_BUILD_DIR:-$root/build}/bin/lal"
[ -t 0 ] && echo "lal: hello pipeline — type a line and press Enter (Ctrl-D to quit)" >&2
exec "$lal" run "$root/configs/hello.yaml"
