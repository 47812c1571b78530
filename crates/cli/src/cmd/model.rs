//! Plaintext model commands: `tokenize`, `plain`, `perplexity`.

use std::path::PathBuf;

use clap::Args;

/// Arguments of `selene tokenize`.
#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// The text to tokenize (no BOS is added: the model's `add_bos_token` is false).
    pub text: String,
}

/// Arguments of `selene plain`.
#[derive(Debug, Args)]
pub struct PlainArgs {
    /// The prompt to continue.
    pub prompt: String,
}

/// Arguments of `selene perplexity`.
#[derive(Debug, Args)]
pub struct PerplexityArgs {
    /// A UTF-8 text file.
    pub file: PathBuf,
}

/// Runs `selene tokenize`.
pub fn tokenize(_args: &TokenizeArgs) -> anyhow::Result<()> {
    anyhow::bail!("`selene tokenize` is not built yet (issue 5)")
}

/// Runs `selene plain`.
pub fn plain(_args: &PlainArgs) -> anyhow::Result<()> {
    anyhow::bail!("`selene plain` is not built yet (issue 5)")
}

/// Runs `selene perplexity`.
pub fn perplexity(_args: &PerplexityArgs) -> anyhow::Result<()> {
    anyhow::bail!("`selene perplexity` is not built yet (issue 5)")
}
