//! The attacker's exact view in selective mode.
//!
//! With the first K layers encrypted, the client releases the residual stream after
//! layer K for every position, flooded with Gaussian noise, and the server runs the rest
//! (ARCHITECTURE.md, selective mode). The server thus sees: the weights, the policy (K),
//! the flooded states `n x d_model`, and the token count `n`. K = 0 releases the input
//! embeddings. The clean states come from the model's own forward pass
//! ([`selene_model::QuantLinear`]); the attacker's candidate evaluation uses its own
//! kernels, so matching must tolerate f32 summation-order differences.

use rand::Rng;
use selene_model::{forward_layers, KvCache, QuantLinear, Weights};

use crate::noise::flood;
use crate::{Error, Result};

/// Standard deviation (in value units of the residual stream) of the protocol's default
/// release flooding: the same fixed number as `selene_protocol::policy::DEFAULT_FLOOD_SIGMA`
/// (a policy's `flood_sigma = "auto"`; the cli's tests check that the two agree, as this
/// crate does not depend on the protocol). The audit measures larger sigmas beside it.
///
/// The ring-level flooding that protects the CKKS key (Li, Micciancio, Schultz, Sorrell,
/// CRYPTO 2022) is separate: the protocol sizes it from the parameters and the release
/// cap, and it is always on.
pub const DEFAULT_FLOOD_SIGMA: f64 = 1e-2;

/// What the server sees of one prompt in selective mode with K encrypted layers.
#[derive(Debug, Clone)]
pub struct AttackerView {
    /// Layers run before the release (0 = the input embeddings).
    pub k: usize,
    /// Standard deviation of the flooding noise on every released value.
    pub flood_sigma: f64,
    /// Number of tokens (always leaked).
    pub n_tokens: usize,
    /// Flooded residual stream after layer K, `n_tokens x d_model`, row-major.
    pub hidden: Vec<f32>,
    /// Width of one state.
    pub d_model: usize,
}

impl AttackerView {
    /// Floods clean states (`n x d_model`) with N(0, sigma^2) noise on every value.
    ///
    /// # Errors
    /// [`Error::InvalidSigma`]; [`Error::Shape`] if `clean` is not whole rows.
    pub fn from_clean<R: Rng + ?Sized>(
        clean: &[f32],
        d_model: usize,
        k: usize,
        flood_sigma: f64,
        rng: &mut R,
    ) -> Result<Self> {
        let n_tokens = clean.len() / d_model.max(1);
        if clean.len() != n_tokens * d_model {
            return Err(Error::Shape {
                what: "released states (n x d_model)",
                expected: n_tokens * d_model,
                got: clean.len(),
            });
        }
        let mut hidden = clean.to_vec();
        flood(&mut hidden, flood_sigma, rng)?;
        Ok(Self {
            k,
            flood_sigma,
            n_tokens,
            hidden,
            d_model,
        })
    }

    /// The released state at position `t`.
    pub fn state(&self, t: usize) -> &[f32] {
        self.hidden
            .get(t * self.d_model..(t + 1) * self.d_model)
            .unwrap_or(&[])
    }
}

/// Clean residual streams of `tokens` after each K in `ks` (K = 0: the embeddings), by
/// the model's own forward pass; returned in the order of `ks`.
///
/// # Errors
/// [`Error::LayerOutOfRange`] for a K above the model's depth; model errors.
pub fn clean_states(w: &Weights, tokens: &[u32], ks: &[usize]) -> Result<Vec<Vec<f32>>> {
    let c = w.config();
    let max_k = ks.iter().copied().max().unwrap_or(0);
    if max_k > c.n_layers {
        return Err(Error::LayerOutOfRange {
            k: max_k,
            n_layers: c.n_layers,
        });
    }
    let mut x = vec![0.0f32; tokens.len() * c.d_model];
    w.embed(tokens, &mut x)?;
    let mut out: Vec<Vec<f32>> = ks
        .iter()
        .map(|&k| if k == 0 { x.clone() } else { Vec::new() })
        .collect();
    let mut cache = KvCache::new(c, tokens.len());
    let mut linear = QuantLinear::new(w);
    forward_layers(w, 0..max_k, &mut x, &mut cache, &mut linear, &mut |l, h| {
        for (slot, &k) in out.iter_mut().zip(ks) {
            if k == l + 1 {
                *slot = h.to_vec();
            }
        }
    })?;
    Ok(out)
}

/// The view of a prompt at layer K with flooding sigma, in one call.
///
/// # Errors
/// As [`clean_states`] and [`AttackerView::from_clean`].
pub fn observe<R: Rng + ?Sized>(
    w: &Weights,
    tokens: &[u32],
    k: usize,
    flood_sigma: f64,
    rng: &mut R,
) -> Result<AttackerView> {
    let clean = clean_states(w, tokens, &[k])?;
    let states = clean.first().map(Vec::as_slice).unwrap_or(&[]);
    AttackerView::from_clean(states, w.config().d_model, k, flood_sigma, rng)
}
