//! The token loop: prefill a prompt, then decode one token at a time.

use std::ops::ControlFlow;

use crate::error::{Error, Result};
use crate::forward::{forward, Logits};
use crate::kv_cache::KvCache;
use crate::linear::Linear;
use crate::sampling::Sampler;
use crate::weights::Weights;

/// Generates up to `max_tokens` tokens after `prompt`, stopping after any id in `stop`
/// (which is returned too), calling `on_token` with each new id as it comes; `on_token`
/// ends generation early by returning `ControlFlow::Break(())`.
///
/// # Errors
/// [`Error::Empty`] for an empty prompt, [`Error::ContextFull`] when the cache is too
/// small, forward errors, and whatever `on_token` returns.
pub fn generate(
    w: &Weights,
    prompt: &[u32],
    max_tokens: usize,
    stop: &[u32],
    sampler: &mut Sampler,
    linear: &mut dyn Linear,
    on_token: &mut dyn FnMut(u32) -> Result<ControlFlow<()>>,
) -> Result<Vec<u32>> {
    let capacity = prompt.len().saturating_add(max_tokens);
    if capacity > w.config().context_length {
        return Err(Error::ContextFull {
            len: prompt.len(),
            adding: max_tokens,
            capacity: w.config().context_length,
        });
    }
    let mut cache = KvCache::new(w.config(), capacity);
    generate_with(
        prompt,
        max_tokens,
        stop,
        sampler,
        &mut |ids| forward(w, ids, &mut cache, linear, Logits::Last),
        on_token,
    )
}

/// Runs new positions through the model and returns the last position's logits.
pub type NextLogits<'a, E> = dyn FnMut(&[u32]) -> Result<Vec<f32>, E> + 'a;

/// Receives each new token; `Break` stops the generation.
pub type OnToken<'a, E> = dyn FnMut(u32) -> Result<ControlFlow<()>, E> + 'a;

/// The token loop on its own: `next_logits(ids)` runs the given new positions through
/// whatever computes the model (plaintext, strict or selective mode) and returns the last
/// position's logits; sampling, stopping and the callback are as in [`generate`].
///
/// # Errors
/// [`Error::Empty`] for an empty prompt, and whatever `next_logits` or `on_token`
/// return.
pub fn generate_with<E: From<Error>>(
    prompt: &[u32],
    max_tokens: usize,
    stop: &[u32],
    sampler: &mut Sampler,
    next_logits: &mut NextLogits<'_, E>,
    on_token: &mut OnToken<'_, E>,
) -> Result<Vec<u32>, E> {
    if prompt.is_empty() {
        return Err(Error::Empty { what: "prompt" }.into());
    }
    let mut out = Vec::with_capacity(max_tokens);
    if max_tokens == 0 {
        return Ok(out);
    }
    let mut logits = next_logits(prompt)?;
    loop {
        let next = sampler.sample(&logits)?;
        out.push(next);
        let flow = on_token(next)?;
        if flow.is_break() || out.len() >= max_tokens || stop.contains(&next) {
            return Ok(out);
        }
        logits = next_logits(&[next])?;
    }
}
