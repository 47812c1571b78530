//! Plaintext model commands: `tokenize`, `plain`, `perplexity`.

use std::path::PathBuf;
use std::time::Instant;

use super::args::{load, GenerationArgs, ModelArg};
use super::report::{Counters, RunReport};
use super::stream::stream_generation;
use anyhow::Context;
use clap::Args;
use selene_model::{perplexity as score, QuantLinear};

/// Arguments of `selene tokenize`.
#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// The text to tokenize (no BOS is added: the model's `add_bos_token` is false).
    pub text: String,
    #[command(flatten)]
    model: ModelArg,
}

/// Arguments of `selene plain`.
#[derive(Debug, Args)]
pub struct PlainArgs {
    #[command(flatten)]
    gen: GenerationArgs,
}

/// Arguments of `selene perplexity`.
#[derive(Debug, Args)]
pub struct PerplexityArgs {
    /// A UTF-8 text file.
    pub file: PathBuf,
    /// Tokens per scoring window (each window starts from an empty context).
    #[arg(long, default_value_t = 512)]
    pub window: usize,
    #[command(flatten)]
    model: ModelArg,
}

/// Runs `selene tokenize`.
pub fn tokenize(args: &TokenizeArgs) -> anyhow::Result<()> {
    let (_, t) = load(args.model.model.as_deref())?;
    let ids = t.encode(&args.text)?;
    let line: Vec<String> = ids.iter().map(u32::to_string).collect();
    println!("{}", line.join(" "));
    Ok(())
}

/// Runs `selene plain`: streams the generated text to stdout, statistics to stderr.
pub fn plain(args: &PlainArgs) -> anyhow::Result<()> {
    let (w, t) = load(args.gen.model.model.as_deref())?;
    let start = Counters::default().snapshot();
    let mut first_token = start;
    let (mut token_s, mut last) = (Vec::new(), Instant::now());
    let run = stream_generation(&args.gen, &w, &t, &mut QuantLinear::new(&w), &mut |i| {
        if i == 1 {
            first_token = Counters::default().snapshot();
        } else {
            token_s.push(last.elapsed().as_secs_f64());
        }
        last = Instant::now();
    })?;
    if let Some(path) = &args.gen.report {
        RunReport {
            prompt_tokens: run.prompt_tokens,
            ids: run.ids.clone(),
            prefill_s: run.prefill_s,
            token_s,
            passes: run.generated,
            start,
            first_token,
            end: Counters::default().snapshot(),
        }
        .write(path)?;
    }
    eprintln!(
        "[{} prompt tokens in {:.3} s, {} generated, {:.1} tok/s decode]",
        run.prompt_tokens,
        run.prefill_s,
        run.generated,
        run.decode_tok_s()
    );
    Ok(())
}

/// Runs `selene perplexity`.
pub fn perplexity(args: &PerplexityArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("could not read {}", args.file.display()))?;
    let (w, t) = load(args.model.model.as_deref())?;
    let ids = t.encode(&text)?;
    let start = Instant::now();
    let p = score(&w, &ids, args.window, &mut QuantLinear::new(&w))?;
    eprintln!(
        "[{} tokens scored in {:.2} s, window {}]",
        p.tokens_scored,
        start.elapsed().as_secs_f64(),
        args.window
    );
    println!(
        "perplexity {:.4} (mean NLL {:.4} nats/token over {} tokens)",
        p.perplexity, p.mean_nll, p.tokens_scored
    );
    Ok(())
}
