#!/usr/bin/env bash
# Private generation over emulated links (issue 18): `selene serve` and `selene client`
# as two processes over TLS through the user-space link emulator. Three runs:
#   1. packed (coeff12pack, plan per link) and selective K = 4 on lan, wan and home,
#      testdata/prompt32.txt, 8 greedy tokens;
#   2. strict (coeff12, unpacked) on wan, same prompt;
#   3. packed on wan with prompt-lookup drafts (K = 4) on the second prompt of the
#      extraction workload (testdata/extraction.txt), 24 tokens.
# Each prints its table and writes JSON (run 1 also an SVG plot) to OUTDIR. About half
# an hour on 2 cores; run on a quiet machine (timings are wall-clock).
#   scripts/bench/net.sh [OUTDIR] [THREADS]   (default bench-out/, 2 threads)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-bench-out}
threads=${2:-2}
mkdir -p "$out"
cargo build --release --bin selene
selene="${CARGO_TARGET_DIR:-target}/release/selene"
"$selene" bench net --threads "$threads" --mode packed --mode k4 \
    --link lan --link wan --link home --tokens 8 \
    --json "$out/net_links.json" --plot "$out/net_links.svg" | tee "$out/net_links.txt"
"$selene" bench net --threads "$threads" --mode strict --link wan --tokens 8 \
    --json "$out/net_strict_wan.json" | tee "$out/net_strict_wan.txt"
"$selene" bench net --threads "$threads" --mode packed --link wan --workload 2 \
    --draft prompt-lookup:4 --tokens 24 \
    --json "$out/net_drafts_wan.json" | tee "$out/net_drafts_wan.txt"
