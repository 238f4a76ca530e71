#!/usr/bin/env bash
# A long fuzzing campaign over every target of a LAL_FUZZ build, in one process at a time (the machine is shared):
# round robin in slices of SLICE seconds until each target has run RUNS executions, each resuming from its own
# growing corpus in WORK/<target>/corpus (seeded from tests/fuzz/corpus). Stops at the first crash/leak/timeout,
# whose input is left in WORK/<target>/artifacts. Progress: WORK/summary.tsv (target, slice, executions, total).
#   nice -n 19 tests/fuzz/campaign.sh BUILD_DIR WORK [RUNS=10000000] [SLICE=600] [TARGETS...]
# FUZZ_TIMEOUT (10 s) is wall-clock time per input: raise it on a loaded machine, where a niced process waits.
set -u
build=$1 work=$2 runs=${3:-10000000} slice=${4:-600}
shift $(( $# < 4 ? $# : 4 ))
src=$(cd "$(dirname "$0")" && pwd)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors tokenizer pipeline)
mkdir -p "$work"
declare -A total
for t in "${targets[@]}"; do
  mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
  cp -n "$src/corpus/$t"/* "$work/$t/corpus/" 2>/dev/null
  total[$t]=$(awk -v t="$t" '$1 == t { s = $4 } END { print s + 0 }' "$work/summary.tsv" 2>/dev/null || echo 0)
done
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
n=0
while :; do
  pending=0
  for t in "${targets[@]}"; do
    [ "${total[$t]}" -lt "$runs" ] || continue
    pending=1
    n=$((n + 1))
    left=$((runs - total[$t]))
    "$build/bin/fuzz_$t" -timeout="${FUZZ_TIMEOUT:-10}" -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 -runs="$left" \
      -max_total_time="$slice" -artifact_prefix="$work/$t/artifacts/" "$work/$t/corpus" > "$work/$t/log.$n" 2>&1
    status=$?
    done_runs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$work/$t/log.$n")
    total[$t]=$((total[$t] + ${done_runs:-0}))
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$n" "${done_runs:-0}" "${total[$t]}" "$status" "$(date -u +%FT%TZ)" \
      >> "$work/summary.tsv"
    if [ $status -ne 0 ]; then
      echo "campaign: $t failed (status $status): see $work/$t/log.$n and $work/$t/artifacts/" >&2
      exit 1
    fi
  done
  [ $pending -eq 1 ] || break
done
echo "campaign: every target ran $runs executions without a finding" >&2
