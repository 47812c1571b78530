# Shared by the fuzz scripts (sourced): the stable toolchain with nightly features
# switched on, cargo-fuzz from crates.io if missing, a target dir of its own.
cd "$(dirname "${BASH_SOURCE[0]}")/../../fuzz"
# libFuzzer's instrumentation flags (-Cpasses=sancov-module, -Zsanitizer) are nightly
# options; RUSTC_BOOTSTRAP lets the stable compiler accept them.
export RUSTC_BOOTSTRAP=1
# The fuzz build uses other flags than the workspace: keep it in its own target dir.
# FUZZ_TARGET_DIR wins; else "$CARGO_TARGET_DIR-fuzz" when that is set; else fuzz/target.
if [[ -n "${FUZZ_TARGET_DIR:-}" ]]; then
    export CARGO_TARGET_DIR="$FUZZ_TARGET_DIR"
elif [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
    export CARGO_TARGET_DIR="$CARGO_TARGET_DIR-fuzz"
else
    export CARGO_TARGET_DIR="$PWD/target"
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi
# No sanitizer: the decoders are safe Rust (no `unsafe` on their paths), so AddressSanitizer
# would add build and run time without finding more; panics, aborts, timeouts and memory
# blow-ups (-rss_limit_mb) are what libFuzzer reports.
FUZZ_FLAGS=(-O --sanitizer none)
fuzz_targets() { cargo fuzz list; }
# Corpus dirs: fuzz/corpus/T (grown by runs, ignored by git) then fuzz/seeds/T (committed).
corpus_dirs() { mkdir -p "corpus/$1" "seeds/$1"; echo "corpus/$1" "seeds/$1"; }
