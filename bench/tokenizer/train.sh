#!/usr/bin/env bash
# BPE training speed on one core: `whale tokenizer train` vs Hugging Face's BpeTrainer (Rust,
# via its Node binding, one thread), on the same mixed multilingual corpus (make_corpus.mjs),
# both to a 30000-token vocabulary with DeepSeek-V3's pre-tokenizer; then checks that HF encodes
# with the tokenizer whale learned exactly as whale does.
#   bash bench/tokenizer/train.sh [megabytes of corpus, default 4] [core, default 0]
# Needs: a built whale (build/ or $WHALE), node + npm.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
megabytes="${1:-4}"
core="${2:-0}"
whale="${WHALE:-$root/build/whale}"
work="$(mktemp -d /tmp/whale-bpe-bench.XXXXXX)"
trap 'rm -rf "$work"' EXIT

[ -x "$whale" ] || { echo "no whale binary at $whale (build first, or set WHALE=...)" >&2; exit 1; }
[ -d "$root/tests/text/node_modules/tokenizers" ] ||
  npm install --prefix "$root/tests/text" --no-audit --no-fund >/dev/null
node "$root/bench/tokenizer/make_corpus.mjs" "$work/corpus.jsonl" "$megabytes" >/dev/null
# The same documents as plain text (HF's trainer reads text files line by line).
node -e 'const fs = require("fs");
  const docs = fs.readFileSync(process.argv[1], "utf8").split("\n").filter((l) => l).map((l) => JSON.parse(l).text);
  fs.writeFileSync(process.argv[2], docs.join("\n") + "\n");' "$work/corpus.jsonl" "$work/corpus.txt"

export TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1 UV_THREADPOOL_SIZE=1 OMP_NUM_THREADS=1
pin=(taskset -c "$core")
for input in corpus.txt corpus.jsonl; do
  echo "whale, $input:"
  "${pin[@]}" "$whale" tokenizer train --input "$work/$input" --vocab-size 30000 --min-frequency 1 \
    --out "$work/whale-$input" 2>&1 | grep -E "distinct pre-tokens|note" | sed 's/^/  /'
done
echo "Hugging Face (default BpeTrainer), corpus.txt:"
echo "  $("${pin[@]}" node "$root/bench/tokenizer/train_hf.mjs" "$work/whale-corpus.txt/tokenizer.json" \
  "$work/corpus.txt" 2>/dev/null | tail -1)"

# Whale's trained tokenizer in HF's library: the same ids as whale's own encoding, on the
# training documents and on every assigned code point in context (unicode_sweep.mjs).
node "$root/bench/tokenizer/unicode_sweep.mjs" "$work/sweep.jsonl" 2>/dev/null
for docs in corpus sweep; do
  node "$root/bench/tokenizer/bench_hf.mjs" "$work/whale-corpus.jsonl" "$work/$docs.jsonl" 1 \
    "$work/hf_ids.jsonl" >/dev/null
  "$whale" tokenize --tokenizer "$work/whale-corpus.jsonl" --jsonl < "$work/$docs.jsonl" \
    > "$work/whale_ids.jsonl"
  echo "ids, whale's tokenizer in HF vs whale, $docs.jsonl: $(node "$root/bench/tokenizer/compare_ids.mjs" \
    "$work/hf_ids.jsonl" "$work/whale_ids.jsonl" || true)"
done
