//! `selene bench ckks`.

use super::bench::BenchOpts;

/// Runs the CKKS per-op benchmark.
pub fn run(_opts: &BenchOpts) -> anyhow::Result<()> {
    anyhow::bail!("`selene bench ckks` is not built yet (issue 4)")
}
