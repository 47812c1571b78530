//! Perplexity of the model over a token sequence, by teacher forcing.

use crate::error::{Error, Result};
use crate::forward::{forward, Logits};
use crate::kv_cache::KvCache;
use crate::linear::Linear;
use crate::weights::Weights;

/// The result of scoring a text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perplexity {
    /// Tokens whose probability was scored (each window's first token is not).
    pub tokens_scored: usize,
    /// Mean negative log-likelihood per scored token, in nats.
    pub mean_nll: f64,
    /// `exp(mean_nll)`.
    pub perplexity: f64,
}

/// Natural log of the softmax probability of `target` under `logits`, in f64.
pub fn log_prob(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&v| f64::from(v - max).exp()).sum();
    f64::from(logits[target as usize] - max) - sum.ln()
}

/// Scores `ids` in consecutive windows of at most `window` tokens (at most the
/// model's context length), each run from an
/// empty cache: within a window every token after the first is predicted from the
/// ones before it.
///
/// # Errors
/// [`Error::Empty`] when fewer than two tokens can be scored, and forward errors.
pub fn perplexity(
    w: &Weights,
    ids: &[u32],
    window: usize,
    linear: &mut dyn Linear,
) -> Result<Perplexity> {
    let window = window.clamp(2, w.config().context_length.max(2));
    let vocab = w.config().vocab_size;
    let mut nll = 0.0f64;
    let mut scored = 0usize;
    let mut cache = KvCache::new(w.config(), window);
    for chunk in ids.chunks(window).filter(|c| c.len() >= 2) {
        cache.clear();
        let logits = forward(w, chunk, &mut cache, linear, Logits::All)?;
        for (row, &next) in logits.chunks_exact(vocab).zip(&chunk[1..]) {
            nll -= log_prob(row, next);
            scored += 1;
        }
    }
    if scored == 0 {
        return Err(Error::Empty {
            what: "text to score (needs at least two tokens)",
        });
    }
    let mean_nll = nll / scored as f64;
    Ok(Perplexity {
        tokens_scored: scored,
        mean_nll,
        perplexity: mean_nll.exp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_prob_matches_f64_softmax() {
        let l = [1.0f32, 2.0, 3.0];
        let z: f64 = [1.0f64, 2.0, 3.0].iter().map(|v| v.exp()).sum();
        assert!((log_prob(&l, 2) - (3.0f64.exp() / z).ln()).abs() < 1e-12);
    }
}
