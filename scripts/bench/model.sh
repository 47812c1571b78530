#!/usr/bin/env bash
# Selene's plaintext model speed beside llama.cpp on the same gguf, 1 and 2 threads, one
# after the other in one run, then a table with ratios. Run on a quiet machine.
#   scripts/bench/model.sh [OUTDIR]       (default bench-out/)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-bench-out}
mkdir -p "$out"
scripts/model_fixtures/setup_venvs.sh llamacpp >&2
cargo build --release --bin selene
for t in 1 2; do
  "${CARGO_TARGET_DIR:-target}/release/selene" bench model --threads "$t" --json "$out/selene_model_t$t.json"
  scripts/model_fixtures/bench_llamacpp.py --threads "$t" --reps 5 --json "$out/llamacpp_t$t.json"
done
python3 - "$out" <<'PY' | tee "$out/model_compare.md"
import json, sys
out = sys.argv[1]
print("| threads | Selene prefill tok/s | llama.cpp prefill tok/s | ratio | Selene decode tok/s | llama.cpp decode tok/s | ratio | Selene load s | Selene RSS MB |")
print("|---|---|---|---|---|---|---|---|---|")
for t in (1, 2):
    s = json.load(open(f"{out}/selene_model_t{t}.json"))
    l = json.load(open(f"{out}/llamacpp_t{t}.json"))
    print(f"| {t} | {s['prefill_tok_s']:.1f} | {l['prefill_tok_s']:.1f} | {s['prefill_tok_s']/l['prefill_tok_s']:.2f}x "
          f"| {s['decode_tok_s']:.1f} | {l['decode_tok_s']:.1f} | {s['decode_tok_s']/l['decode_tok_s']:.2f}x "
          f"| {s['load_s']:.2f} | {s['rss_mb']:.0f} |")
PY
