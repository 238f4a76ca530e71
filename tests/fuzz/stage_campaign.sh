#!/usr/bin/env bash
# Pack the fuzz targets of a LAL_FUZZ build (scripts/test-sanitizers.sh: ./build-fuzz) for a campaign on another
# machine that has no lal build, no Debian packages and no network (the device machine):
#   tests/fuzz/stage_campaign.sh BUILD_DIR OUT.tar.xz
# The archive unpacks to pkg/: bin/fuzz_* (debug info stripped, symbols kept for readable reports), lib/ (every
# shared library they and the plugins load, except glibc's own), lib/lal/plugins/ (the plugins fuzz_pipeline
# validates against), corpus/ (tests/fuzz/corpus), parallel_campaign.py and campaign.sh, which runs it there:
#   pkg/campaign.sh SECONDS RESULTS_DIR [TARGET=RUNS ...]
set -eu
build=$(cd "$1" && pwd)
out=$2
src=$(cd "$(dirname "$0")" && pwd)
grep -q '^LAL_FUZZ:BOOL=ON' "$build/CMakeCache.txt" || { echo "stage_campaign: $build is not a LAL_FUZZ build" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pkg=$tmp/pkg
mkdir -p "$pkg/bin" "$pkg/lib/lal/plugins"
for f in "$build"/bin/fuzz_*; do strip --strip-debug -o "$pkg/bin/$(basename "$f")" "$f"; done
for f in "$build"/lib/lal/plugins/*.so; do strip --strip-debug -o "$pkg/lib/lal/plugins/$(basename "$f")" "$f"; done
# glibc (libc, libm, libpthread, libdl, librt, libresolv, the loader) comes from the machine; everything else travels.
if ldd "$pkg"/bin/* "$pkg"/lib/lal/plugins/*.so | grep 'not found'; then
  echo "stage_campaign: a library above is missing here" >&2
  exit 1
fi
ldd "$pkg"/bin/* "$pkg"/lib/lal/plugins/*.so | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u |
  grep -Ev '/(libc|libm|libpthread|libdl|librt|libresolv|libutil|ld-linux[^/]*)\.so' |
  while read -r lib; do cp -L "$lib" "$pkg/lib/"; done
cp -r "$src/corpus" "$pkg/corpus"
cp "$src/parallel_campaign.py" "$pkg/"
cat > "$pkg/campaign.sh" <<'EOF'
#!/usr/bin/env bash
# pkg/campaign.sh SECONDS RESULTS_DIR [TARGET=RUNS ...] — parallel_campaign.py over every core, then the summary,
# the logs' last lines and every finding's input into RESULTS_DIR. Exit status 1 when anything was found.
set -u
here=$(cd "$(dirname "$0")" && pwd)
seconds=$1 results=$2
shift 2
work=${WORK:-/tmp/lal-fuzz-campaign}
export LD_LIBRARY_PATH=$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LAL_FUZZ_PLUGIN_DIR=$here/lib/lal/plugins
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
mkdir -p "$results"
{ uname -a; nproc; grep -m1 'model name' /proc/cpuinfo; free -g | head -2; date -u +%FT%TZ; } > "$results/machine.txt"
# Every target starts here (its libraries load, fuzz_pipeline finds its plugins) and runs its corpus once.
for t in "$here"/bin/fuzz_*; do
  name=$(basename "$t")
  "$t" -runs=0 "$here/corpus/${name#fuzz_}" > "$results/start-$name.log" 2>&1 ||
    { echo "campaign: $name does not run here:"; tail -n 5 "$results/start-$name.log"; exit 2; }
done
python3 "$here/parallel_campaign.py" "$here/bin" "$here/corpus" "$work" "$seconds" "$@" 2>&1 | tee "$results/campaign.log"
status=${PIPESTATUS[0]}
date -u +%FT%TZ >> "$results/machine.txt"
cp "$work/summary.tsv" "$results/" 2>/dev/null
for d in "$work"/*/; do
  t=$(basename "$d")
  mkdir -p "$results/$t"
  cp -r "$d/artifacts" "$results/$t/" 2>/dev/null
  ls "$d/corpus" | wc -l > "$results/$t/corpus_size"
  for log in "$d"/calibrate.log "$d"/run.log "$d"/fuzz-*.log; do
    [ -f "$log" ] && tail -n 40 "$log" > "$results/$t/$(basename "$log")"
  done
done
exit "$status"
EOF
chmod +x "$pkg/campaign.sh"
tar -C "$tmp" -cJf "$out" pkg
echo "stage_campaign: $(du -h "$out" | cut -f1) in $out ($(ls "$pkg/lib" | wc -l) libraries)"
