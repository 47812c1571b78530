#!/usr/bin/env bash
# Selene's CKKS per-op bench and the OpenFHE/SEAL anchors, one after the other in one run,
# then a side-by-side table with ratios. Run on a quiet machine.
#   scripts/bench/ckks.sh [OUTDIR]        (default bench-out/)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-bench-out}
mkdir -p "$out"
anchors=${SELENE_ANCHORS:-../shared/anchors}
py=$(bash "$anchors/setup.sh")
cargo build --release --bin selene
"${CARGO_TARGET_DIR:-target}/release/selene" bench ckks --threads 1 --json "$out/selene_ckks_t1.json"
abs_out=$(cd "$out" && pwd)
(cd "$anchors" && "$py" bench_ckks.py --logn 13 14 15 --libs openfhe seal --openfhe-threads 1 \
    --json "$abs_out/anchors_ckks.json")
python3 scripts/bench/compare_ckks.py "$out/selene_ckks_t1.json" "$out/anchors_ckks.json" \
    | tee "$out/ckks_compare.md"
