#!/usr/bin/env bash
# Training speed, whale vs PyTorch eager (bench/train/pytorch_train.py): the same model, config,
# batches, objective and optimizer, float32 on both sides, the same number of threads.
# Runs alternate (whale, torch, whale, torch, ...) because the machine's speed drifts; prints a
# Markdown table with tokens/s per run, the medians and the ratio whale / PyTorch.
#
#   bench/train/run.sh                       # defaults: small preset, vocab 258, B=8, T=128, 30 steps, 3 rounds
#   WHALE=build/whale STEPS=60 ROUNDS=5 bench/train/run.sh
#   CONFIG_OVERRIDES='{"num_hidden_layers": 2}' bench/train/run.sh
#
# Environment (defaults in brackets):
#   WHALE [./build/whale]   the whale binary (nothing is built here)
#   PYTHON [/usr/bin/python3]
#   STEPS [30] BATCH [8] SEQ_LEN [128] THREADS [2] ROUNDS [3] (runs per engine) LR [3e-3]
#   PRESET [small]          whale preset giving the model shape; vocab_size is set to the data's (258)
#   CONFIG                  or a config.json to use instead of the preset (vocab_size still the data's)
#   CONFIG_OVERRIDES        JSON object merged into the config, e.g. '{"hidden_size": 384}'
#   DATA_BYTES [2000000]    size of the synthetic corpus
#   WORK                    scratch folder, kept (default: a fresh mktemp -d under /tmp, removed unless KEEP=1)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WHALE=${WHALE:-./build/whale}
PYTHON=${PYTHON:-/usr/bin/python3}
STEPS=${STEPS:-30}
BATCH=${BATCH:-8}
SEQ_LEN=${SEQ_LEN:-128}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
LR=${LR:-3e-3}
PRESET=${PRESET:-small}
CONFIG=${CONFIG:-}
CONFIG_OVERRIDES=${CONFIG_OVERRIDES:-}
DATA_BYTES=${DATA_BYTES:-2000000}
MTP_WEIGHT=0.3
BALANCE_ALPHA=1e-4
BIAS_GAMMA=0.001
SEED=0

[[ -x "$WHALE" ]] || { echo "run.sh: no whale binary at '$WHALE' (build it, or set WHALE=...)" >&2; exit 1; }
WHALE=$(cd "$(dirname "$WHALE")" && pwd)/$(basename "$WHALE")
[[ -z "$CONFIG" ]] || CONFIG=$(cd "$(dirname "$CONFIG")" && pwd)/$(basename "$CONFIG")
(( STEPS >= 2 )) || { echo "run.sh: STEPS must be at least 2 (step 0 is warm-up)" >&2; exit 1; }

if [[ -z "${WORK:-}" ]]; then
  WORK=$(mktemp -d /tmp/whale-train-bench.XXXXXX)
  # a folder made here is removed at the end unless KEEP=1 (a WORK given by the caller is kept)
  [[ "${KEEP:-0}" == 1 ]] || trap 'rm -rf "$WORK"' EXIT
else
  mkdir -p "$WORK"
fi
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
load1() { cut -d' ' -f1 /proc/loadavg; }

echo "scratch folder: $WORK" >&2
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# Data and model ---------------------------------------------------------------------------
"$WHALE" data synth --out "$WORK/data" --bytes "$DATA_BYTES" --seed "$SEED" >"$WORK/synth.log" 2>&1
if [[ -z "$CONFIG" ]]; then
  "$WHALE" init --preset "$PRESET" --dtype f32 --out "$WORK/preset" >"$WORK/preset.log" 2>&1
  CONFIG=$WORK/preset/config.json
fi
"$PYTHON" - "$CONFIG" "$WORK/data/data.json" "$WORK/config.json" "$CONFIG_OVERRIDES" <<'EOF'
import json, sys
cfg = json.load(open(sys.argv[1]))
cfg["vocab_size"] = json.load(open(sys.argv[2]))["vocab_size"]
cfg["torch_dtype"] = "float32"
if sys.argv[4]:
    cfg.update(json.loads(sys.argv[4]))
json.dump(cfg, open(sys.argv[3], "w"), indent=2)
EOF
rm -rf "$WORK/preset"
"$WHALE" init --config "$WORK/config.json" --dtype f32 --seed "$SEED" --out "$WORK/model" >"$WORK/init.log" 2>&1

# Correctness: loss and gradients at the initial weights on one sequence (B = 1), whale grad vs
# the PyTorch model --------------------------------------------------------------------------
echo "checking the PyTorch model against whale grad on one sequence ..." >&2
"$PYTHON" -c "
import json, sys
import numpy as np
t = np.fromfile(sys.argv[1], dtype='<u4', count=int(sys.argv[2]))
json.dump({'tokens': t.tolist()}, open(sys.argv[3], 'w'))
open(sys.argv[4], 'w').write(','.join(map(str, t.tolist())))
" "$WORK/data/train.bin" "$SEQ_LEN" "$WORK/check_tokens.json" "$WORK/check_tokens.txt"
"$WHALE" --threads "$THREADS" grad --model "$WORK/model" --tokens "$(cat "$WORK/check_tokens.txt")" \
  --mtp-weight "$MTP_WEIGHT" --balance-alpha "$BALANCE_ALPHA" --out "$WORK/check_grads.safetensors" \
  >"$WORK/check_whale.txt" 2>&1 || { cat "$WORK/check_whale.txt" >&2; exit 1; }
