//! `selene bench model`.

use super::bench::BenchOpts;

/// Runs the plaintext model benchmark.
pub fn run(_opts: &BenchOpts) -> anyhow::Result<()> {
    anyhow::bail!("`selene bench model` is not built yet (issue 5)")
}
