#!/usr/bin/env bash
# whale vs llama.cpp decode and prefill speed on the same weights, side by side: for each format
# the whale model and its GGUF export (`whale convert --to gguf`) are benchmarked ROUNDS times,
# alternating `whale bench --json` and llama_speed (speed.cpp, on llama.h), the two engines
# swapping who goes first every round, so both see the same minutes of this machine's drifting
# memory bandwidth. whale bench measures that bandwidth in each of its runs; the llama.cpp run
# next to it is divided by the same figure. Prints a markdown table and saves the JSON lines.
#
#   bash bench/llama.cpp/speed.sh [--force]
#
# Environment:
#   FORMATS        "q8 bf16" (default), or any of q8 q4 bf16: q8 = whale's q8 model
#                  ($MODELS/v2-lite-8l-q8) against its q8_0 export; q4 = whale's q4 model
#                  against its q4_1 export (the same groups exactly; both keep the head q8);
#                  bf16 = the bf16 model ($MODELS/v2-lite-8l) against its bf16 export
#   ROUNDS         alternations per format (default 2)
#   PROMPTS        prefill prompt lengths (default 128,512)
#   DECODE_TOKENS  greedy decode steps after a DECODE_PROMPT-token prompt (defaults 64, 128)
#   THREADS        threads for both engines (default 2)
#   MODELS         the whale models (default /work/models; made as bench/inference/run.sh does)
#   GGUF_DIR       the GGUF exports, made when missing (default $MODELS/gguf; never the repo)
#   WHALE          the whale binary (default build/whale); LLAMA_DIR as in run.sh
#   RESULTS        where the JSON lines and the table go (default bench/llama.cpp/results)
# A short check: ROUNDS=1 PROMPTS=128 DECODE_TOKENS=16 FORMATS=q8 bash bench/llama.cpp/speed.sh
#
# Refuses to start while the 1-minute load average is 1.5 or more (--force overrides): on the
# shared 2-core machine a busy neighbour halves the numbers. The load average before every run
# is recorded with it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
WHALE=${WHALE:-$repo/build/whale}
MODELS=${MODELS:-/work/models}
GGUF_DIR=${GGUF_DIR:-$MODELS/gguf}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-2}
FORMATS=${FORMATS:-q8 bf16}
PROMPTS=${PROMPTS:-128,512}
DECODE_TOKENS=${DECODE_TOKENS:-64}
DECODE_PROMPT=${DECODE_PROMPT:-128}
RESULTS=${RESULTS:-$here/results}
force=0
[ "${1:-}" = "--force" ] && force=1

loadavg() { cut -d' ' -f1 /proc/loadavg; }
load=$(loadavg)
if [ "$force" = 0 ] && awk -v l="$load" 'BEGIN { exit !(l >= 1.5) }'; then
  echo "machine busy (load average $load >= 1.5): not benchmarking; rerun later or --force" >&2
  exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$here/setup.sh"
build_llama_program speed llama_speed
mkdir -p "$RESULTS" "$GGUF_DIR"
stamp=$(date +%Y%m%d-%H%M)
out="$RESULTS/speed-$stamp.jsonl"
: > "$out"

prepare_models

# Runs a command with its stdout into FILE and writes FILE.meta: wall seconds, the command's own
# CPU seconds, and how many cores everything else on the machine kept busy meanwhile (from
# /proc/stat: the neighbours' load, which the load average mixes with ours).
measured() {  # FILE command...
  python3 - "$@" <<'PY'
import json, os, resource, subprocess, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
def busy():  # CPU seconds of the whole machine, all but idle and iowait
    f = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")
b0, t0 = busy(), time.monotonic()
with open(out, "w") as f:
    rc = subprocess.run(cmd, stdout=f, stdin=subprocess.DEVNULL).returncode
wall, b1 = time.monotonic() - t0, busy()
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
own = ru.ru_utime + ru.ru_stime
json.dump({"wall_s": wall, "own_cpu_s": own, "other_cpu_cores": max(0.0, (b1 - b0 - own) / wall)},
          open(out + ".meta", "w"))
sys.exit(rc)
PY
}

# Appends one JSON line: the run's own JSON with format, engine, round, load average, time and
# the neighbours' CPU use during the run.
record() {  # format engine round load json-file
  python3 - "$@" >> "$out" <<'PY'
import json, sys, time
fmt, engine, rnd, load, path = sys.argv[1:]
j = json.load(open(path))
meta = json.load(open(path + ".meta"))
print(json.dumps({"format": fmt, "engine": engine, "round": int(rnd), "load_avg": float(load),
                  "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **meta,
                  **{k: v for k, v in j.items() if k != "engine"}}))
PY
}

