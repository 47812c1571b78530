# Shared by the fuzz scripts (sourced): builds the libFuzzer targets on the stable
# toolchain with the instrumentation cargo-fuzz 0.13 uses, without needing cargo-fuzz.
cd "$(dirname "${BASH_SOURCE[0]}")/../../fuzz"
# Some of cargo-fuzz's options are nightly-only (sanitizers, -Z flags); RUSTC_BOOTSTRAP
# lets the stable compiler accept them, so `cargo fuzz run T -O -s none` works by hand too.
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
FUZZ_TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
# cargo-fuzz's `build -O --sanitizer none` flags: SanitizerCoverage feeding libFuzzer's
# counters and comparison tracing, `cfg(fuzzing)`, one codegen unit. No sanitizer: the
# decoders are safe Rust, so AddressSanitizer would add build and run time without
# finding more; panics, aborts, timeouts and memory blow-ups are what libFuzzer reports.
# Same flags, target and profile as cargo-fuzz, so either one reuses the other's build.
fuzz_build() {
    RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 -Cllvm-args=-sanitizer-coverage-stack-depth \
-Ccodegen-units=1" \
        cargo build --target "$FUZZ_TRIPLE" --release \
        --config 'profile.release.debug="line-tables-only"' --bins
}
fuzz_bin() { echo "$CARGO_TARGET_DIR/$FUZZ_TRIPLE/release/$1"; }
fuzz_targets() { for f in fuzz_targets/*.rs; do basename "$f" .rs; done; }
# Corpus dirs: fuzz/corpus/T (grown by runs, ignored by git) then fuzz/seeds/T (committed).
corpus_dirs() { mkdir -p "corpus/$1" "seeds/$1"; echo "corpus/$1" "seeds/$1"; }
