#!/usr/bin/env bash
# Installs what is needed, builds, and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/npm_deps.sh
cd build && ctest --output-on-failure -j "$(nproc)"
