#!/usr/bin/env bash
# `lal generate` streaming Japanese on a GPU host, compared with the CPU. Before the device call, on the CPU machine:
#   mkdir -p .gpu-check; P="「ls」は何をするものですか？日本語で答えてください。"
#   build/bin/lal generate --model_path models/lal-demo --prompt "$P" --chat --greedy --max_new_tokens 48 \
#     --min_new_tokens 24 --dtype float32 --device cpu [--ids] > .gpu-check/cpu_{text.txt,ids.json}
# then run this from the repo root with .gpu-debs (fetch-debs.sh + PCRE2/ICU) and .gpu-check carried; writes $OUT/*.
set -u
P="「ls」は何をするものですか？日本語で答えてください。"
. tests/reference/gpu/lib.sh
gpu_build lal || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u
L=$B/bin/lal; M=models/lal-demo
$L generate --model_path $M --prompt "$P" --chat --greedy --max_new_tokens 48 --min_new_tokens 24 --dtype float32 --device cuda > $OUT/cuda_text.txt
$L generate --model_path $M --prompt "$P" --chat --greedy --max_new_tokens 48 --min_new_tokens 24 --dtype float32 --device cuda --ids > $OUT/cuda_ids.json
echo "--- cuda fp32 text:"; cat $OUT/cuda_text.txt; echo; echo "--- cuda ids:"; cat $OUT/cuda_ids.json
cmp -s $OUT/cuda_ids.json .gpu-check/cpu_ids.json && echo "IDS EQUAL CPU" || echo "IDS DIFFER from CPU: $(cat .gpu-check/cpu_ids.json)"
cmp -s $OUT/cuda_text.txt .gpu-check/cpu_text.txt && echo "TEXT EQUAL CPU" || echo "TEXT DIFFERS"
python3 -c "open('$OUT/cuda_text.txt','rb').read().decode('utf-8'); print('valid UTF-8')"
echo "--- cuda bf16 sampled, streamed:"; $L generate --model_path $M --prompt "$P" --chat --seed 5 --max_new_tokens 48 --min_new_tokens 8 --device cuda | tee $OUT/cuda_bf16.txt; echo
python3 -c "open('$OUT/cuda_bf16.txt','rb').read().decode('utf-8'); print('valid UTF-8')"
