#!/usr/bin/env bash
# `lal bench chat` (CPU, the bundled demo model) at two revisions of lal on the same quiet machine: BEFORE (a source
# tarball without models/, which it takes from this tree: `git archive REV -- . ':!models' | gzip > .stage/before.tar.gz`,
# carried) and the tree this runs in. Both are built the README's GPU
# way (lib.sh: the PyTorch wheel's LibTorch), then run pinned to LAL_BENCH_CPUS (default 0,1 — two cores, like the
# project's 2-core VM, with OMP/MKL threads set to match), alternating revisions for ROUNDS rounds so that drift on
# the machine hits both alike. Every run's JSON goes to $OUT/bench_chat.jsonl; a table of medians is printed.
#
#   bash tests/reference/gpu/bench_chat_revisions.sh .stage/before.tar.gz [ROUNDS=3] [TURNS=5]
set -eu
before_tar=${1:?usage: bench_chat_revisions.sh BEFORE.tar [ROUNDS] [TURNS]}
rounds=${2:-3}
turns=${3:-5}
cpus=${LAL_BENCH_CPUS:-0,1}
ncpu=$(($(tr -cd , <<<"$cpus" | wc -c) + 1))
here=$(pwd)
. tests/reference/gpu/lib.sh
export GPU_CMAKE_ARGS="-DLAL_BUILD_TESTS=OFF"

if [ -x /tmp/b-after/bin/lal ] && [ -x /tmp/b-before/bin/lal ] && [ "${LAL_BENCH_REUSE:-0}" = 1 ]; then
  echo "reusing the builds in /tmp/b-after and /tmp/b-before"
else
  rm -rf /tmp/before && mkdir -p /tmp/before && tar -xf "$before_tar" -C /tmp/before
  ln -sfn "$here/.gpu-debs" /tmp/before/.gpu-debs
  ln -sfn "$here/models" /tmp/before/models
  start=$SECONDS
  GPU_BUILD_DIR=/tmp/b-after gpu_build &
  (cd /tmp/before && GPU_BUILD_DIR=/tmp/b-before gpu_build >/dev/null) &
  wait %1 && wait %2
  echo "built both revisions in $((SECONDS - start)) s"
fi
# gpu_build ran in subshells: its library path (the unpacked Debian packages) is set again here.
export LD_LIBRARY_PATH=/tmp/lal-deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}

export OMP_NUM_THREADS=$ncpu MKL_NUM_THREADS=$ncpu
for round in $(seq 1 "$rounds"); do
  for rev in before after; do
    (cd "$([ $rev = before ] && echo /tmp/before || echo "$here")" &&
      taskset -c "$cpus" /tmp/b-$rev/bin/lal bench chat --device cpu --seed 1 --turns "$turns" --json) |
      python3 -c "import json,sys; j=json.loads(sys.stdin.read()); j['rev']='$rev'; j['round']=$round; print(json.dumps(j))" \
        >>"$OUT/bench_chat.jsonl"
  done
done
python3 - "$OUT/bench_chat.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = ["median_first_visible_ms", "median_analysis_done_ms", "median_answer_first_ms", "median_answer_done_ms"]
print("| pipeline | revision | " + " | ".join(k[7:] for k in keys) + " |")
print("|---|---|" + "---|" * len(keys))
for pipe in ["thinking", "think_then_answer"]:
    for rev in ["before", "after"]:
        vals = [statistics.median(r[pipe][k] for r in rows if r["rev"] == rev) for k in keys]
        print(f"| {pipe} | {rev} | " + " | ".join(f"{v:.0f}" for v in vals) + " |")
EOF
