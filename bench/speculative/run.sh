#!/usr/bin/env bash
# MTP speculative decoding against plain decoding on a trained model: the greedy outputs must be
# identical; prints per prompt the draft acceptance rate and both decode speeds, then the
# overall acceptance and the median speedup. Plain and speculative runs alternate (this
# machine's speed drifts from minute to minute).
#
# usage: bench/speculative/run.sh [MODEL_DIR]
#   MODEL_DIR  a trained DeepSeek model with an MTP module. Without it the script trains one:
#              the r1-zero demo shape on the built-in task corpus (TRAIN_STEPS, default 600;
#              about 5 minutes on 2 cores), --mtp-weight 0.3.
#   WHALE      the whale binary (default: build/whale)
#   N          tokens per generation (default 200)
#   REPEAT     alternating runs per prompt (default 3)
#   THREADS    threads (default 2)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
WHALE=${WHALE:-$repo/build/whale}
N=${N:-200}
REPEAT=${REPEAT:-3}
THREADS=${THREADS:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

model=${1:-}
if [ -z "$model" ]; then
  echo "== training a model (r1-zero-demo shape, ${TRAIN_STEPS:-600} steps)"
  "$WHALE" data synth --kind tasks --bytes 4000000 --out "$work/data" > /dev/null
  "$WHALE" train --data "$work/data" --preset r1-zero-demo --steps "${TRAIN_STEPS:-600}" \
    --batch 32 --seq-len 96 --lr 2e-3 --mtp-weight 0.3 --eval-every 100000 --save-every 100000 \
    --out "$work/run" > "$work/train.log" 2>&1
  model="$work/run/model"
fi

prompts=("Q: 23+45" "Q: 17*3" "Once upon a time" "Q: Tom has 5 apples")
total_drafts=0
total_accepted=0
speedups=()
for prompt in "${prompts[@]}"; do
  plain_rates=()
  spec_rates=()
  for ((r = 0; r < REPEAT; ++r)); do
    for mode in plain mtp; do
      args=(--threads "$THREADS" generate --model "$model" --prompt "$prompt" -n "$N" --ignore-eos --stats)
      [ "$mode" = mtp ] && args+=(--speculative mtp)
      "$WHALE" "${args[@]}" > "$work/$mode.out" 2> "$work/$mode.err"
      rate=$(sed -n 's/.*decode [0-9]* tokens in [0-9.]* s (\([0-9.]*\) tok\/s).*/\1/p' "$work/$mode.err")
      if [ "$mode" = plain ]; then plain_rates+=("$rate"); else spec_rates+=("$rate"); fi
    done
    cmp -s "$work/plain.out" "$work/mtp.out" || { echo "OUTPUTS DIFFER for '$prompt'"; exit 1; }
  done
  read -r drafts accepted < <(sed -n 's/speculative: \([0-9]*\) drafts, \([0-9]*\) accepted.*/\1 \2/p' "$work/mtp.err")
  read -r verify_ms draft_ms < <(sed -n 's/.* \([0-9.]*\) ms per verification pass, \([0-9.]*\) ms per draft.*/\1 \2/p' "$work/mtp.err")
  total_drafts=$((total_drafts + drafts))
  total_accepted=$((total_accepted + accepted))
  median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
  p=$(median "${plain_rates[@]}")
  s=$(median "${spec_rates[@]}")
  speedup=$(awk -v p="$p" -v s="$s" 'BEGIN { printf "%.2f", s / p }')
  speedups+=("$speedup")
  # What a speculative step costs against one plain decode step: verification (two rows) + draft.
  printf '%-22s acceptance %5.1f%%  plain %8.1f tok/s  mtp %8.1f tok/s  speedup %sx  (step: verify %s ms + draft %s ms vs plain %.3f ms/token)\n' \
    "'$prompt'" "$(awk -v a="$accepted" -v d="$drafts" 'BEGIN { print 100 * a / d }')" "$p" "$s" "$speedup" \
    "$verify_ms" "$draft_ms" "$(awk -v p="$p" 'BEGIN { print 1000 / p }')"
done
echo "overall: acceptance $(awk -v a=$total_accepted -v d=$total_drafts 'BEGIN { printf "%.1f%%", 100 * a / d }'), median speedup $(printf '%s\n' "${speedups[@]}" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')x, identical greedy output"
