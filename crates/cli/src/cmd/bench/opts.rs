//! The options every benchmark takes.

use std::path::PathBuf;

use clap::Args;

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
