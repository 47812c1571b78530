#!/usr/bin/env bash
# Time to first token and decode speed through `selene openai` versus `selene run`, same
# prompt and policy, alternating (docs/openai.md). Needs the openai package: the venv
# made by crates/cli/tests/openai_endpoint.rs (made here too if missing).
#   scripts/bench/openai.sh [--k K] [--max-tokens N] [--repeats R] [--threads T]
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${SELENE_REF_VENVS:-$HOME/.cache/selene-ref}/openai"
if ! "$venv/bin/python" -c "import openai" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "openai==3.51.0"
fi
cargo build --release --bin selene
"$venv/bin/python" scripts/bench/openai_vs_run.py \
    --selene "${CARGO_TARGET_DIR:-target}/release/selene" "$@"
