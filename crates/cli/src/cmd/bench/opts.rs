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
    /// The link plans are made for and times are projected onto (`e2e`: the packed
    /// strict row's tiling and the per-token time on the link): lan, wan, home or
    /// RTT_MS,UP_MBIT,DOWN_MBIT.
    #[arg(long, default_value = "wan", value_parser = crate::cmd::args::link_parser)]
    pub link: selene_linalg::Link,
    /// The model: smollm2 (default), qwen2.5-coder-0.5b, qwen2.5-coder-1.5b or a GGUF
    /// path.
    #[arg(long, value_name = "NAME|PATH")]
    pub model: Option<String>,
}
