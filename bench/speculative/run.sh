#!/usr/bin/env bash
# MTP speculative decoding against plain decoding on a trained model: the greedy outputs must be
# identical; prints per prompt the draft acceptance rate and both decode speeds, then the
# overall acceptance and the median speedup. Plain and speculative runs alternate (this
# machine's speed drifts from minute to minute).
#
# usage: bench/speculative/run.sh [MODEL_DIR]
#   MODEL_DIR  a trained DeepSeek model with an MTP module. Without it the script trains one
#              by SHAPE:
#              dense (default): a memory-bound model, where speculation can pay — MLA with dense
#                FFNs, hidden 1024, 16 heads, FFN 2816, 8 layers + the MTP layer, byte
#                vocabulary, bf16 (85M parameters + MTP, 173 MB: 5× the L3 cache) on the built-in
#                stories corpus (TRAIN_STEPS, default 300: about 10 minutes on 2 cores;
#                --mtp-weight MTP_WEIGHT, default 1.0);
#              wide: the same with hidden 1536 and FFN 4096 (166M parameters + MTP 17M): the weights
#                a larger share of a step, as in real models (300 steps: about 22 minutes);
#              demo: the r1-zero demo shape (hidden 128, 4 layers; overhead-bound) on the task
#                corpus (TRAIN_STEPS, default 600; about 5 minutes; --mtp-weight 0.3).
#   TUNE_STEPS then tune its MTP module for this many steps by self-distillation (`whale train
#              --train mtp --mtp-target model`: only the draft learns, the model's output is
#              unchanged; 300 steps of the wide model: about 9 minutes); default 0 (no tuning)
#   DTYPE      bf16 (default): benchmark a bf16 copy (`whale convert --quant bf16`) of an f32 model,
#              as a trained model is deployed; asis: the model as it is
#   MTP_QUANT  with DTYPE=bf16: also quantize the MTP module (`--mtp q8` or q4), a cheaper draft
#   DRAFTS     drafts per verification pass to compare, e.g. "1 2" (default 1)
#   WHALE      the whale binary (default: build/whale)
#   N          tokens per generation (default 200)
#   EOS        ignore (default): always N tokens (--ignore-eos), running on past the end of the
#              model's document; stop: end at the model's EOS, as a user's generation does
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
if [ -z "$model" ] && [ "${SHAPE:-dense}" = demo ]; then
  echo "== training a model (r1-zero-demo shape, ${TRAIN_STEPS:-600} steps)"
  "$WHALE" data synth --kind tasks --bytes 4000000 --out "$work/data" > /dev/null
  "$WHALE" train --data "$work/data" --preset r1-zero-demo --steps "${TRAIN_STEPS:-600}" \
    --batch 32 --seq-len 96 --lr 2e-3 --mtp-weight 0.3 --eval-every 100000 --save-every 100000 \
    --out "$work/run" > "$work/train.log" 2>&1
  model="$work/run/model"
elif [ -z "$model" ]; then
  if [ "${SHAPE:-dense}" = wide ]; then hidden=1536 ffn=4096 size=166M; else hidden=1024 ffn=2816 size=85M; fi
  echo "== training a model (dense $size + MTP, ${TRAIN_STEPS:-300} steps)"
  cat > "$work/dense-mtp.json" <<JSON
{"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "vocab_size": 258,
 "bos_token_id": 256, "eos_token_id": 257, "hidden_size": $hidden, "intermediate_size": $ffn,
 "num_hidden_layers": 8, "first_k_dense_replace": 8, "num_attention_heads": 16,
 "num_key_value_heads": 8, "q_lora_rank": 256, "kv_lora_rank": 128, "qk_nope_head_dim": 32,
 "qk_rope_head_dim": 16, "v_head_dim": 32, "n_routed_experts": 16, "n_shared_experts": 1,
 "num_experts_per_tok": 4, "moe_intermediate_size": 128, "moe_layer_freq": 1, "n_group": 4,
 "topk_group": 2, "topk_method": "noaux_tc", "scoring_func": "sigmoid", "norm_topk_prob": true,
 "routed_scaling_factor": 2.5, "num_nextn_predict_layers": 1, "hidden_act": "silu",
 "max_position_embeddings": 4096, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
 "rope_scaling": null, "attention_bias": false, "tie_word_embeddings": false,
 "torch_dtype": "bfloat16"}
JSON
  "$WHALE" data synth --kind stories --bytes 2000000 --out "$work/data" > /dev/null
  "$WHALE" --threads "$THREADS" train --data "$work/data" --config "$work/dense-mtp.json" \
    --steps "${TRAIN_STEPS:-300}" --batch 4 --seq-len 128 --lr 1e-3 --mtp-weight "${MTP_WEIGHT:-1.0}" \
    --eval-every 100000 --save-every 100000 --out "$work/run" > "$work/train.log" 2>&1
  model="$work/run/model"
fi

