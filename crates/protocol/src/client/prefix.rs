//! The client's token loop after a public prefix: the prefix's keys and values installed
//! in the client's cache, then every private token through the client's [`Linear`].

use std::ops::ControlFlow;

use selene_model::{
    forward, generate_drafted, generate_with, CachedModel, DraftStats, KvCache, Linear, Logits,
    PromptLookup, Sampler, Weights,
};

use crate::codec::prefix_kv::PrefixKv;
use crate::error::Result;

/// The strict-mode token loop after a public prefix: a fresh cache for
/// `prefix + prompt + max_tokens` positions, the prefix rows installed, then
/// [`generate_with`] over `linear` (which computes every layer, e.g. a
/// [`crate::StrictLinear`]). Without a prefix this is [`selene_model::generate`].
///
/// # Errors
/// An empty prompt, a prefix that does not cover every layer, the context length, and
/// whatever `linear` or `on_token` fail with.
#[allow(
    clippy::too_many_arguments,
    reason = "the token loop's inputs, each needed"
)]
pub fn generate_after_prefix(
    w: &Weights,
    prefix: Option<&PrefixKv>,
    prompt: &[u32],
    max_tokens: usize,
    stop: &[u32],
    sampler: &mut Sampler,
    linear: &mut dyn Linear,
    on_token: &mut dyn FnMut(u32) -> selene_model::Result<ControlFlow<()>>,
) -> Result<Vec<u32>> {
    let (ids, _) = generate_after_prefix_drafted(
        w, prefix, prompt, max_tokens, stop, sampler, linear, None, on_token,
    )?;
    Ok(ids)
}

/// [`generate_after_prefix`] with prompt-lookup drafts when `draft` is given: each pass
/// runs the last token and `k` drafted or padding rows ([`selene_model::draft`]), the
/// cache holding `k` positions more; the server, which keeps no per-position state in
/// strict mode, sees `k + 1` rows per pass whatever was accepted.
///
/// # Errors
/// As [`generate_after_prefix`].
#[allow(
    clippy::too_many_arguments,
    reason = "the token loop's inputs and the draft, each needed"
)]
pub fn generate_after_prefix_drafted(
    w: &Weights,
    prefix: Option<&PrefixKv>,
    prompt: &[u32],
    max_tokens: usize,
    stop: &[u32],
    sampler: &mut Sampler,
    linear: &mut dyn Linear,
    draft: Option<&PromptLookup>,
    on_token: &mut dyn FnMut(u32) -> selene_model::Result<ControlFlow<()>>,
) -> Result<(Vec<u32>, DraftStats)> {
    let c = w.config();
    let p = prefix.map_or(0, PrefixKv::positions);
    let extra = draft.map_or(0, PromptLookup::k);
    let capacity = p
        .saturating_add(prompt.len())
        .saturating_add(max_tokens)
        .saturating_add(extra);
    if capacity > c.context_length {
        return Err(selene_model::Error::ContextFull {
            len: p + prompt.len(),
            adding: max_tokens + extra,
            capacity: c.context_length,
        }
        .into());
    }
    let mut cache = KvCache::new(c, capacity);
    if let Some(kv) = prefix {
        kv.install(&mut cache, c)?;
    }
    if let Some(lookup) = draft {
        let mut target = CachedModel {
            w,
            cache: &mut cache,
            linear,
        };
        return Ok(generate_drafted(
            prompt,
            max_tokens,
            stop,
            sampler,
            lookup,
            c.vocab_size,
            &mut target,
            on_token,
        )?);
    }
    let ids = generate_with(
        prompt,
        max_tokens,
        stop,
        sampler,
        &mut |ids| forward(w, ids, &mut cache, linear, Logits::Last),
        on_token,
    )?;
    Ok((ids, DraftStats::default()))
}
