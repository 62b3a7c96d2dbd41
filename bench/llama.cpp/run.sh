#!/usr/bin/env bash
# whale vs llama.cpp on exactly the same weights: export a whale model to GGUF (deepseek2) in
# f32, bf16 and q8_0, run one token sequence through llama.cpp (logits.cpp, a small program on
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
LLAMA_DIR=${LLAMA_DIR:-$(dirname "$repo")/llama.cpp}
WHALE=${WHALE:-$repo/build/whale}
THREADS=${THREADS:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ ! -d "$LLAMA_DIR/.git" ]; then
  echo "== fetching llama.cpp (npm pack node-llama-cpp) into $LLAMA_DIR"
  (cd "$work" && npm pack --silent node-llama-cpp > /dev/null &&
    tar xzf node-llama-cpp-*.tgz package/llama/gitRelease.bundle package/llama/binariesGithubRelease.json)
  git clone -q "$work/package/llama/gitRelease.bundle" "$LLAMA_DIR"
  cp "$work/package/llama/binariesGithubRelease.json" "$LLAMA_DIR/release.json"
fi
if [ ! -f "$LLAMA_DIR/build/bin/libllama.so" ]; then
  echo "== building llama.cpp (CPU, library only)"
  cmake -S "$LLAMA_DIR" -B "$LLAMA_DIR/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF > /dev/null
  nice -n 19 cmake --build "$LLAMA_DIR/build" -j2 --target llama
fi
bin="$LLAMA_DIR/build/bin"
g++ -O2 -std=c++17 "$here/logits.cpp" -I"$LLAMA_DIR/include" -I"$LLAMA_DIR/ggml/include" \
  -L"$bin" -lllama -lggml -lggml-base -Wl,-rpath,"$bin" -o "$work/llama_logits"

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
for quant in f32 bf16 q8_0; do
  "$WHALE" convert --to gguf --model "$model" --quant "$quant" --out "$work/m-$quant.gguf" > /dev/null
  printf '%-5s ' "$quant"
  "$work/llama_logits" "$work/m-$quant.gguf" "$TOKENS" "$work/whale.npy" "$THREADS" 2> "$work/llama-$quant.log" ||
    { echo "llama.cpp failed:"; tail -20 "$work/llama-$quant.log"; exit 1; }
done
