#!/usr/bin/env bash
# Installs every Debian package whale needs, then builds it (Release) into build/.
# Used by both README commands; safe to run again (apt and cmake are incremental).
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(cmake g++ make libgtest-dev libhwy-dev nlohmann-json3-dev libcli11-dev libpcre2-dev pkg-config
          libopenblas-openmp-dev python3-numpy libcpp-httplib-dev
          nodejs chromium)  # node and chromium: the serve tests' real clients (openai, the web page)
# npm comes with nodesource's nodejs; Debian's nodejs needs Debian's npm.
command -v npm >/dev/null || packages+=(npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${missing[@]}"
fi
jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$jobs"
