#!/usr/bin/env bash
# Installs what is needed, builds, and runs whale's main job on an embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
./build/whale demo "$@"
