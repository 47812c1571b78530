//! The client's token loop after a public prefix: the prefix's keys and values installed
//! in the client's cache, then every private token through the client's [`Linear`].

use std::ops::ControlFlow;

use selene_model::{forward, generate_with, KvCache, Linear, Logits, Sampler, Weights};

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
    let c = w.config();
    let p = prefix.map_or(0, PrefixKv::positions);
    let capacity = p.saturating_add(prompt.len()).saturating_add(max_tokens);
    if capacity > c.context_length {
        return Err(selene_model::Error::ContextFull {
            len: p + prompt.len(),
            adding: max_tokens,
            capacity: c.context_length,
        }
        .into());
    }
    let mut cache = KvCache::new(c, capacity);
    if let Some(kv) = prefix {
        kv.install(&mut cache, c)?;
    }
    Ok(generate_with(
        prompt,
        max_tokens,
        stop,
        sampler,
        &mut |ids| forward(w, ids, &mut cache, linear, Logits::Last),
        on_token,
    )?)
}
