#!/usr/bin/env bash
# Download (not install) the Debian 12 packages lal needs besides LibTorch into DIR (default ./.gpu-debs), for a
# machine that has a PyTorch wheel with CUDA but no Debian development packages and no network (README "GPU").
# Run on a Debian 12 machine (after `apt-get update`), copy DIR over, then there:
#   for f in DIR/*.deb; do dpkg -x "$f" /opt/lal-deps; done
#   LAL_DEPS_PREFIX=/opt/lal-deps LAL_TORCH_PYTHON=python3 ./scripts/build.sh -DLAL_BUILD_TESTS=OFF
set -eu
dir=${1:-.gpu-debs}
mkdir -p "$dir"
cd "$dir"
pkgs="libboost1.81-dev libboost-program-options1.81-dev libboost-program-options1.81.0 libboost-filesystem1.81-dev
libboost-filesystem1.81.0 libboost-atomic1.81-dev libboost-atomic1.81.0 libboost-system1.81-dev libboost-system1.81.0
libyaml-cpp-dev libyaml-cpp0.7 libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 doctest-dev nlohmann-json3-dev
libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libicu-dev libicu72 icu-devtools
libsqlite3-dev libsqlite3-0 libcurl4-openssl-dev libcurl4 libbrotli1 libldap-2.5-0 libnghttp2-14 libpsl5 librtmp1
libsasl2-2 libssh2-1 libssl3 libzstd1 zlib1g pkgconf pkgconf-bin libpkgconf3 libunistring2 libidn2-0"
apt-get download $pkgs >/dev/null || { echo "fetch-debs: apt-get download failed (run apt-get update first?)" >&2; exit 1; }
echo "fetch-debs: $(ls -1 *.deb | wc -l) packages, $(du -sh . | cut -f1), in $(pwd)"
