//! The language-model prior: what the model itself predicts as the next token, computed
//! from the released states the server already holds.
//!
//! In selective mode the server runs layers K..30 and the LM head on the released states
//! anyway, so the next-token distribution at position t-1 is part of its view. Natural
//! text is predictable, so this ranks the true token at position t near the top even
//! where the probe, reading a deep layer, is unsure. The exact inversion interleaves
//! the two rankings; correctness still rests on the exact state match.

use selene_model::{forward_layers, head, KvCache, QuantLinear, Weights};

use crate::view::AttackerView;
use crate::{Error, Result};

/// Indices of the `top` largest values of `scores`, best first.
pub fn top_indices(scores: &[f32], top: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..scores.len() as u32).collect();
    let by_score = |a: &u32, b: &u32| scores[*b as usize].total_cmp(&scores[*a as usize]);
    let top = top.min(idx.len());
    if top > 0 && top < idx.len() {
        idx.select_nth_unstable_by(top - 1, by_score);
        idx.truncate(top);
    }
    idx.sort_unstable_by(by_score);
    idx
}

/// For each position t of the view, the model's `top` next-token guesses for token t
/// made from positions `< t` (empty for t = 0), by running the released states through
/// layers K..n_layers and the LM head.
///
/// # Errors
/// [`Error::LayerOutOfRange`] for K above the depth; model errors.
pub fn lm_rankings(w: &Weights, view: &AttackerView, top: usize) -> Result<Vec<Vec<u32>>> {
    let c = w.config();
    if view.k > c.n_layers {
        return Err(Error::LayerOutOfRange {
            k: view.k,
            n_layers: c.n_layers,
        });
    }
    let n = view.n_tokens;
    let mut x = view.hidden.clone();
    let mut cache = KvCache::new(c, n.max(1));
    let mut linear = QuantLinear::new(w);
    forward_layers(
        w,
        view.k..c.n_layers,
        &mut x,
        &mut cache,
        &mut linear,
        &mut |_, _| {},
    )?;
    // Logits of positions 0..n-1 predict tokens 1..n.
    let rows = n.saturating_sub(1);
    let mut logits = vec![0.0f32; rows * c.vocab_size];
    if rows > 0 {
        head(w, &x[..rows * c.d_model], &mut linear, &mut logits)?;
    }
    let mut out = vec![Vec::new()];
    out.extend(
        logits
            .chunks_exact(c.vocab_size)
            .map(|l| top_indices(l, top)),
    );
    out.truncate(n);
    Ok(out)
}

/// Merges two rankings alternately (a first), dropping repeats, up to `len` tokens.
pub fn interleave(a: &[u32], b: &[u32], len: usize) -> Vec<u32> {
    let mut seen = std::collections::HashSet::with_capacity(2 * len);
    let mut out = Vec::with_capacity(len);
    let (mut i, mut j) = (0, 0);
    while out.len() < len && (i < a.len() || j < b.len()) {
        for (list, at) in [(a, &mut i), (b, &mut j)] {
            if let Some(&t) = list.get(*at) {
                *at += 1;
                if out.len() < len && seen.insert(t) {
                    out.push(t);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleave_alternates_and_dedups() {
        assert_eq!(interleave(&[1, 2, 3], &[2, 4, 5], 5), [1, 2, 4, 3, 5]);
        assert_eq!(interleave(&[1], &[], 4), [1]);
        assert_eq!(interleave(&[1, 2, 3], &[4, 5, 6], 3), [1, 4, 2]);
    }

    #[test]
    fn top_indices_sorts_best_first() {
        assert_eq!(top_indices(&[0.1, 0.9, -1.0, 0.5], 2), [1, 3]);
        assert_eq!(top_indices(&[0.1, 0.9], 5), [1, 0]);
    }
}
