//! The `--threads` option shared by every command that runs rayon work.

use anyhow::Context;

/// Sizes rayon's global pool; `None` keeps rayon's default (one thread per core).
pub fn init(threads: Option<usize>) -> anyhow::Result<()> {
    if let Some(t) = threads {
        anyhow::ensure!(t >= 1, "--threads must be at least 1, got {t}");
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .context("could not size the rayon thread pool")?;
    }
    Ok(())
}
