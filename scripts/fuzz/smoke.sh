#!/usr/bin/env bash
# Runs every fuzz target briefly (SMOKE_SECONDS each, default 3: about a minute for the
# seventeen targets, plus the build). Any crash, panic, timeout or out-of-memory fails
# the script; libFuzzer leaves the input in fuzz/artifacts/<target>/.
set -euo pipefail
source "$(dirname "$0")/common.sh"
seconds="${SMOKE_SECONDS:-3}"
fuzz_build
for t in $(fuzz_targets); do
    read -r -a dirs <<<"$(corpus_dirs "$t")"
    mkdir -p "artifacts/$t"
    echo "fuzz smoke: $t (${seconds} s)"
    status=0
    "$(fuzz_bin "$t")" "${dirs[@]}" -artifact_prefix="artifacts/$t/" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"artifacts/$t/smoke.log" 2>&1 || status=$?
    grep -E "^(stat::number_of_executed_units|Done)" "artifacts/$t/smoke.log" || true
    if [[ "$status" != 0 ]]; then
        tail -30 "artifacts/$t/smoke.log"
        echo "fuzz smoke: $t FAILED"
        exit 1
    fi
done
