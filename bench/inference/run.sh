#!/usr/bin/env bash
# whale bench on the v2-lite-8l preset model in bf16, q8 and q4, with 2 threads; writes
# bench/inference/results/<name>.json and prints the table (also saved as results/table.md).
#
#   bash bench/inference/run.sh [--force]
#
# Environment: WHALE (the binary; default build/whale), MODELS (default /work/models),
# THREADS (default 2). The bf16 model is made once with
#   whale init --preset v2-lite-8l --out $MODELS/v2-lite-8l
# and the q8/q4 copies with whale convert (kept under $MODELS, never in the repository).
# The benchmark needs a quiet machine: it refuses to run while the 1-minute load average is
# 1.5 or more, unless --force is given.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
WHALE="${WHALE:-$root/build/whale}"
MODELS="${MODELS:-/work/models}"
THREADS="${THREADS:-2}"
results="$here/results"
mkdir -p "$results"

load="$(cut -d' ' -f1 /proc/loadavg)"
if [[ "${1:-}" != "--force" ]] && awk -v l="$load" 'BEGIN { exit !(l >= 1.5) }'; then
  echo "machine busy (load average $load >= 1.5): not benchmarking; rerun later or --force" >&2
  exit 2
fi

base="$MODELS/v2-lite-8l"
[[ -f "$base/config.json" ]] || nice -n 19 "$WHALE" init --preset v2-lite-8l --out "$base"
for q in q8 q4; do
  [[ -f "$base-$q/config.json" ]] ||
    nice -n 19 "$WHALE" --threads "$THREADS" convert --model "$base" --quant "$q" --out "$base-$q"
done

for name in bf16 q8 q4; do
  dir="$base"
  [[ "$name" == bf16 ]] || dir="$base-$name"
  echo "bench $name ($dir)" >&2
  nice -n 19 "$WHALE" bench --model "$dir" --threads "$THREADS" --json >"$results/$name.json"
done

python3 - "$results" <<'PY' | tee "$results/table.md"
import json, sys, os
d = sys.argv[1]
rows = []
print("| weights | size GB | prefill 128 tok/s | prefill 512 tok/s | TTFT s (128) | decode tok/s "
      "| GB read/token | bandwidth GB/s | decode / bandwidth ceiling | peak RSS GiB |")
print("|---|---|---|---|---|---|---|---|---|---|")
for name in ["bf16", "q8", "q4"]:
    j = json.load(open(os.path.join(d, name + ".json")))
    p = j["prefill_tok_s"]
    print(f"| {name} | {j['weight_bytes']/1e9:.2f} | {p['128']:.1f} | {p['512']:.1f} | "
          f"{j['ttft_s']:.2f} | {j['decode_tok_s']:.2f} | {j['bytes_per_token']/1e9:.3f} | "
          f"{j['bandwidth_gbps']:.1f} | {100*j['bandwidth_fraction']:.0f}% | "
          f"{j['peak_rss_mib']/1024:.1f} |")
j = json.load(open(os.path.join(d, "bf16.json")))
print(f"\n{j['threads']} threads, SIMD {j['simd']}.")
PY
