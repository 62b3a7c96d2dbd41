# Sourced by run.sh and speed.sh: fetches and builds llama.cpp (CPU, libllama only) outside the
# repository if it is not there yet. Expects $repo and $work; sets LLAMA_DIR and llama_bin.
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
