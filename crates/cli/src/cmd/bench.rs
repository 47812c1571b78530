//! `selene bench <what>`: benchmarks that print a table and optionally write JSON.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Arguments of `selene bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Debug, Subcommand)]
enum BenchWhat {
    /// Per-op CKKS timings at the three anchor parameter sets (compare with ../shared/anchors).
    Ckks(super::bench_ckks::BenchCkksOpts),
    /// Encrypted matrix products for SmolLM2's four projections, per method, n = 1 and 64.
    Linalg(BenchOpts),
    /// Plaintext model speed: prefill and decode tokens/s, load time, resident memory.
    Model(BenchOpts),
    /// Private generation end to end in process: strict and selective K = 1, 4 (32-token
    /// prompt, 16 tokens), a 512-token public prefix, perplexity under encryption.
    E2e(BenchOpts),
}

/// Options every benchmark takes.
#[derive(Debug, Args)]
pub struct BenchOpts {
    /// Worker threads (rayon); default: one per core.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Runs the chosen benchmark.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    match &args.what {
        BenchWhat::Ckks(opts) => {
            super::threads::init(opts.common.threads)?;
            super::bench_ckks::run(opts)
        }
        BenchWhat::Linalg(opts) => {
            super::threads::init(opts.threads)?;
            super::bench_linalg::run(opts)
        }
        BenchWhat::Model(opts) => {
            super::threads::init(opts.threads)?;
            super::bench_model::run(opts)
        }
        BenchWhat::E2e(opts) => {
            super::threads::init(opts.threads)?;
            super::bench_e2e::run(opts)
        }
    }
}
