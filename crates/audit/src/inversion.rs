//! Exact sequential inversion (the SipIt-style attack): position by position, with the
//! prefix already recovered, evaluate candidate tokens through layers 0..K on top of the
//! prefix's KV cache and keep the one whose state matches the released one.
//!
//! Causality makes this well posed: the state at position t depends only on tokens
//! 0..=t, so once the prefix is right, the true token reproduces the released state up
//! to flooding noise and f32 rounding, and a wrong token does not.
//!
//! Cost control: candidates come in the probe's order, in growing batches (8, 32, 128,
//! ...) that go through each weight matrix as one GEMM (`candidates.rs`), and the search
//! stops at the first batch holding an acceptable match, so a good ranking means one
//! small batch per token. The ranking interleaves the probe's with the model's own
//! next-token prediction from the released states (`prior.rs`). After `budget`
//! candidates it falls back to the closest seen; the prefix is then suspect, and later
//! positions get one batch each (an exact match is no longer possible).

use std::collections::HashSet;
use std::time::Instant;

use selene_model::{KvCache, Weights};

use crate::candidates::{run_candidates, CandidateKv, CandidateStates};
use crate::dense::DenseLinear;
use crate::prior::{interleave, lm_rankings};
use crate::probe::{EmbeddingTable, Probe};
use crate::view::AttackerView;
use crate::{Error, Result};

/// Knobs of the search.
#[derive(Debug, Clone, PartialEq)]
pub struct InversionConfig {
    /// Most candidates tried per position before falling back to the closest seen.
    pub budget: usize,
    /// Size of the first batch; each next batch is four times larger.
    pub first_batch: usize,
    /// Relative f32 mismatch allowed between the model's kernels and the attacker's
    /// (`|h_obs - h_cand| <= float_tol * |h_obs|` with no noise; measured ~1e-6).
    pub float_tol: f64,
    /// Standard deviations above the chi-square mean accepted for flooded states.
    pub chi_z: f64,
    /// Interleave the model's own next-token ranking (computed from the released
    /// states, see `prior.rs`) with the probe's.
    pub lm_prior: bool,
    /// After each batch without a match, re-rank with the probe corrected at the
    /// closest candidate (see `invert`).
    pub refine: bool,
}

impl Default for InversionConfig {
    fn default() -> Self {
        Self {
            budget: 512,
            first_batch: 8,
            float_tol: 1e-4,
            chi_z: 6.0,
            lm_prior: true,
            refine: true,
        }
    }
}

impl InversionConfig {
    /// Largest squared distance accepted as a match for a released state of squared
    /// norm `obs_sq` in dimension `d` flooded with `sigma`.
    ///
    /// With the true token the difference is the noise: |n|^2 / sigma^2 is chi-square
    /// with d degrees of freedom, mean d and standard deviation sqrt(2d); accept up to
    /// `d + chi_z sqrt(2d)` of it (the normal approximation is good for d = 576), plus
    /// the f32 rounding term.
    pub fn accept_sq(&self, sigma: f64, d: usize, obs_sq: f64) -> f64 {
        let d = d as f64;
        sigma * sigma * (d + self.chi_z * (2.0 * d).sqrt())
            + self.float_tol * self.float_tol * obs_sq
    }
}

/// What the inversion recovered for one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Inversion {
    /// Recovered token ids.
    pub tokens: Vec<u32>,
    /// The probe's top-1 guess per position (from the released state alone).
    pub probe_guess: Vec<u32>,
    /// Candidates evaluated per position.
    pub tried: Vec<usize>,
    /// Whether the kept candidate passed the acceptance bound (else: closest seen).
    pub matched: Vec<bool>,
    /// Wall-clock seconds for the whole prompt (ranking included).
    pub seconds: f64,
}

fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum()
}

