//! Quality under encryption: the logits of a text computed under encryption against the
//! plaintext logits of the same positions (perplexity, largest logit error, argmax
//! agreement and, where CKKS noise flips a near-tie, the plaintext logit gap).

use selene_model::perplexity::log_prob;

use crate::error::{Error, Result};

/// A position whose argmax differs between the two runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Flip {
    /// Position in the text.
    pub position: usize,
    /// The reference (plaintext) argmax.
    pub reference: u32,
    /// The encrypted run's argmax.
    pub encrypted: u32,
    /// Reference logit of `reference` minus reference logit of `encrypted` (>= 0): how
    /// near the tie was.
    pub gap: f32,
}

/// How close an encrypted run's logits are to the plaintext ones over one text.
#[derive(Clone, Debug, PartialEq)]
pub struct LogitComparison {
    /// Positions compared.
    pub positions: usize,
    /// Tokens scored for perplexity (positions with a next token).
    pub scored: usize,
    /// Perplexity of the text under the reference logits.
    pub ppl_reference: f64,
    /// Perplexity under the encrypted run's logits.
    pub ppl_encrypted: f64,
    /// Largest |logit difference| over every position and vocabulary entry.
    pub max_logit_err: f32,
    /// Positions whose argmax differs.
    pub flips: Vec<Flip>,
}

impl LogitComparison {
    /// `|ppl_encrypted / ppl_reference - 1|`.
    pub fn ppl_rel_err(&self) -> f64 {
        (self.ppl_encrypted / self.ppl_reference - 1.0).abs()
    }
}

fn argmax(row: &[f32]) -> u32 {
    // Ties go to the lower id, like the greedy sampler; a row has < 2^32 entries.
    let mut best = 0usize;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Compares `encrypted` with `reference` logits (`n x vocab`, row `i` predicting
/// `text[i + 1]`); `text` is the scored token sequence (`n` tokens).
///
/// # Errors
/// [`selene_model::Error::Shape`] when the sizes
/// disagree, [`selene_model::Error::Empty`] when fewer than two tokens are given.
pub fn compare_logits(
    reference: &[f32],
    encrypted: &[f32],
    vocab: usize,
    text: &[u32],
) -> Result<LogitComparison> {
    let n = text.len();
    if n < 2 {
        return Err(Error::Model(selene_model::Error::Empty {
            what: "text to score (needs at least two tokens)",
        }));
    }
    for got in [reference.len(), encrypted.len()] {
        if got != n * vocab {
            return Err(Error::Model(selene_model::Error::Shape {
                what: "logits (n x vocab)",
                found: got,
                expected: n * vocab,
            }));
        }
    }
    if let Some(&t) = text.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::Model(selene_model::Error::TokenOutOfRange {
            id: t,
            vocab,
        }));
    }
    let (mut nll_r, mut nll_e) = (0.0f64, 0.0f64);
    let mut max_err = 0.0f32;
    let mut flips = Vec::new();
    let rows = reference
        .chunks_exact(vocab)
        .zip(encrypted.chunks_exact(vocab));
    for (i, (r, e)) in rows.enumerate() {
        for (a, b) in r.iter().zip(e) {
            max_err = max_err.max((a - b).abs());
        }
        let (ar, ae) = (argmax(r), argmax(e));
        if ar != ae {
            flips.push(Flip {
                position: i,
                reference: ar,
                encrypted: ae,
                gap: r[ar as usize] - r[ae as usize],
            });
        }
        if let Some(&next) = text.get(i + 1) {
            nll_r -= log_prob(r, next);
            nll_e -= log_prob(e, next);
        }
    }
    let scored = n - 1;
    Ok(LogitComparison {
        positions: n,
        scored,
        ppl_reference: (nll_r / scored as f64).exp(),
        ppl_encrypted: (nll_e / scored as f64).exp(),
        max_logit_err: max_err,
        flips,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_logits_agree_and_a_flip_reports_its_gap() {
        let r = [1.0f32, 3.0, 2.0, 0.5, 0.2, 0.1];
        let c = compare_logits(&r, &r, 3, &[0, 1]).unwrap();
        assert_eq!((c.max_logit_err, c.flips.len(), c.scored), (0.0, 0, 1));
        // Perplexity of one token: 1 / p(text[1] | row 0).
        let z: f64 = [1.0f64, 3.0, 2.0].iter().map(|v| v.exp()).sum();
        assert!((c.ppl_reference - z / 3.0f64.exp()).abs() < 1e-9);
        let e = [1.0f32, 2.5, 2.75, 0.5, 0.2, 0.1];
        let c = compare_logits(&r, &e, 3, &[0, 1]).unwrap();
        assert_eq!(
            c.flips,
            vec![Flip {
                position: 0,
                reference: 1,
                encrypted: 2,
                gap: 1.0
            }]
        );
        assert!((c.max_logit_err - 0.75).abs() < 1e-6);
        assert!(c.ppl_rel_err() > 0.0);
        assert!(compare_logits(&r, &e[..3], 3, &[0, 1]).is_err());
        assert!(compare_logits(&r, &e, 3, &[0, 7]).is_err());
        assert!(compare_logits(&r[..3], &e[..3], 3, &[0]).is_err());
    }
}
