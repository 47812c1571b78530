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
    if prompt.is_empty() {
        return Err(Error::Empty { what: "prompt" });
    }
    let capacity = prompt.len().saturating_add(max_tokens);
    if capacity > w.config().context_length {
        return Err(Error::ContextFull {
            len: prompt.len(),
            adding: max_tokens,
            capacity: w.config().context_length,
        });
    }
    let mut out = Vec::with_capacity(max_tokens);
    if max_tokens == 0 {
        return Ok(out);
    }
    let mut cache = KvCache::new(w.config(), capacity);
    let cache = &mut cache;
    let mut logits = forward(w, prompt, cache, linear, Logits::Last)?;
    loop {
        let next = sampler.sample(&logits)?;
        out.push(next);
        let flow = on_token(next)?;
        if flow.is_break() || out.len() >= max_tokens || stop.contains(&next) {
            return Ok(out);
        }
        logits = forward(w, &[next], cache, linear, Logits::Last)?;
    }
}
