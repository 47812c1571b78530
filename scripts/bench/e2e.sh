#!/usr/bin/env bash
# Private generation end to end, in process (issue 7): strict and selective K = 1, 4 on the
# committed 32-token prompt with 16 greedy tokens, a 512-token public prefix, and perplexity
# under encryption over testdata/quality.txt. Prints the table and writes JSON. Takes about
# ten minutes on 2 cores; run on a quiet machine (timings are wall-clock).
#   scripts/bench/e2e.sh [OUTDIR] [THREADS]   (default bench-out/, 2 threads)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-bench-out}
threads=${2:-2}
mkdir -p "$out"
cargo build --release --bin selene
"${CARGO_TARGET_DIR:-target}/release/selene" bench e2e --threads "$threads" \
    --json "$out/selene_e2e_t$threads.json" | tee "$out/e2e_t$threads.txt"
