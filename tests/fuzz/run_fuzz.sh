#!/usr/bin/env bash
# run_fuzz.sh replay TARGET CORPUS_DIR            — run TARGET once on every corpus file (libFuzzer binary)
# run_fuzz.sh fuzz TARGET CORPUS_DIR SECONDS WORK — fuzz for SECONDS from a copy of the corpus in WORK (the source
#                                                  corpus is never written); a crash leaves its input in WORK/
# Both fail (non-zero) on any crash, leak, sanitizer report, timeout (10 s per input) or RSS over 2 GiB.
set -eu
mode=$1 target=$2 corpus=$3
common=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1)
case $mode in
  replay)
    mapfile -t files < <(find "$corpus" -type f | sort)
    [ ${#files[@]} -gt 0 ] || { echo "no corpus files in $corpus"; exit 1; }
    "$target" "${common[@]}" "${files[@]}" 2>&1 | tail -n 5
    exit "${PIPESTATUS[0]}"
    ;;
  fuzz)
    seconds=$4 work=$5
    rm -rf "$work" && mkdir -p "$work/corpus" "$work/artifacts"
    cp "$corpus"/* "$work/corpus/"
    status=0
    # A fixed seed (LAL_FUZZ_SEED) makes CI's bounded run repeatable: the same inputs in the same order.
    "$target" "${common[@]}" -seed="${LAL_FUZZ_SEED:-1}" -max_total_time="$seconds" -max_len=8192 -artifact_prefix="$work/artifacts/" \
      "$work/corpus" > "$work/log" 2>&1 || status=$?
    tail -n 25 "$work/log"
    if [ $status -ne 0 ]; then
      echo "fuzzing $target found a problem; its input is in $work/artifacts/ — add it to $corpus/ with the fix"
    fi
    exit $status
    ;;
  *) echo "usage: $0 replay|fuzz ..."; exit 2 ;;
esac