for fmt in $FORMATS; do
  format_pair "$fmt"  # dir, gguf
  python3 "$here/gguf_bytes.py" "$gguf" > "$work/gguf-$fmt.json"
  for round in $(seq 1 "$ROUNDS"); do
    order="whale llama"
    [ $((round % 2)) = 0 ] && order="llama whale"
    for engine in $order; do
      load=$(loadavg)
      echo "== $fmt round $round: $engine (load average $load)" >&2
      if [ "$engine" = whale ]; then
        measured "$work/run.json" "$WHALE" bench --model "$dir" --threads "$THREADS" --json \
          --prompt-lengths "$PROMPTS" --decode-prompt "$DECODE_PROMPT" \
          --decode-tokens "$DECODE_TOKENS"
      else
        measured "$work/run.json" "$work/llama_speed" "$gguf" --threads "$THREADS" \
          --prompt-lengths "$PROMPTS" --decode-prompt "$DECODE_PROMPT" \
          --decode-tokens "$DECODE_TOKENS" 2> "$work/llama.log" ||
          { echo "llama.cpp failed:" >&2; tail -20 "$work/llama.log" >&2; exit 1; }
        # Attach what the GGUF's decode step reads (counted as whale counts it).
        python3 - "$work/run.json" "$work/gguf-$fmt.json" <<'PY'
import json, sys
j, g = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
j["gguf_bytes_per_token"] = g["bytes_per_token"]
j["gguf_head_type"] = g["head_type"]
json.dump(j, open(sys.argv[1], "w"))
PY
      fi
      record "$fmt" "$engine" "$round" "$load" "$work/run.json"
    done
  done
done

python3 - "$out" "$PROMPTS" <<'PY' | tee "${out%.jsonl}.md"
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
p = str(max(int(x) for x in sys.argv[2].split(",")))
print(f"| format | round | whale decode tok/s | llama.cpp decode tok/s | whale / llama.cpp "
      f"| bandwidth GB/s (same minute) | GB read/token (whale; GGUF) | whale % of ceiling "
      f"| llama.cpp % of ceiling | prefill {p} tok/s whale | prefill {p} tok/s llama.cpp "
      f"| whale / llama.cpp | neighbours' cores busy (whale; llama.cpp) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
formats = []
for r in runs:
    if r["format"] not in formats:
        formats.append(r["format"])
for fmt in formats:
    rows = []
    rounds = sorted({r["round"] for r in runs if r["format"] == fmt})
    def run(n, engine):
        return next(r for r in runs
                    if r["format"] == fmt and r["round"] == n and r["engine"] == engine)
    for n in rounds:
        w, l = run(n, "whale"), run(n, "llama")
        bw = w["bandwidth_gbps"] * 1e9
        row = dict(wd=w["decode_tok_s"], ld=l["decode_tok_s"], bw=w["bandwidth_gbps"],
                   bpt=w["bytes_per_token"], gbpt=l["gguf_bytes_per_token"],
                   wf=w["bytes_per_token"] * w["decode_tok_s"] / bw,
                   lf=w["bytes_per_token"] * l["decode_tok_s"] / bw,
                   wp=w["prefill_tok_s"][p], lp=l["prefill_tok_s"][p],
                   load=f"{w['other_cpu_cores']:.2f}; {l['other_cpu_cores']:.2f}")
        rows.append(row)
        print(f"| {fmt} | {n} | {row['wd']:.2f} | {row['ld']:.2f} | {row['wd']/row['ld']:.2f} "
              f"| {row['bw']:.1f} | {row['bpt']/1e9:.3f}; {row['gbpt']/1e9:.3f} "
              f"| {100*row['wf']:.0f}% | {100*row['lf']:.0f}% | {row['wp']:.1f} | {row['lp']:.1f} "
              f"| {row['wp']/row['lp']:.2f} | {row['load']} |")
    if len(rows) > 1:
        m = {k: statistics.mean(r[k] for r in rows) for k in rows[0] if k != "load"}
        print(f"| **{fmt}** | mean | **{m['wd']:.2f}** | **{m['ld']:.2f}** "
              f"| **{m['wd']/m['ld']:.2f}** | {m['bw']:.1f} "
              f"| {m['bpt']/1e9:.3f}; {m['gbpt']/1e9:.3f} "
              f"| {100*m['wf']:.0f}% | {100*m['lf']:.0f}% | {m['wp']:.1f} | {m['lp']:.1f} "
              f"| {m['wp']/m['lp']:.2f} | |")
l = next(r for r in runs if r["engine"] == "llama")
w = next(r for r in runs if r["engine"] == "whale")
print(f"\n{w['threads']} threads (whale SIMD {w['simd']}); llama.cpp: mmap ({l['load_mode']}), "
      f"f16 KV cache, flash attention {l['flash_attn']}, repacked weights: {l['repack']}; "
      f"decode {w['decode_tokens']} tokens after a {w['ttft_prompt_tokens']}-token prompt.")
PY
echo "saved $out and ${out%.jsonl}.md" >&2
