//! `selene`: private LLM inference with selective homomorphic encryption.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Private inference for a pretrained LLM: the server computes on CKKS ciphertexts,
/// the client keeps the key and the text.
#[derive(Debug, Parser)]
#[command(name = "selene", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Private generation: every layer's weight products on CKKS ciphertexts, computed by
    /// an embedded server; the key, the text and the LM head stay on the client.
    Run(cmd::run::RunArgs),
    /// Serve private generation over TLS: sessions from `selene client`, authenticated by
    /// a bearer token; the server sees only what each session's policy allows.
    Serve(cmd::serve::ServeArgs),
    /// Private generation against a `selene serve` server (same flags as `run`).
    Client(cmd::client::ClientArgs),
    /// An OpenAI-compatible chat endpoint (GET /v1/models, POST /v1/chat/completions)
    /// whose completions run privately, as `run` does; loopback only unless told otherwise.
    ///
    /// A request's `model` field selects the model: --model's (also when a request names
    /// none) or, with the embedded server, any other model the store holds (listed by
    /// GET /v1/models, loaded on its first request and kept); with --server, only that
    /// server's model. Any other name gets a 404 `model_not_found`.
    Openai(cmd::openai::OpenaiArgs),
    /// Print the token ids of TEXT on one line, space-separated.
    Tokenize(cmd::model::TokenizeArgs),
    /// Generate text in plaintext (no encryption): the reference every encrypted run must match.
    Plain(cmd::model::PlainArgs),
    /// Perplexity of the model over a text file, in plaintext.
    Perplexity(cmd::model::PerplexityArgs),
    /// Benchmarks that print a table and optionally write JSON.
    Bench(cmd::bench::BenchArgs),
    /// Leakage audit: invert the hidden states selective mode releases, per K and noise.
    Audit(cmd::audit::AuditArgs),
    /// Key management: keystore (PKCS#11 token or passphrase root), rotation, signed
    /// release policy, release log.
    Keys(cmd::keys::KeysArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SELENE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => cmd::run::run(&args),
        Command::Serve(args) => cmd::serve::serve(&args),
        Command::Client(args) => cmd::client::client(&args),
        Command::Openai(args) => cmd::openai::run(&args),
        Command::Tokenize(args) => cmd::model::tokenize(&args),
        Command::Plain(args) => cmd::model::plain(&args),
        Command::Perplexity(args) => cmd::model::perplexity(&args),
        Command::Bench(args) => cmd::bench::run(&args),
        Command::Audit(args) => cmd::audit::run(&args),
        Command::Keys(args) => cmd::keys::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
