#!/usr/bin/env bash
# whale vs llama.cpp decode in one process (interleaved.cpp): the two engines take turns, BLOCK
# tokens each, for ROUNDS rounds, so both decode in the same seconds of this machine's drifting
# memory bandwidth — the ratio speed.sh's alternating runs (a minute apart) can only bracket.
# Per format: whale's model and its GGUF export, as speed.sh pairs them. Prints a markdown table
# and saves the JSON lines.
#
#   bash bench/llama.cpp/interleaved.sh [--force]
#
# Environment:
#   FORMATS        "q8 bf16" (default), or any of q8 q4 bf16 (as in speed.sh)
#   REPEAT         runs per format (default 2), formats alternating
#   ROUNDS, BLOCK  turns per run and tokens per turn (defaults 16, 8)
#   DECODE_PROMPT  prompt length before decoding (default 128)
#   THREADS        threads for both engines (default 2)
#   LLAMA_MMAP     1 (default: llama.cpp's default, the GGUF mapped) or 0 (read into memory)
#   BUILD          whale's CMake build folder, for libwhale_core.a (default build)
#   MODELS, GGUF_DIR, WHALE, LLAMA_DIR, RESULTS as in speed.sh
# bf16 maps 11 GB of whale weights and a 9 GB GGUF at once: the pair must fit the page cache.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
BUILD=${BUILD:-$repo/build}
WHALE=${WHALE:-$BUILD/whale}
MODELS=${MODELS:-/work/models}
GGUF_DIR=${GGUF_DIR:-$MODELS/gguf}
THREADS=${THREADS:-2}
FORMATS=${FORMATS:-q8 bf16}
REPEAT=${REPEAT:-2}
ROUNDS=${ROUNDS:-16}
BLOCK=${BLOCK:-8}
DECODE_PROMPT=${DECODE_PROMPT:-128}
RESULTS=${RESULTS:-$here/results}
[ -f "$BUILD/libwhale_core.a" ] ||
  { echo "no $BUILD/libwhale_core.a: build whale first (bash scripts/test.sh or cmake)" >&2; exit 2; }
load=$(cut -d' ' -f1 /proc/loadavg)
if [ "${1:-}" != "--force" ] && awk -v l="$load" 'BEGIN { exit !(l >= 1.5) }'; then
  echo "machine busy (load average $load >= 1.5): not benchmarking; rerun later or --force" >&2
  exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$here/setup.sh"
nice -n 19 g++ -O2 -std=c++20 -fopenmp "$here/interleaved.cpp" -I"$repo/src" \
  -I"$LLAMA_DIR/include" -I"$LLAMA_DIR/ggml/include" "$BUILD/libwhale_core.a" -lhwy -lopenblas \
  -lpcre2-8 -L"$llama_bin" -lllama -lggml -lggml-base -Wl,-rpath,"$llama_bin" \
  -o "$work/interleaved"
prepare_models
mkdir -p "$RESULTS"
out="$RESULTS/interleaved-$(date +%Y%m%d-%H%M).jsonl"
: > "$out"
for run in $(seq 1 "$REPEAT"); do
  for fmt in $FORMATS; do
    format_pair "$fmt"  # dir, gguf
    bytes=$(python3 "$here/gguf_bytes.py" "$gguf" |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["bytes_per_token"])')
    echo "== $fmt run $run (load average $(cut -d' ' -f1 /proc/loadavg))" >&2
    "$work/interleaved" "$dir" "$gguf" --threads "$THREADS" --decode-prompt "$DECODE_PROMPT" \
      --block "$BLOCK" --rounds "$ROUNDS" --gguf-bytes-per-token "$bytes" \
      --llama-mmap "${LLAMA_MMAP:-1}" \
      2> "$work/log" > "$work/run.json" || { tail -20 "$work/log" >&2; exit 1; }
    python3 - "$fmt" "$run" "$work/run.json" >> "$out" <<'PY'
import json, sys, time
j = json.load(open(sys.argv[3]))
print(json.dumps({"format": sys.argv[1], "run": int(sys.argv[2]),
                  "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **j}))
PY
  done
done

python3 - "$out" <<'PY' | tee "${out%.jsonl}.md"
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
print("| format | run | whale tok/s | llama.cpp tok/s | whale / llama.cpp (all blocks) "
      "| per round: median (quartiles; range) | probe GB/s (median) | GB read/token (whale; GGUF) "
      "| whale % of probe | llama.cpp % of probe |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in sorted(runs, key=lambda r: (r["format"], r["run"])):
    print(f"| {r['format']} | {r['run']} | {r['whale_decode_tok_s']:.2f} "
          f"| {r['llama_decode_tok_s']:.2f} | **{r['ratio']:.2f}** "
          f"| {r['round_ratio_median']:.2f} ({r['round_ratio_q25']:.2f}–{r['round_ratio_q75']:.2f}; "
          f"{r['round_ratio_min']:.2f}–{r['round_ratio_max']:.2f}) | {r['bandwidth_gbps']:.1f} "
          f"| {r['whale_bytes_per_token']/1e9:.3f}; {r['llama_bytes_per_token']/1e9:.3f} "
          f"| {100*r['whale_fraction']:.0f}% | {100*r['llama_fraction']:.0f}% |")
r = runs[0]
print(f"\n{r['threads']} threads; {r['rounds']} rounds of {r['block']} tokens per engine after a "
      f"{r['decode_prompt']}-token prompt, who goes first alternating; probe: 512 MiB streaming "
      f"read between rounds.")
PY
echo "saved $out and ${out%.jsonl}.md" >&2
