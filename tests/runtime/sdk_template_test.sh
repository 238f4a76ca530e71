#!/usr/bin/env bash
# Install lal to a prefix, build the SDK template out of tree against it, and run it with the installed host.
set -eu
build=$1 src=$2
tmp=$(mktemp -d /tmp/lal-sdk-test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
cp -r "$src/sdk/template" "$tmp/plugin"   # the copy a user would make
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S "$tmp/plugin" -B "$tmp/plugin/build" "${gen[@]}" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/plugin/build" >/dev/null
test -f "$tmp/plugin/build/libecho_thought.so"
# The installed host finds its own installed plugins (transcript) and the new one through plugin_path.
"$tmp/prefix/bin/lal" plugins --plugin_path "$tmp/plugin/build" | grep -q "echo_thought  (brain_region, version 1.0.0, ABI 1)"
out=$(echo "こんにちは" | "$tmp/prefix/bin/lal" run "$tmp/plugin/pipeline.yaml")
echo "$out"
[ "$out" = "[分析] 聞こえた: こんにちは (15 bytes)" ]
# Installed headers are self-contained (no build-tree paths) and the package version file exists.
test -f "$tmp/prefix/include/lal/plugin.hpp"
test -f "$tmp/prefix/include/lal/version.hpp"
ls "$tmp"/prefix/lib*/cmake/lal/lalConfigVersion.cmake >/dev/null
echo "sdk template ok"
