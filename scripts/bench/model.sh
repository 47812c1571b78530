#!/usr/bin/env bash
# Selene's plaintext model speed beside llama.cpp on the same gguf, per model and thread
# count, one after the other in one run, then a table with ratios. Run on a quiet machine.
#   scripts/bench/model.sh [OUTDIR]       (default bench-out/)
#   MODELS="smollm2 qwen2.5-coder-0.5b qwen2.5-coder-1.5b" THREADS="1 2" (the defaults)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-bench-out}
models=${MODELS:-smollm2 qwen2.5-coder-0.5b qwen2.5-coder-1.5b}
threads=${THREADS:-1 2}
mkdir -p "$out"
scripts/model_fixtures/setup_venvs.sh llamacpp >&2
cargo build --release --bin selene
selene="${CARGO_TARGET_DIR:-target}/release/selene"
store="${SELENE_HOME:-$HOME/.cache/selene}"
for m in $models; do
  # Fetches the model on first use; the store's file name comes from the table of
  # known models (`selene tokenize` prints nothing else to stderr once it is stored).
  "$selene" tokenize --model "$m" "hi" >/dev/null
  case "$m" in
    smollm2) gguf="$store/SmolLM2-135M-Instruct.Q4_1.gguf" ;;
    qwen2.5-coder-0.5b) gguf="$store/Qwen2.5-Coder-0.5B-Instruct-AWQ.gguf" ;;
    qwen2.5-coder-1.5b) gguf="$store/Qwen2.5-Coder-1.5B-Instruct.gguf" ;;
    *) echo "unknown model $m" >&2; exit 2 ;;
  esac
  for t in $threads; do
    "$selene" bench model --model "$m" --threads "$t" --json "$out/selene_model_${m}_t$t.json"
    scripts/model_fixtures/bench_llamacpp.py --threads "$t" --reps 5 --gguf "$gguf" \
      --json "$out/llamacpp_${m}_t$t.json"
  done
done
python3 - "$out" "$models" "$threads" <<'PY' | tee "$out/model_compare.md"
import json, sys
out, models, threads = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
print("| model | threads | Selene prefill tok/s | llama.cpp prefill tok/s | ratio | Selene decode tok/s | llama.cpp decode tok/s | ratio | Selene load s | Selene RSS MB |")
print("|---|---|---|---|---|---|---|---|---|---|")
for m in models:
    for t in threads:
        s = json.load(open(f"{out}/selene_model_{m}_t{t}.json"))
        l = json.load(open(f"{out}/llamacpp_{m}_t{t}.json"))
        print(f"| {m} | {t} | {s['prefill_tok_s']:.1f} | {l['prefill_tok_s']:.1f} | {s['prefill_tok_s']/l['prefill_tok_s']:.2f}x "
              f"| {s['decode_tok_s']:.1f} | {l['decode_tok_s']:.1f} | {s['decode_tok_s']/l['decode_tok_s']:.2f}x "
              f"| {s['load_s']:.2f} | {s['rss_mb']:.0f} |")
PY
