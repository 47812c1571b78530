#!/usr/bin/env bash
# Long fuzz runs, one target at a time at the lowest priority (the machine is shared):
#   scripts/fuzz/long.sh [SECONDS_PER_TARGET] [TARGET...]
# Default: every target, 3600 s each; FUZZ_RUNS=N also stops a target after N
# executions (the issue asks for 10^7 or 4 hours). Appends "target executions seconds
# result" lines to fuzz/long-runs.txt (git-ignored) and prints them.
set -euo pipefail
source "$(dirname "$0")/common.sh"
seconds="${1:-3600}"
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || read -r -a targets <<<"$(fuzz_targets | tr '\n' ' ')"
fuzz_build
for t in "${targets[@]}"; do
    read -r -a dirs <<<"$(corpus_dirs "$t")"
    mkdir -p "artifacts/$t"
    log="long-$t.log"
    status=ok
    runs=()
    [[ -z "${FUZZ_RUNS:-}" ]] || runs=(-runs="$FUZZ_RUNS")
    nice -n 19 "$(fuzz_bin "$t")" "${dirs[@]}" -artifact_prefix="artifacts/$t/" \
        -max_total_time="$seconds" "${runs[@]}" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || status="FAILED (see fuzz/$log, fuzz/artifacts/$t)"
    execs=$(grep -oE "stat::number_of_executed_units: *[0-9]+" "$log" | grep -oE "[0-9]+$" || echo "?")
    secs=$(grep -oE "Done [0-9]+ runs in [0-9]+ second" "$log" | grep -oE "in [0-9]+" | grep -oE "[0-9]+" || echo "?")
    echo "$t $execs $secs $status" | tee -a long-runs.txt
done
