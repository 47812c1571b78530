#!/usr/bin/env bash
# Selene's encrypted SmolLM2 projections beside OpenFHE and SEAL's diagonal method
# (../shared/anchors/bench_matvec.py --smollm2, N = 2^13), one after the other in one run,
# then the one-layer totals with ratios. Run on a quiet machine (2-thread cells need it).
#   scripts/bench/linalg.sh [OUTDIR]      (default bench-out/)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-bench-out}
mkdir -p "$out"
anchors=${SELENE_ANCHORS:-../shared/anchors}
py=$(bash "$anchors/setup.sh")
cargo build --release --bin selene
for t in 1 2; do
  "${CARGO_TARGET_DIR:-target}/release/selene" bench linalg --threads "$t" --json "$out/selene_linalg_t$t.json"
done
abs_out=$(cd "$out" && pwd)
(cd "$anchors" && "$py" bench_matvec.py --smollm2 --logn 13 --threads 1 2 \
    --json "$abs_out/anchors_matvec.json")
python3 - "$out" <<'PY' | tee "$out/linalg_compare.md"
import json, sys
from collections import defaultdict
out = sys.argv[1]
anch = json.load(open(f"{out}/anchors_matvec.json"))
layer = defaultdict(float)
for r in anch["rows"]:
    layer[(r["library"], r["threads"])] += r["median_ms"]
print("| threads | Selene method | n | server ms / layer | ms / token | OpenFHE 1-layer ms | SEAL 1-layer ms | speed-up vs faster anchor | KB / token | x over f32 |")
print("|---|---|---|---|---|---|---|---|---|---|")
for t in (1, 2):
    s = json.load(open(f"{out}/selene_linalg_t{t}.json"))
    o = layer.get(("openfhe", t)); se = layer.get(("seal", 1))
    best = min(x for x in (o, se) if x)
    for row in s["layers"]:
        print(f"| {t} | {row['method']} | {row['n']} | {row['layer_server_ms']:.1f} | {row['server_ms_per_token']:.2f} "
              f"| {o:.0f} | {se:.0f} | {best / row['server_ms_per_token']:.0f}x | {row['bytes_per_token']/1e3:.0f} | {row['expansion_over_f32']:.0f} |")
PY
