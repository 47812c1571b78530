//! Streaming generated text to stdout as the tokens arrive, for every generating
//! subcommand (plaintext or private): the chat template, the stream decoder, the timing.

use std::io::Write;
use std::ops::ControlFlow;
use std::time::Instant;

use selene_model::{
    generate, generate_drafted, CachedModel, KvCache, Linear, Message, Role, Sampler,
    SamplingParams, StreamDecoder, Tokenizer, Weights,
};

use super::args::GenerationArgs;

/// Timing of one streamed generation.
#[derive(Clone, Debug)]
pub struct GenerationRun {
    /// The generated ids.
    pub ids: Vec<u32>,
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
        let Some(lookup) = &args.draft else {
            return Ok(generate(w, ids, max, t.eos_ids(), sampler, linear, cb)?);
        };
        let c = w.config();
        let max = max.min(c.context_length.saturating_sub(ids.len() + lookup.k()));
        let mut cache = KvCache::new(c, ids.len() + max + lookup.k());
        let mut target = CachedModel {
            w,
            cache: &mut cache,
            linear: &mut *linear,
        };
        let (out, stats) = generate_drafted(
            ids,
            max,
            t.eos_ids(),
            sampler,
            lookup,
            c.vocab_size,
            &mut target,
            cb,
        )?;
        eprintln!("{}", draft_summary(&stats, out.len()));
        Ok(out)
    })
}

/// One line on what drafting achieved.
pub fn draft_summary(s: &selene_model::DraftStats, generated: usize) -> String {
    format!(
        "[drafts: {generated} tokens in {} passes after the prompt's ({:.2} tokens per pass); \
         {} of {} drafted tokens accepted, {} padding rows]",
        s.passes,
        generated.saturating_sub(1) as f64 / s.passes.max(1) as f64,
        s.accepted,
        s.drafted,
        s.padding
    )
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
        t.chat_template()
            .render(&[Message::new(Role::User, args.prompt.as_str())], true)
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
    let generated = out.len();
    Ok(GenerationRun {
        ids: out,
        prompt_tokens: ids.len(),
        generated,
        prefill_s: first.unwrap_or(total_s),
        total_s,
    })
}
