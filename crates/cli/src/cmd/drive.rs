//! The client side `run` (embedded transport) and `client` (TLS) share: one private
//! generation with its progress, streamed text and cost report.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use indicatif::ProgressBar;
use selene_ckks::Parameters;
use selene_model::{Tokenizer, Weights};
use selene_protocol::{model_fingerprint, Policy, Terms, Transport};

use super::args::GenerationArgs;
use super::generation::{open, policy_notice};
use super::public_context;
use super::report::{Counted, RunReport};
use super::stream::draft_summary;

/// The generation driver shared by `run` (embedded transport) and `client` (TLS): opens
/// a session under `policy` over `transport` (spot-checking `verify_rate` of the
/// products), has the server run `public_context` in
/// plaintext if one is given, generates, streams the text to stdout and reports timing
/// and traffic on stderr.
#[allow(
    clippy::too_many_arguments,
    reason = "one generation's inputs, each needed"
)]
pub fn drive<T: Transport>(
    gen: &GenerationArgs,
    w: &Weights,
    t: &Tokenizer,
    params: &Arc<Parameters>,
    policy: Policy,
    public_context: Option<&std::path::Path>,
    verify_rate: f64,
    transport: T,
) -> anyhow::Result<()> {
    let layers = w.config().n_layers;
    let terms = Terms::of(&policy);
    let k = terms.k;
    // Say what the chosen policy leaks before anything else, while the user can still
    // stop before the prompt leaves the machine.
    if let Some(notice) = policy_notice(terms, layers, super::generation::audit_table(w))? {
        eprintln!("{notice}");
    }
    let (transport, counters) = Counted::new(transport);
    let start = counters.snapshot();
    let mut session = open(w, &model_fingerprint(w), params, policy, transport)?
        .with_draft(gen.draft)?
        .with_verify_rate(verify_rate)?;
    if verify_rate > 0.0 {
        eprintln!(
            "[client: spot checks: each encrypted product recomputed in plaintext with \
             probability {verify_rate}]"
        );
    }
    let prefix = public_context
        .map(|path| {
            public_context::prepare(path, &gen.prompt, gen.chat, w, t, k, &mut |ids| {
                Ok(session.session_mut().public_prefix(ids, w.config())?)
            })
        })
        .transpose()?;

    // A spinner while the prompt runs (no text yet); then the text streams on stdout
    // and the spinner is gone, so the two never share a line.
    let status = ProgressBar::new_spinner()
        .with_message(format!("prefill: the prompt through {k} encrypted layers"));
    status.enable_steady_tick(std::time::Duration::from_millis(120));
    let mut last = Instant::now();
    let mut token_s = Vec::new();
    let mut first_token = start;
    let mut on_token = |i: usize| {
        if i == 1 {
            first_token = counters.snapshot();
            status.finish_and_clear();
        }
        token_s.push(last.elapsed().as_secs_f64());
        last = Instant::now();
    };
    let mut session = Some(session);
    let mut done = None;
    let prefix_kv = prefix.as_ref().map(|pc| &pc.client);
    let gen_run = public_context::stream(
        gen,
        prefix.as_ref(),
        w,
        t,
        &mut on_token,
        &mut |ids, max, sampler, cb| {
            let session = session.take().context("the token loop runs once")?;
            let (out, stats) = session.generate(prefix_kv, ids, max, t.eos_ids(), sampler, cb)?;
            done = Some(stats);
            Ok(out)
        },
    )?;
    let stats = done.context("the token loop did not run")?;
    let end = counters.snapshot();
    status.finish_and_clear();
    if let Some(path) = &gen.report {
        RunReport {
            prompt_tokens: gen_run.prompt_tokens,
            ids: gen_run.ids.clone(),
            prefill_s: gen_run.prefill_s,
            token_s: token_s.iter().skip(1).copied().collect(),
            passes: if gen.draft.is_some() {
                1 + stats.draft.passes
            } else {
                gen_run.generated
            },
            start,
            first_token,
            end,
        }
        .write(path)?;
    }
    let s = stats.traffic;
    let (server_s, releases, sigma) = (stats.server_s, stats.releases, terms.sigma);
    let tokens = gen_run.prompt_tokens + gen_run.generated.saturating_sub(1);
    let decode: Vec<String> = token_s.iter().skip(1).map(|t| format!("{t:.2}")).collect();
    if gen.draft.is_some() {
        eprintln!("{}", draft_summary(&stats.draft, gen_run.generated));
    }
    if releases > 0 {
        eprintln!(
            "[released {releases} hidden-state rows after layer {k}, flooded with sigma \
             {sigma}; {} of the {} generated tokens fed back took layer 0's q|k|v from the \
             server's answer (its greedy token), one round trip fewer each]",
            stats.ahead,
            gen_run.generated.saturating_sub(1)
        );
    }
    if verify_rate > 0.0 {
        eprintln!(
            "[spot checks: {} of {} encrypted products recomputed in plaintext, all agreed]",
            s.verified, s.products
        );
    }
    eprintln!(
        "[{} prompt tokens: prefill {:.2} s; {} generated, {:.2} s/token decode \
         (per token: {}); encrypted-layer server compute {:.2} s, client HE {:.2} s; \
         {:.2} MB up, {:.2} MB down ({:.2} MB per token processed); {} round trips]",
        gen_run.prompt_tokens,
        gen_run.prefill_s,
        gen_run.generated,
        1.0 / gen_run.decode_tok_s().max(1e-9),
        decode.join(" "),
        server_s,
        s.client_time.as_secs_f64(),
        s.bytes_up as f64 / 1e6,
        s.bytes_down as f64 / 1e6,
        (s.bytes_up + s.bytes_down) as f64 / 1e6 / tokens.max(1) as f64,
        s.round_trips
    );
    Ok(())
}
