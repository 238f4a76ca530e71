#!/usr/bin/env bash
# Data-parallel distillation over c10d Gloo, as torchrun starts it (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
# MASTER_PORT), on the CPU:
#   1. 2 ranks x gradient_accumulation 1 == 1 process x gradient_accumulation 2 (the same global batch): the sharded
#      teacher data equals the single process's byte for byte; weights and AdamW state after every step agree to 1e-5.
#   2. A checkpoint written by the 2-rank run resumes in 1 process and ends where the 1-process run ends; a 2-rank
#      run killed with kill -9 after a checkpoint resumes on 2 ranks (its state now sharded) to the same end.
#   3. The teacher's top-k (--store_topk) scored by 2 ranks equals the single process's byte for byte and the
#      Python reference's; a top-k stage cut short (a torn file, a killed 2-rank run's rank file) resumes in one
#      process to the same file.
#   4. A rank that cannot reach the rendezvous fails with a message naming MASTER_ADDR:MASTER_PORT.
set -euo pipefail
LAL=$1 FX=$2 OUT=$3 PY=$4
rm -rf "$OUT" && mkdir -p "$OUT"
common=(--teacher_model "$FX/teacher" --num_examples 20 --generation_batch_size 4 --max_length 256 --max_new_tokens 24 --batch_size 2
        --num_epochs 2 --checkpoint_every 2 --keep_checkpoints 100 --threads 1 --no_progress --student_config tiny
        --export_dtype float32 --learning_rate 3e-3 --eval_every 2)
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start_ranks() {  # LOG ARGS...: lal distill ARGS on 2 Gloo ranks in the background, as torchrun starts them (pids in
  local log=$1 port r; shift  # `pids`, logs in LOG.rank0.log and LOG.rank1.log)
  port=$(free_port)
  pids=()
  for r in 0 1; do
    RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$port "$LAL" distill "$@" > "$log.rank$r.log" 2>&1 &
    pids+=($!)
  done
}
wait_ranks() {  # LOG: both ranks must succeed; their logs are printed otherwise
  for p in "${pids[@]}"; do wait "$p" || { cat "$1".rank*.log; exit 1; }; done
}
ranks2() {  # OUT_DIR ARGS...: a 2-rank Gloo run of lal distill into OUT_DIR, to its end
  local dir=$1; shift
  start_ranks "$dir" "$@" --output_dir "$dir" --log_level info
  wait_ranks "$dir"
}

echo "== 1 process, gradient_accumulation 2"
"$LAL" distill "${common[@]}" --gradient_accumulation 2 --output_dir "$OUT/one"

echo "== 2 ranks (Gloo), gradient_accumulation 1"
ranks2 "$OUT/two" "${common[@]}" --gradient_accumulation 1
grep -h "distributed: rank" "$OUT"/two.rank*.log
grep -q "c10d gloo" "$OUT/two.rank0.log"
A=$OUT/one/lal-brain-model-work B=$OUT/two/lal-brain-model-work
cmp "$A/data.jsonl" "$B/data.jsonl" && echo "sharded teacher data == single-process teacher data"
test -z "$(ls "$B" | grep 'rank-')" || { echo "per-rank files left behind"; exit 1; }
test "$(ls "$A/checkpoints" | grep -c step-)" -eq "$(ls "$B/checkpoints" | grep -c step-)"