"$PYTHON" "$HERE/pytorch_train.py" --model "$WORK/model" --threads "$THREADS" --check "$WORK/check_tokens.json" \
  --mtp-weight "$MTP_WEIGHT" --balance-alpha "$BALANCE_ALPHA" --compare-grads "$WORK/check_grads.safetensors" \
  >"$WORK/check_torch.txt" 2>&1 || { cat "$WORK/check_torch.txt" >&2; exit 1; }

# Runs, alternating --------------------------------------------------------------------------
COMMON=(--steps "$STEPS" --batch "$BATCH" --seq-len "$SEQ_LEN" --lr "$LR" --warmup 0
        --mtp-weight "$MTP_WEIGHT" --balance-alpha "$BALANCE_ALPHA" --bias-gamma "$BIAS_GAMMA" --seed "$SEED")
: >"$WORK/runs.txt"
for ((r = 1; r <= ROUNDS; r++)); do
  echo "round $r/$ROUNDS: whale ($STEPS steps) ..." >&2
  l=$(load1)
  "$WHALE" --threads "$THREADS" train --data "$WORK/data" --model "$WORK/model" --out "$WORK/whale-$r" \
    "${COMMON[@]}" --eval-every 1000000 --save-every 1000000 >"$WORK/whale-$r.txt" 2>&1 ||
    { cat "$WORK/whale-$r.txt" >&2; exit 1; }
  echo "whale $r $WORK/whale-$r/log.csv $l" >>"$WORK/runs.txt"

  echo "round $r/$ROUNDS: PyTorch ($STEPS steps) ..." >&2
  l=$(load1)
  "$PYTHON" "$HERE/pytorch_train.py" --data "$WORK/data" --model "$WORK/model" --threads "$THREADS" \
    "${COMMON[@]}" --log "$WORK/torch-$r.csv" >"$WORK/torch-$r.txt" 2>&1 ||
    { cat "$WORK/torch-$r.txt" >&2; exit 1; }
  echo "torch $r $WORK/torch-$r.csv $l" >>"$WORK/runs.txt"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# Table --------------------------------------------------------------------------------------
"$PYTHON" - "$WORK" "$BATCH" "$SEQ_LEN" "$STEPS" "$THREADS" "$WHALE" <<'EOF'
import csv, json, os, statistics, sys
work, B, T, steps, threads, whale = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
cfg = json.load(open(os.path.join(work, "config.json")))
names = {"whale": "whale", "torch": "PyTorch"}

def summarize(path):
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == steps, "%s: %d steps logged, %d expected" % (path, len(rows), steps)
    # tokens/s over steps 1..N-1 (step 0 is warm-up): total tokens / total step time
    secs = sum(B * T / float(r["tokens_per_s"]) for r in rows[1:])
    return B * T * (len(rows) - 1) / secs, float(rows[-1]["loss"]), float(rows[-1]["ce_main"])

torch_info = ""
for line in open(os.path.join(work, "torch-1.txt")):
    if line.startswith("pytorch "):
        torch_info = line.strip()
        break
res = {"whale": [], "torch": []}
lines = []
for line in open(os.path.join(work, "runs.txt")):
    eng, r, path, load = line.split()
    tps, loss, ce = summarize(path)
    res[eng].append(tps)
    lines.append("| %s | %s | %.0f | %.4f | %.4f | %s |" % (r, names[eng], tps, loss, ce, load))
mw, mt = statistics.median(res["whale"]), statistics.median(res["torch"])
moe = sum(1 for i in range(cfg["num_hidden_layers"]) if i >= cfg.get("first_k_dense_replace", 0))
print("### Training speed: whale vs PyTorch eager (float32, %s threads)" % threads)
print()
print("Model: %s, hidden %d, %d layers (%d dense + %d MoE) + MTP, %d routed experts (top %d, %d groups keep %d) "
      "+ %d shared, MLA q_lora %s kv_lora %d, vocab %d. Batch %d x %d tokens, %d steps (step 0 not timed), "
      "AdamW + clip 1.0, loss = CE + 0.3 CE_mtp + 1e-4 BAL, bias update γ 0.001." % (
          cfg["model_type"], cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_hidden_layers"] - moe, moe,
          cfg["n_routed_experts"], cfg["num_experts_per_tok"], cfg["n_group"], cfg["topk_group"],
          cfg["n_shared_experts"], cfg["q_lora_rank"], cfg["kv_lora_rank"], cfg["vocab_size"], B, T, steps))
print("whale: %s; %s" % (whale, torch_info))
print()
whale_loss = open(os.path.join(work, "check_whale.txt")).read().strip().splitlines()[-1]
torch_check = open(os.path.join(work, "check_torch.txt")).read().strip().splitlines()
print("Check at the initial weights, one sequence of %d tokens: whale grad `%s`; PyTorch `%s`; %s; %s" % (
    T, whale_loss, torch_check[1], torch_check[2].split("; ")[-1], torch_check[3]))
print()
print("| run | engine | tokens/s | loss at last step | CE_main at last step | load avg (1 min) at start |")
print("|---|---|---:|---:|---:|---:|")
for l in lines:
    print(l)
print("| median | whale | %.0f | | | |" % mw)
print("| median | PyTorch | %.0f | | | |" % mt)
print()
print("**whale / PyTorch = %.2fx** (median tokens/s)" % (mw / mt))
busy = max(float(l.split()[3]) for l in open(os.path.join(work, "runs.txt")))
if busy > 1.5:
    print()
    print("Note: the 1-minute load average reached %.2f before a run: the machine was busy, "
          "the numbers are noisy." % busy)
EOF