if [ "${TUNE_STEPS:-0}" -gt 0 ]; then
  # Self-distillation of the draft: the MTP module alone learns the main model's next-token
  # distribution (whale train --train mtp --mtp-target model), on the training corpus.
  echo "== tuning the MTP module of $model to the model itself (${TUNE_STEPS} steps)"
  [ -d "$work/data" ] || "$WHALE" data synth --kind stories --bytes 2000000 --out "$work/data" > /dev/null
  "$WHALE" --threads "$THREADS" train --data "$work/data" --model "$model" --train mtp \
    --mtp-target model --mtp-weight 1 --steps "$TUNE_STEPS" --batch 4 --seq-len 128 --lr 5e-4 \
    --warmup 20 --schedule cosine --eval-every 100000 --save-every 100000 --out "$work/tune" \
    > "$work/tune.log" 2>&1
  grep 'MTP draft agrees' "$work/tune.log" || true
  model="$work/tune/model"
fi

if [ "${DTYPE:-bf16}" = bf16 ]; then  # (a bf16 model's copy is the same model)
  mtp=(); [ -n "${MTP_QUANT:-}" ] && mtp=(--mtp "$MTP_QUANT")
  echo "== bf16 copy of $model (whale convert --quant bf16 ${mtp[*]})"
  "$WHALE" convert --model "$model" --quant bf16 "${mtp[@]}" --out "$work/bf16" > /dev/null 2>&1
  model="$work/bf16"
fi

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
prompts=("Q: 23+45" "Q: 17*3" "Once upon a time" "Q: Tom has 5 apples")
read -r -a draft_counts <<< "${DRAFTS:-1}"
declare -A total_drafts total_accepted speedups
for prompt in "${prompts[@]}"; do
  plain_rates=()
  declare -A spec_rates=()
  for ((r = 0; r < REPEAT; ++r)); do
    for mode in plain "${draft_counts[@]}"; do
      args=(--threads "$THREADS" generate --model "$model" --prompt "$prompt" -n "$N" --stats)
      [ "${EOS:-ignore}" = ignore ] && args+=(--ignore-eos)
      [ "$mode" != plain ] && args+=(--speculative mtp --draft-tokens "$mode")
      "$WHALE" "${args[@]}" > "$work/$mode.out" 2> "$work/$mode.err"
      rate=$(sed -n 's/.*decode [0-9]* tokens in [0-9.]* s (\([0-9.]*\) tok\/s).*/\1/p' "$work/$mode.err")
      if [ "$mode" = plain ]; then plain_rates+=("$rate"); else spec_rates[$mode]+=" $rate"; fi
      if [ "$mode" != plain ]; then
        cmp -s "$work/plain.out" "$work/$mode.out" || { echo "OUTPUTS DIFFER for '$prompt' ($mode drafts)"; exit 1; }
      fi
    done
  done
  decoded=$(sed -n 's/.*decode \([0-9]*\) tokens in.*/\1/p' "$work/plain.err")
  if [ "${decoded:-0}" -lt 16 ]; then  # (EOS=stop: the model ended its answer at once)
    echo "'$prompt': the model stops after $decoded token(s); left out"
    unset spec_rates
    continue
  fi
  p=$(median "${plain_rates[@]}")
  for k in "${draft_counts[@]}"; do
    line=$(grep '^speculative:' "$work/$k.err")
    read -r drafts accepted < <(sed -n 's/speculative: \([0-9]*\) drafts, \([0-9]*\) accepted.*/\1 \2/p' <<< "$line")
    by_depth=$(sed -n 's/.*of those checked: \([^)]*\)).*/\1/p' <<< "$line")
    read -r per_pass verify_ms draft_ms < <(sed -n 's/.*, \([0-9.]*\) tokens per verification pass; \([0-9.]*\) ms per verification pass, \([0-9.]*\) ms drafting.*/\1 \2 \3/p' <<< "$line")
    total_drafts[$k]=$((${total_drafts[$k]:-0} + drafts))
    total_accepted[$k]=$((${total_accepted[$k]:-0} + accepted))
    # $spec_rates[$k] holds this prompt's runs
    # shellcheck disable=SC2086
    s=$(median ${spec_rates[$k]})
    speedup=$(awk -v p="$p" -v s="$s" 'BEGIN { printf "%.2f", s / p }')
    speedups[$k]+=" $speedup"
    # What a speculative step costs against one plain decode step: verification (k + 1 rows) +
    # the MTP rows (the verified positions' and the chained drafts').
    printf '%-22s %d draft(s)  acceptance by depth %-16s %4.2f tokens/pass  plain %7.1f tok/s  mtp %7.1f tok/s  speedup %sx  (step: verify %s ms + draft %s ms vs plain %.3f ms/token)\n' \
      "'$prompt'" "$k" "$by_depth" "$per_pass" "$p" "$s" "$speedup" "$verify_ms" "$draft_ms" \
      "$(awk -v p="$p" 'BEGIN { print 1000 / p }')"
  done
  unset spec_rates
done
for k in "${draft_counts[@]}"; do
  # shellcheck disable=SC2086
  echo "overall, $k draft(s) per pass: $(awk -v a="${total_accepted[$k]}" -v d="${total_drafts[$k]}" 'BEGIN { printf "%.1f%%", 100 * a / d }') of drafts accepted, median speedup $(median ${speedups[$k]})x, identical greedy output"
done