compare() {  # max |a - b| over every tensor of two safetensors files
  "$PY" - "$1" "$2" <<'PY'
import json, struct, sys, torch
def load(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n]); data = raw[8 + n:]
    dt = {"F32": torch.float32, "I64": torch.int64, "U8": torch.uint8}
    out = {}
    for k, v in head.items():
        if k == "__metadata__": continue
        b, e = v["data_offsets"]
        out[k] = torch.frombuffer(bytearray(data[b:e]), dtype=dt[v["dtype"]]).reshape(v["shape"])
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
keys = [k for k in a if k != "rng.cpu"]
assert sorted(keys) == sorted(k for k in b if k != "rng.cpu"), "different tensors"
worst = max((a[k].double() - b[k].double()).abs().max().item() for k in keys)
print(f"{sys.argv[2].split('/')[-3]}/{sys.argv[2].split('/')[-2]}: {len(keys)} tensors, max |diff| {worst:.2e}")
sys.exit(0 if worst <= 1e-5 else 1)
PY
}
for ck in $(ls "$A/checkpoints" | grep step-); do
  compare "$A/checkpoints/$ck/model.safetensors" "$B/checkpoints/$ck/model.safetensors"
  compare "$A/checkpoints/$ck/optimizer.safetensors" "$B/checkpoints/$ck/optimizer.safetensors"
done
compare "$OUT/one/lal-brain-model/model.safetensors" "$OUT/two/lal-brain-model/model.safetensors"
# --shard_optimizer auto: this tiny student's whole AdamW state fits each rank, so no rank shards it.
grep -q "rank 0 of 2, data parallel, AdamW state whole on each rank" "$OUT/two.rank0.log"
RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=1 "$LAL" distill "${common[@]}" --output_dir "$OUT/two" --dry_run | grep "memory estimate" |
  grep -q "(AdamW state whole on each of the 2 ranks: no all-gather per step; --shard_optimizer on shards it)"
RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=1 "$LAL" distill "${common[@]}" --output_dir "$OUT/two" --dry_run --shard_optimizer on |
  grep "memory estimate" | grep -q "(AdamW state sharded over 2 ranks)"

echo "== 2 ranks, AdamW state sharded (ZeRO-1: each rank updates its share, then the weights are all-gathered)"
S=$OUT/sharded/lal-brain-model-work
mkdir -p "$S" && cp "$B/questions.jsonl" "$B/data.jsonl" "$S/"
ranks2 "$OUT/sharded" "${common[@]}" --gradient_accumulation 1 --shard_optimizer on
grep -q "rank 0 of 2, data parallel, AdamW state sharded" "$OUT/sharded.rank0.log"
for ck in $(ls "$A/checkpoints" | grep step-); do
  compare "$A/checkpoints/$ck/model.safetensors" "$S/checkpoints/$ck/model.safetensors"
  compare "$A/checkpoints/$ck/optimizer.safetensors" "$S/checkpoints/$ck/optimizer.safetensors"
done

echo "== kill -9 both ranks after checkpoint step 4, resume on 2 ranks with the state sharded"
K=$OUT/killed/lal-brain-model-work
mkdir -p "$K" && cp "$B/questions.jsonl" "$B/data.jsonl" "$K/"
start_ranks "$OUT/killed" "${common[@]}" --gradient_accumulation 1 --output_dir "$OUT/killed"
while [ ! -d "$K/checkpoints/step-00000004" ]; do
  kill -0 "${pids[0]}" 2>/dev/null || { echo "the run ended before it could be killed"; cat "$OUT"/killed.rank*.log; exit 1; }
  sleep 0.01
done
kill -9 "${pids[@]}"
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
killed_at=$(ls "$K/checkpoints" | grep '^step-' | tail -n 1)
echo "killed at $killed_at"
test "$killed_at" != "$(ls "$A/checkpoints" | grep '^step-' | tail -n 1)"
start_ranks "$OUT/resumed" "${common[@]}" --gradient_accumulation 1 --output_dir "$OUT/killed" --resume_from "$K" \
  --shard_optimizer on --log_level info
wait_ranks "$OUT/resumed"
grep -q "resumed from .*step-00000004 at step 4" "$OUT/resumed.rank0.log"
grep -q "rank 0 of 2, data parallel, AdamW state sharded" "$OUT/resumed.rank0.log"
last=$(ls "$A/checkpoints" | grep step- | tail -n 1)
compare "$A/checkpoints/$last/model.safetensors" "$K/checkpoints/$last/model.safetensors"
compare "$A/checkpoints/$last/optimizer.safetensors" "$K/checkpoints/$last/optimizer.safetensors"
compare "$OUT/one/lal-brain-model/model.safetensors" "$OUT/killed/lal-brain-model/model.safetensors"