/// Inverts one released view.
///
/// # Errors
/// [`Error::Zero`] for a zero budget or first batch; [`Error::LayerOutOfRange`] if
/// `dense` holds fewer than K layers; model errors.
pub fn invert(
    w: &Weights,
    dense: &mut DenseLinear,
    probe: &Probe,
    emb: &EmbeddingTable,
    view: &AttackerView,
    cfg: &InversionConfig,
) -> Result<Inversion> {
    if cfg.budget == 0 {
        return Err(Error::Zero {
            what: "inversion budget",
        });
    }
    if cfg.first_batch == 0 {
        return Err(Error::Zero {
            what: "first candidate batch",
        });
    }
    let start = Instant::now();
    let n = view.n_tokens;
    let probe_rank = probe.rank(&view.hidden, emb, cfg.budget)?;
    let rankings: Vec<Vec<u32>> = if cfg.lm_prior {
        let lm = lm_rankings(w, view, cfg.budget)?;
        probe_rank
            .iter()
            .zip(&lm)
            .map(|(p, l)| interleave(p, l, cfg.budget))
            .collect()
    } else {
        probe_rank.clone()
    };
    // After a position without an acceptable match the prefix is almost surely wrong, so
    // no later state can match exactly: spend only the first batch on each later position.
    let mut prefix_suspect = false;
    let mut cache = KvCache::new(w.config(), n.max(1));
    let mut states = CandidateStates::default();
    let mut out = Inversion {
        tokens: Vec::with_capacity(n),
        probe_guess: Vec::with_capacity(n),
        tried: Vec::with_capacity(n),
        matched: Vec::with_capacity(n),
        seconds: 0.0,
    };
    for (t, (ranking, pr)) in rankings.iter().zip(&probe_rank).enumerate() {
        let obs = view.state(t);
        let obs_sq: f64 = obs.iter().map(|&v| f64::from(v).powi(2)).sum();
        let bound = cfg.accept_sq(view.flood_sigma, view.d_model, obs_sq);
        out.probe_guess.push(pr.first().copied().unwrap_or(0));
        // Closest candidate so far: (squared distance, token, state, keys/values).
        let mut best: Option<(f64, u32, Vec<f32>, CandidateKv)> = None;
        let mut tried: HashSet<u32> = HashSet::new();
        let mut queue: Vec<u32> = ranking.clone();
        let (mut size, mut matched) = (cfg.first_batch, false);
        let limit = if prefix_suspect {
            cfg.first_batch
        } else {
            cfg.budget
        };
        let local = probe.for_position(t);
        let pred_obs = if cfg.refine {
            local.predict(obs)?
        } else {
            Vec::new()
        };
        while tried.len() < limit && !matched {
            let want = size.min(limit - tried.len());
            let batch: Vec<u32> = queue
                .iter()
                .copied()
                .filter(|t| !tried.contains(t))
                .take(want)
                .collect();
            if batch.is_empty() {
                break;
            }
            tried.extend(&batch);
            run_candidates(
                w,
                dense,
                &cache,
                view.k,
                &batch,
                &mut states,
                &mut |_, _| {},
            )?;
            for (i, &tok) in batch.iter().enumerate() {
                let dist = sq_dist(obs, states.hidden(i));
                if best.as_ref().is_none_or(|b| dist < b.0) {
                    best = Some((dist, tok, states.hidden(i).to_vec(), states.kv_of(i)?));
                }
            }
            matched = best.as_ref().is_some_and(|b| b.0 <= bound);
            size *= 4;
            if let (false, true, Some((_, tok, h, _))) = (matched, cfg.refine, &best) {
                // Correct the probe with its known error at the closest candidate:
                // e_true ~ e_best + P(h_obs) - P(h_best) cancels the context-dependent
                // bias the probe shares between the two nearby states.
                let pred_best = local.predict(h)?;
                let refined: Vec<f32> = emb
                    .row(*tok)
                    .iter()
                    .zip(pred_obs.iter().zip(&pred_best))
                    .map(|(e, (o, b))| e + o - b)
                    .collect();
                let r = local
                    .rank_predicted(&refined, emb, cfg.budget)?
                    .pop()
                    .unwrap_or_default();
                let rest: Vec<u32> = queue
                    .iter()
                    .copied()
                    .filter(|t| !tried.contains(t))
                    .collect();
                queue = interleave(&r, &rest, 2 * cfg.budget);
            }
        }
        let lo = tried.len();
        let Some((_, tok, _, kv)) = best else {
            return Err(Error::Zero {
                what: "candidates ranked for a position",
            });
        };
        kv.append_to(&mut cache)?;
        out.tokens.push(tok);
        out.tried.push(lo);
        out.matched.push(matched);
        prefix_suspect |= !matched;
    }
    out.seconds = start.elapsed().as_secs_f64();
    Ok(out)
}
