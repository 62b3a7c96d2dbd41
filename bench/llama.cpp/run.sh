#!/usr/bin/env bash
# whale vs llama.cpp on exactly the same weights: export a whale model to GGUF (deepseek2) in
# f32 and bf16 (and its whale q8 and q4 copies as q8_0 and q4_1), run one token sequence through llama.cpp (logits.cpp, a small program on
# llama.h) and through `whale logits`, and print the max |logit difference| and the top-1
# agreement per format. Not run in CI: llama.cpp takes a while to build.
#
# llama.cpp is obtained and built outside the repository: its current release ships as a git
# bundle inside the npm package node-llama-cpp (llama/gitRelease.bundle).
#
# usage: bench/llama.cpp/run.sh [MODEL_DIR]
#   MODEL_DIR   a DeepSeek model folder (default: a fresh `whale init --preset tiny`)
#   LLAMA_DIR   where llama.cpp is cloned and built (default: ../llama.cpp next to the repo)
#   WHALE       the whale binary (default: build/whale)
#   TOKENS      comma-separated ids (default: 24 ids below the vocabulary size)
#   THREADS     threads for both engines (default 2)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
WHALE=${WHALE:-$repo/build/whale}
THREADS=${THREADS:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$here/setup.sh"
build_llama_program logits llama_logits

model=${1:-}
if [ -z "$model" ]; then
  model="$work/tiny"
  "$WHALE" init --preset tiny --out "$model" > /dev/null
fi
vocab=$(sed -n 's/.*"vocab_size": *\([0-9]*\).*/\1/p' "$model/config.json" | head -1)
if [ -z "${TOKENS:-}" ]; then
  TOKENS=$(awk -v v="$vocab" 'BEGIN { s = ""; for (i = 0; i < 24; ++i) s = s (i ? "," : "") (i * 37 + 5) % v; print s }')
fi
echo "== model $model (vocab $vocab), tokens $TOKENS"
"$WHALE" --threads "$THREADS" logits --model "$model" --tokens "$TOKENS" --out "$work/whale.npy"
for quant in f32 bf16; do
  "$WHALE" convert --to gguf --model "$model" --quant "$quant" --out "$work/m-$quant.gguf" > /dev/null
  printf '%-5s ' "$quant"
  "$work/llama_logits" "$work/m-$quant.gguf" "$TOKENS" "$work/whale.npy" "$THREADS" 2> "$work/llama-$quant.log" ||
    { echo "llama.cpp failed:"; tail -20 "$work/llama-$quant.log"; exit 1; }
done
# q8_0 and q4_1: whale's q8 and q4 models (the same groups exactly) against their own logits.
for pair in q8:q8_0 q4:q4_1; do
  q=${pair%:*} quant=${pair#*:}
  "$WHALE" --threads "$THREADS" convert --model "$model" --quant "$q" --out "$work/$q" > /dev/null 2>&1
  "$WHALE" --threads "$THREADS" logits --model "$work/$q" --tokens "$TOKENS" --out "$work/whale-$q.npy"
  "$WHALE" convert --to gguf --model "$work/$q" --quant "$quant" --out "$work/m-$quant.gguf" > /dev/null 2>&1
  printf '%-5s ' "$quant"
  "$work/llama_logits" "$work/m-$quant.gguf" "$TOKENS" "$work/whale-$q.npy" "$THREADS" 2> "$work/llama-$quant.log" ||
    { echo "llama.cpp failed:"; tail -20 "$work/llama-$quant.log"; exit 1; }
done
