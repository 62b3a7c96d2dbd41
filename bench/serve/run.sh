#!/usr/bin/env bash
# Load test of whale serve on a small model (the "small" preset: V3 architecture, 4 layers,
# hidden 256, byte-level vocabulary; random weights), over loopback:
#   1. one streaming client for SECONDS, then 16 concurrent ones: aggregate tokens/s, the
#      ratio, p50/p99 time to first token, and zero failed or incomplete requests;
#   2. prefix cache: 4 clients with one shared long system prompt vs a different long system
#      prompt per request: time to first token with and without cache hits.
# Writes bench/serve/results/latest.json (one line per phase) and prints it.
#
#   bash bench/serve/run.sh            # SECONDS=20 MAX_TOKENS=64 THREADS=2 by default
#
# Environment: WHALE (default build/whale), MODELS (default /tmp/whale-bench-models).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
WHALE="${WHALE:-$root/build/whale}"
MODELS="${MODELS:-/tmp/whale-bench-models}"
SECONDS_PER_PHASE="${SECONDS:-20}"
MAX_TOKENS="${MAX_TOKENS:-64}"
THREADS="${THREADS:-2}"
PORT="${PORT:-18931}"
model="$MODELS/serve-small"
[[ -f "$model/tokenizer.json" ]] ||
  "$WHALE" init --preset small --byte-tokenizer --dtype f32 --seed 1 --out "$model" >/dev/null
mkdir -p "$here/results"
out="$here/results/latest.json"
: > "$out"

"$WHALE" --threads "$THREADS" serve --model "$model" --port "$PORT" --max-batch 16 2> "$here/results/server.log" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q "on http://" "$here/results/server.log" && break
  sleep 0.1
done
url="http://127.0.0.1:$PORT"
phase() { node "$here/load.mjs" "$url" serve-small "$@" | tee -a "$out"; }
phase 1 "$SECONDS_PER_PHASE" "$MAX_TOKENS"
phase 16 "$SECONDS_PER_PHASE" "$MAX_TOKENS"
phase 4 "$SECONDS_PER_PHASE" 8 unique
phase 4 "$SECONDS_PER_PHASE" 8 shared
node -e '
const lines = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map(JSON.parse);
const [one, many, unique, shared] = lines;
console.log(`16 clients vs 1: ${(many.tokens_per_second / one.tokens_per_second).toFixed(2)}x aggregate tokens/s ` +
  `(${many.tokens_per_second} vs ${one.tokens_per_second}); failures ${lines.reduce((s, l) => s + l.failures, 0)}`);
console.log(`prefix cache: TTFT p50 ${shared.ttft_ms_p50} ms with a shared system prompt ` +
  `(${shared.cache_hit_tokens}/${shared.prompt_tokens} prompt tokens cached) vs ${unique.ttft_ms_p50} ms with unique ones ` +
  `(${unique.cache_hit_tokens}/${unique.prompt_tokens})`);
' "$out"
