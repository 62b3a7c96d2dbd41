#!/usr/bin/env bash
# BPE training speed on one core: `whale tokenizer train` vs Hugging Face's BpeTrainer (Rust,
# via its Node binding, one thread), on the same mixed multilingual corpus (make_corpus.mjs),
# both to a 30000-token vocabulary with DeepSeek-V3's pre-tokenizer.
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
