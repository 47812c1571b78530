#!/usr/bin/env bash
# Regenerates the seed corpora from real encodings (fuzz/examples/seeds.rs): every seed
# goes to fuzz/corpus/<target>/ (git-ignored), and those up to 16 KB also to the
# committed fuzz/seeds/<target>/. Keys and ciphertexts are fresh, so the bytes change on
# every run.
set -euo pipefail
source "$(dirname "$0")/common.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# A plain (uninstrumented) build: the example links no libFuzzer.
env -u RUSTC_BOOTSTRAP cargo run --release --example seeds -- "$tmp"
for d in "$tmp"/*/; do
    t=$(basename "$d")
    mkdir -p "corpus/$t" "seeds/$t"
    cp "$d"* "corpus/$t/"
    find "$d" -type f -size -16k -exec cp {} "seeds/$t/" \;
done
du -sh seeds
