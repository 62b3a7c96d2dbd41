#!/usr/bin/env bash
# Load test of whale serve over loopback on a small random-weight model with the byte-level
# vocabulary:
#   1. one streaming client for DURATION seconds, then 16 concurrent ones: aggregate tokens/s,
#      the ratio, p50/p99 time to first token, and zero failed or incomplete requests;
#   2. prefix cache: 4 clients with one shared long system prompt vs a different long system
#      prompt per request: time to first token with and without cache hits.
# MODEL=moe (default): the "small" preset (V3: MLA + DeepSeekMoE, 16 experts, top-4, hidden
#   256, 4 layers). MODEL=dense: MLA with dense FFNs (first_k_dense_replace = all layers),
#   hidden 512, 8 layers, bf16 (22M parameters). MODEL=dense-large: the same at hidden 1024, 16
#   heads, FFN 2816 (85M parameters, 159 MB: GPT-2-small class) — a model whose decode step is
#   bound by reading its weights, which batching shares (with MoE, a batch of 16 touches most
#   experts, so it reads more).
# The load generator runs at nice 10: it shares the server's cores here, and real clients would
# not.
# Writes bench/serve/results/<MODEL>.json (one line per phase) and prints a summary.
#
#   bash bench/serve/run.sh      # DURATION=20 (seconds per phase) MAX_TOKENS=64 THREADS=2 by default
#
# Environment: WHALE (default build/whale), MODELS (default /tmp/whale-bench-models).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
WHALE="${WHALE:-$root/build/whale}"
MODELS="${MODELS:-/tmp/whale-bench-models}"
DURATION="${DURATION:-20}"
MAX_TOKENS="${MAX_TOKENS:-64}"
THREADS="${THREADS:-2}"
PORT="${PORT:-18931}"
MODEL="${MODEL:-moe}"
model="$MODELS/serve-$MODEL"
mkdir -p "$MODELS"
if [[ ! -f "$model/tokenizer.json" ]]; then
  if [[ "$MODEL" == dense || "$MODEL" == dense-large ]]; then
    "$WHALE" init --preset small --out "$MODELS/preset-small" >/dev/null
    node -e '
      const fs = require("fs");
      const c = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
      Object.assign(c, { hidden_size: 512, intermediate_size: 1536, num_hidden_layers: 8,
                         first_k_dense_replace: 8, num_nextn_predict_layers: 0 });
      if (process.argv[3] === "dense-large")
        Object.assign(c, { hidden_size: 1024, intermediate_size: 2816, num_attention_heads: 16,
                           kv_lora_rank: 128, q_lora_rank: 256 });
      fs.writeFileSync(process.argv[2], JSON.stringify(c, null, 2));
    ' "$MODELS/preset-small/config.json" "$MODELS/$MODEL.json" "$MODEL"
    "$WHALE" init --config "$MODELS/$MODEL.json" --byte-tokenizer --dtype bf16 --seed 1 --out "$model" >/dev/null
  else
    "$WHALE" init --preset small --byte-tokenizer --dtype f32 --seed 1 --out "$model" >/dev/null
  fi
fi
mkdir -p "$here/results"
out="$here/results/$MODEL.json"
: > "$out"

"$WHALE" --threads "$THREADS" serve --model "$model" --port "$PORT" --max-batch 16 2> "$MODELS/server-$MODEL.log" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q "on http://" "$MODELS/server-$MODEL.log" && break
  sleep 0.1
done
url="http://127.0.0.1:$PORT"
phase() { nice -n 10 node "$here/load.mjs" "$url" "serve-$MODEL" "$@" | tee -a "$out"; }
phase 1 "$DURATION" "$MAX_TOKENS"
phase 16 "$DURATION" "$MAX_TOKENS"
phase 4 "$DURATION" 8 unique
phase 4 "$DURATION" 8 shared
node -e '
const lines = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map(JSON.parse);
const [one, many, unique, shared] = lines;
console.log(`16 clients vs 1: ${(many.tokens_per_second / one.tokens_per_second).toFixed(2)}x aggregate tokens/s ` +
  `(${many.tokens_per_second} vs ${one.tokens_per_second}); failures ${lines.reduce((s, l) => s + l.failures, 0)}`);
console.log(`prefix cache: TTFT p50 ${shared.ttft_ms_p50} ms with a shared system prompt ` +
  `(${shared.cache_hit_tokens}/${shared.prompt_tokens} prompt tokens cached) vs ${unique.ttft_ms_p50} ms with unique ones ` +
  `(${unique.cache_hit_tokens}/${unique.prompt_tokens})`);
' "$out"
