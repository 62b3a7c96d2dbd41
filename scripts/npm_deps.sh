#!/usr/bin/env bash
# Installs the tests' node packages (tests/serve/package.json: openai, playwright-core) from the
# npm registry into build/npm, exactly as locked. Skipped, with a note, when npm is missing:
# the tests that need them then skip.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null; then
  echo "npm_deps: no npm; the node client tests will skip" >&2
  exit 0
fi
mkdir -p build/npm
cp tests/serve/package.json tests/serve/package-lock.json build/npm/
cd build/npm
npm ci --no-audit --no-fund --loglevel=error
