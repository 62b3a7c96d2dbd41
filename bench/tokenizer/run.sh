#!/usr/bin/env bash
# Tokenizer throughput on one core: whale vs Hugging Face's tokenizers (Rust, via its Node
# binding), on the same mixed multilingual corpus, for the DeepSeek-V3, R1 and R1-Distill-Qwen
# tokenizers; also checks that both give the same ids for every document.
#   bash bench/tokenizer/run.sh [megabytes of corpus, default 8] [core, default 0]
# Needs: a built whale (build/ or $WHALE), node + npm, the tokenizers in ../shared/assets.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
megabytes="${1:-8}"
core="${2:-0}"
whale="${WHALE:-$root/build/whale}"
assets="$root/../shared/assets"
work="$(mktemp -d /tmp/whale-tokenizer-bench.XXXXXX)"
trap 'rm -rf "$work"' EXIT

[ -x "$whale" ] || { echo "no whale binary at $whale (build first, or set WHALE=...)" >&2; exit 1; }
[ -d "$root/tests/text/node_modules/tokenizers" ] ||
  npm install --prefix "$root/tests/text" --no-audit --no-fund >/dev/null
node "$root/bench/tokenizer/make_corpus.mjs" "$work/corpus.jsonl" "$megabytes"

# One core for both: pinned, and no thread pools in the Rust library.
export TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1 UV_THREADPOOL_SIZE=1 OMP_NUM_THREADS=1
pin=(taskset -c "$core")

rate() {  # mb_per_s[index] of a JSON report
  node -e "const r = JSON.parse(process.argv[1]); console.log(r.mb_per_s[$2].toFixed(2))" "$1"
}
printf "\n%-18s %12s %12s %12s %12s %9s  %s\n" tokenizer "whale cold" "whale warm" "HF cold" \
  "HF warm" "speed-up" "ids equal (documents)"
for pair in deepseek-v3:deepseek-v3-tokenizer deepseek-r1:deepseek-r1-tokenizer \
            r1-distill-qwen:deepseek-r1-distill-qwen-tokenizer; do
  name="${pair%%:*}"; dir="$assets/${pair#*:}"
  [ -f "$dir/tokenizer.json" ] || { echo "$name: no $dir/tokenizer.json, skipped"; continue; }
  hf=$("${pin[@]}" node "$root/bench/tokenizer/bench_hf.mjs" "$dir" "$work/corpus.jsonl" 3 \
        "$work/hf_ids.jsonl")
  ours=$("${pin[@]}" "$whale" tokenize --tokenizer "$dir" --bench "$work/corpus.jsonl" --passes 3)
  "$whale" tokenize --tokenizer "$dir" --jsonl < "$work/corpus.jsonl" > "$work/whale_ids.jsonl"
  same=$(node "$root/bench/tokenizer/compare_ids.mjs" "$work/hf_ids.jsonl" "$work/whale_ids.jsonl" || true)
  warm_ours=$(node -e "console.log(Math.max(...JSON.parse(process.argv[1]).mb_per_s.slice(1)).toFixed(2))" "$ours")
  warm_hf=$(node -e "console.log(Math.max(...JSON.parse(process.argv[1]).mb_per_s.slice(1)).toFixed(2))" "$hf")
  speedup=$(node -e "console.log((process.argv[1] / process.argv[2]).toFixed(1) + 'x')" "$warm_ours" "$warm_hf")
  printf "%-18s %9s MB/s %7s MB/s %7s MB/s %7s MB/s %9s  %s\n" "$name" "$(rate "$ours" 0)" \
    "$warm_ours" "$(rate "$hf" 0)" "$warm_hf" "$speedup" "$same"
done
echo "(cold: first pass, empty caches; warm: best of passes 2-3; one core: taskset -c $core)"

# Every assigned code point in the contexts where Unicode classes and NFC matter.
node "$root/bench/tokenizer/unicode_sweep.mjs" "$work/sweep.jsonl" 2>/dev/null
echo
for pair in deepseek-v3:deepseek-v3-tokenizer deepseek-r1:deepseek-r1-tokenizer \
            r1-distill-qwen:deepseek-r1-distill-qwen-tokenizer; do
  name="${pair%%:*}"; dir="$assets/${pair#*:}"
  [ -f "$dir/tokenizer.json" ] || continue
  node "$root/bench/tokenizer/bench_hf.mjs" "$dir" "$work/sweep.jsonl" 1 "$work/hf_ids.jsonl" >/dev/null
  "$whale" tokenize --tokenizer "$dir" --jsonl < "$work/sweep.jsonl" > "$work/whale_ids.jsonl"
  printf "%-18s Unicode sweep (every assigned code point): ids %s lines\n" "$name" \
    "$(node "$root/bench/tokenizer/compare_ids.mjs" "$work/hf_ids.jsonl" "$work/whale_ids.jsonl" || true)"
done
