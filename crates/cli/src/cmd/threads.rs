//! The `--threads` option shared by every command that runs rayon work.

use anyhow::Context;

/// Sizes rayon's global pool for a server, whose rayon work comes from its connection
/// threads; `None` keeps rayon's default (one thread per core).
pub fn init(threads: Option<usize>) -> anyhow::Result<()> {
    build(threads, false)
}

/// Sizes rayon's global pool for a command that computes on its main thread (a client,
/// an in-process run, a benchmark), making that thread one of the `t` workers: its
/// parallel loops then split in place and the other workers steal halves, where a
/// thread outside the pool hands every loop to the pool and sleeps until it is done (a
/// wake-up and a context switch per loop, which the thin client's many small loops per
/// token paid). A server must not: its main thread blocks and would hold a worker idle.
pub fn init_on_main(threads: Option<usize>) -> anyhow::Result<()> {
    build(threads, true)
}

fn build(threads: Option<usize>, on_main: bool) -> anyhow::Result<()> {
    if let Some(t) = threads {
        anyhow::ensure!(t >= 1, "--threads must be at least 1, got {t}");
        let builder = rayon::ThreadPoolBuilder::new().num_threads(t);
        let builder = if on_main {
            builder.use_current_thread()
        } else {
            builder
        };
        builder
            .build_global()
            .context("could not size the rayon thread pool")?;
    }
    Ok(())
}
