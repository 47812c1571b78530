#!/usr/bin/env bash
# Runs every fuzz target briefly (SMOKE_SECONDS each, default 3: about 30 s for the ten
# targets, plus the build). Any crash, panic, timeout or out-of-memory fails the script;
# libFuzzer leaves the input in fuzz/artifacts/<target>/.
set -euo pipefail
source "$(dirname "$0")/common.sh"
seconds="${SMOKE_SECONDS:-3}"
cargo fuzz build "${FUZZ_FLAGS[@]}"
for t in $(fuzz_targets); do
    read -r -a dirs <<<"$(corpus_dirs "$t")"
    echo "fuzz smoke: $t (${seconds} s)"
    cargo fuzz run "${FUZZ_FLAGS[@]}" "$t" "${dirs[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        2>&1 | grep -E "^(stat::number_of_executed_units|Done|==|SUMMARY|thread)" || true
    # grep's status is not libFuzzer's: check the run's own exit status.
    [[ "${PIPESTATUS[0]}" == 0 ]] || { echo "fuzz smoke: $t FAILED"; exit 1; }
done
