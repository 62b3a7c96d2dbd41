# Sourced by run.sh, speed.sh and interleaved.sh: fetches and builds llama.cpp (CPU, libllama
# only) outside the repository if it is not there yet. Expects $repo and $work; sets LLAMA_DIR
# and llama_bin; defines build_llama_program, prepare_models and format_pair (below).
# llama.cpp's current release ships as a git bundle inside the npm package node-llama-cpp
# (llama/gitRelease.bundle).
LLAMA_DIR=${LLAMA_DIR:-$(dirname "$repo")/llama.cpp}
if [ ! -d "$LLAMA_DIR/.git" ]; then
  echo "== fetching llama.cpp (npm pack node-llama-cpp) into $LLAMA_DIR" >&2
  (cd "$work" && npm pack --silent node-llama-cpp > /dev/null &&
    tar xzf node-llama-cpp-*.tgz package/llama/gitRelease.bundle package/llama/binariesGithubRelease.json)
  git clone -q "$work/package/llama/gitRelease.bundle" "$LLAMA_DIR"
  cp "$work/package/llama/binariesGithubRelease.json" "$LLAMA_DIR/release.json"
fi
if [ ! -f "$LLAMA_DIR/build/bin/libllama.so" ]; then
  echo "== building llama.cpp (CPU, library only)" >&2
  cmake -S "$LLAMA_DIR" -B "$LLAMA_DIR/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF > /dev/null
  nice -n 19 cmake --build "$LLAMA_DIR/build" -j2 --target llama
fi
llama_bin="$LLAMA_DIR/build/bin"

# Compiles bench/llama.cpp/$1.cpp against it into $work/$2.
build_llama_program() {
  nice -n 19 g++ -O2 -std=c++17 "$here/$1.cpp" -I"$LLAMA_DIR/include" -I"$LLAMA_DIR/ggml/include" \
    -L"$llama_bin" -lllama -lggml -lggml-base -Wl,-rpath,"$llama_bin" -o "$work/$2"
}

# The whale models the benchmarks compare (made when missing, as bench/inference/run.sh makes
# them): $MODELS/v2-lite-8l (bf16, `whale init`) and its q8 / q4 conversions for the formats in
# $FORMATS. Expects WHALE, MODELS, THREADS, FORMATS.
prepare_models() {
  base="$MODELS/v2-lite-8l"
  [ -f "$base/config.json" ] || nice -n 19 "$WHALE" init --preset v2-lite-8l --out "$base"
  for q in q8 q4; do
    case " $FORMATS " in *" $q "*) ;; *) continue ;; esac
    [ -f "$base-$q/config.json" ] ||
      nice -n 19 "$WHALE" --threads "$THREADS" convert --model "$base" --quant "$q" --out "$base-$q"
  done
}

# Sets dir (the whale model of format $1) and gguf (its export, made in $GGUF_DIR when missing):
# q8 = whale's q8 against q8_0, q4 = whale's q4 against q4_1 (the same groups exactly; both keep
# the head q8), bf16 = the bf16 model against its bf16 export.
format_pair() {
  local quant
  case "$1" in
    q8) dir="$base-q8"; quant=q8_0 ;;
    q4) dir="$base-q4"; quant=q4_1 ;;
    bf16) dir="$base"; quant=bf16 ;;
    *) echo "unknown format $1 (q8, q4 or bf16)" >&2; exit 2 ;;
  esac
  gguf="$GGUF_DIR/v2-lite-8l-$quant.gguf"
  if [ ! -f "$gguf" ]; then
    echo "== exporting $dir -> $gguf" >&2
    mkdir -p "$GGUF_DIR"
    # No MTP block: llama.cpp does not load it by default and decode reads neither engine's.
    nice -n 19 "$WHALE" --threads "$THREADS" convert --to gguf --model "$dir" --quant "$quant" \
      --no-mtp --out "$gguf.tmp" > /dev/null
    mv "$gguf.tmp" "$gguf"
  fi
}
