//! `selene bench <what>`: benchmarks that print a table and optionally write JSON.

use clap::{Args, Subcommand};

pub use opts::BenchOpts;

mod ckks;
mod e2e;
mod emulator;
mod linalg;
mod lm_head;
mod meter;
mod model;
mod net;
mod opts;

/// Arguments of `selene bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Debug, Subcommand)]
enum BenchWhat {
    /// Per-op CKKS timings at the three anchor parameter sets (compare with ../shared/anchors).
    Ckks(ckks::BenchCkksOpts),
    /// Encrypted matrix products for SmolLM2's four projections, per method, n = 1 and 64.
    Linalg(BenchOpts),
    /// Plaintext model speed: prefill and decode tokens/s, load time, resident memory.
    Model(BenchOpts),
    /// Private generation end to end in process: strict and selective K = 1, 4 (32-token
    /// prompt, 16 tokens), a 512-token public prefix, perplexity under encryption.
    E2e(e2e::E2eOpts),
    /// Private generation as it ships: `serve` and `client` over TLS through an emulated
    /// link (delay and rate per direction) per profile and mode; s/token, prefill, round
    /// trips, bytes and CPU per token, tokens checked against `plain`.
    Net(net::NetOpts),
}

/// Runs the chosen benchmark.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    match &args.what {
        BenchWhat::Ckks(opts) => {
            super::threads::init_on_main(opts.common.threads)?;
            ckks::run(opts)
        }
        BenchWhat::Linalg(opts) => {
            super::threads::init_on_main(opts.threads)?;
            linalg::run(opts)
        }
        BenchWhat::Model(opts) => {
            super::threads::init_on_main(opts.threads)?;
            model::run(opts)
        }
        BenchWhat::E2e(opts) => {
            super::threads::init_on_main(opts.common.threads)?;
            e2e::run(opts)
        }
        // The server and the client are processes of their own with their own threads.
        BenchWhat::Net(opts) => net::run(opts),
    }
}