echo "== resume the 2-rank run's step-2 checkpoint in 1 process"
C=$OUT/three/lal-brain-model-work
mkdir -p "$C/checkpoints"
cp "$B/questions.jsonl" "$B/data.jsonl" "$C/"
cp -r "$B/checkpoints/step-00000002" "$C/checkpoints/"
"$LAL" distill "${common[@]}" --gradient_accumulation 2 --output_dir "$OUT/three" --resume_from "$C/checkpoints/step-00000002"
last=$(ls "$A/checkpoints" | grep step- | tail -n 1)
compare "$A/checkpoints/$last/model.safetensors" "$C/checkpoints/$last/model.safetensors"
compare "$A/checkpoints/$last/optimizer.safetensors" "$C/checkpoints/$last/optimizer.safetensors"

echo "== the teacher's top-k scored by 2 ranks (same teacher data)"
for d in k1 k2; do mkdir -p "$OUT/$d/lal-brain-model-work" && cp "$A/questions.jsonl" "$A/data.jsonl" "$OUT/$d/lal-brain-model-work/"; done
topk=(--store_topk 4)
"$LAL" distill "${common[@]}" "${topk[@]}" --gradient_accumulation 2 --output_dir "$OUT/k1"
ranks2 "$OUT/k2" "${common[@]}" "${topk[@]}" --gradient_accumulation 1
grep -h "teacher top-k: merged" "$OUT"/k2.rank0.log
test -z "$(ls "$OUT/k2/lal-brain-model-work" | grep 'rank-')" || { echo "per-rank top-k files left behind"; exit 1; }
cmp "$OUT/k1/lal-brain-model-work/topk.jsonl" "$OUT/k2/lal-brain-model-work/topk.jsonl" &&
  echo "top-k scored by 2 ranks == single-process top-k"
"$PY" "$(dirname "$0")/check_topk.py" "$FX/teacher" "$OUT/k2/lal-brain-model-work" 256 4

echo "== a top-k stage cut short resumes to the same file"
K1=$OUT/k1/lal-brain-model-work/topk.jsonl
# (a) what kill -9 leaves of one process: 7 complete records and a torn eighth (JsonlAppender drops it on open)
mkdir -p "$OUT/k3/lal-brain-model-work" && cp "$A/questions.jsonl" "$A/data.jsonl" "$OUT/k3/lal-brain-model-work/"
{ head -n 7 "$K1"; sed -n 8p "$K1" | head -c 40; } > "$OUT/k3/lal-brain-model-work/topk.jsonl"
# (b) what a killed 2-rank run leaves: only rank 1's file, with its windows (examples 4-7 and 12-15) done
mkdir -p "$OUT/k4/lal-brain-model-work" && cp "$A/questions.jsonl" "$A/data.jsonl" "$OUT/k4/lal-brain-model-work/"
sed -n '5,8p;13,16p' "$K1" > "$OUT/k4/lal-brain-model-work/topk.jsonl.rank-1"
for d in k3 k4; do
  "$LAL" distill "${common[@]}" "${topk[@]}" --gradient_accumulation 2 --output_dir "$OUT/$d"
  test -z "$(ls "$OUT/$d/lal-brain-model-work" | grep 'rank-')" || { echo "$d: rank files left behind"; exit 1; }
  cmp "$K1" "$OUT/$d/lal-brain-model-work/topk.jsonl" && echo "$d: resumed top-k == uninterrupted top-k"
done

echo "== a rank without its peer"
set +e
msg=$(LAL_DIST_TIMEOUT_S=3 RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$(free_port) \
      "$LAL" distill "${common[@]}" --output_dir "$OUT/lonely" 2>&1)
rc=$?
set -e
echo "$msg" | tail -n 2
test $rc -ne 0
echo "$msg" | grep -q "MASTER_ADDR:MASTER_PORT"
echo "distributed training over Gloo == single process"
