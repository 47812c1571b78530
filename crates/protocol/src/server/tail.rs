//! Selective mode's plaintext tail on the server: layers `k..`, the final norm and the LM
//! head over the session's own KV cache of those layers, fed by the client's releases.

use selene_model::forward::{apply_gain, forward_layers, rms_norm};
use selene_model::sampling::argmax;
use selene_model::{head, KvCache, Linear, LinearStage, Logits, ProductAt, QuantLinear, Weights};

use crate::codec::prefix_kv::PrefixKv;
use crate::codec::release::decode_release;
use crate::codec::wire::Ahead;
use crate::error::{Error, Result};

/// The server's plaintext half: layers `k..`, the final norm and the LM head, over its
/// own KV cache of those layers.
#[derive(Debug)]
pub struct PlainTail<'w> {
    w: &'w Weights,
    state: TailState,
}

impl<'w> PlainTail<'w> {
    /// A server tail starting at layer `k`, for up to `capacity` positions.
    pub fn new(w: &'w Weights, k: usize, capacity: usize) -> Self {
        Self {
            w,
            state: TailState::new(w, k, capacity),
        }
    }

    /// Runs a release (wire bytes) through the remaining layers and returns the logits
    /// of its last position.
    ///
    /// # Errors
    /// A malformed release, a full cache, model errors.
    pub fn handle(&mut self, release: &[u8]) -> Result<Vec<f32>> {
        let x = decode_release(release, self.w.config().d_model)?;
        self.state.run(self.w, x, TailOutput::Logits(Logits::Last))
    }

    /// [`PlainTail::handle`] returning the logits of every released position
    /// (`n x vocab_size`), for scoring a text (perplexity) in selective mode.
    ///
    /// # Errors
    /// As [`PlainTail::handle`].
    pub fn handle_all(&mut self, release: &[u8]) -> Result<Vec<f32>> {
        let x = decode_release(release, self.w.config().d_model)?;
        self.state.run(self.w, x, TailOutput::Logits(Logits::All))
    }

    /// Installs the server's part of a public prefix (layers `k..`) into the tail's
    /// cache, before any release; its capacity must include the prefix.
    ///
    /// # Errors
    /// A prefix for other layers, a cache already in use or too small.
    pub fn install_prefix(&mut self, kv: &PrefixKv) -> Result<()> {
        self.state.install_prefix(self.w, kv)
    }
}

/// What a tail returns for a release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TailOutput {
    /// Logits (of the last or of every released position).
    Logits(Logits),
    /// The last position's final hidden state (before the final norm), for a client
    /// that applies the LM head itself.
    Hidden,
}

/// A session's plaintext tail without the borrowed weights (the session server owns them).
#[derive(Debug)]
pub(crate) struct TailState {
    k: usize,
    cache: KvCache,
}

impl TailState {
    pub(crate) fn new(w: &Weights, k: usize, capacity: usize) -> Self {
        Self {
            k,
            cache: KvCache::new(w.config(), capacity),
        }
    }

    /// Positions already in the cache (the prefix and the released rows).
    pub(crate) fn positions(&self) -> usize {
        self.cache.layer_len(self.k)
    }

    /// Positions the cache may hold (the session's context).
    pub(crate) fn capacity(&self) -> usize {
        self.cache.capacity()
    }

    /// Installs layers `k..` of a public prefix into the cache.
    pub(crate) fn install_prefix(&mut self, w: &Weights, kv: &PrefixKv) -> Result<()> {
        kv.install_layers(&mut self.cache, self.k..w.config().n_layers)
    }

    /// The next token ahead of a release whose answer was `values` (what [`Self::run`]
    /// returned for `out`: the last position's logits, or its final hidden state, whose
    /// logits are computed here): the greedy token and its first-layer q|k|v, computed
    /// as the plaintext forward pass computes them (`rms_norm` with the layer's gain,
    /// then the quantized product; the bias is the client's to add).
    pub(crate) fn ahead(w: &Weights, values: &[f32], out: TailOutput) -> Result<Ahead> {
        let c = w.config();
        let token = match out {
            TailOutput::Logits(_) => {
                // The last position's logits (all rows' when `Logits::All`).
                let last = values.len().saturating_sub(c.vocab_size);
                argmax(values.get(last..).unwrap_or(&[]))
            }
            TailOutput::Hidden => {
                let mut logits = vec![0.0; c.vocab_size];
                head(w, values, &mut QuantLinear::new(w), &mut logits)?;
                argmax(&logits)
            }
        };
        let mut x = vec![0.0f32; c.d_model];
        w.embed(&[token], &mut x)?;
        let mut norm = vec![0.0f32; c.d_model];
        rms_norm(&x, c.d_model, c.rms_eps, &mut norm);
        if let Some(g) = w.stage_gain(0, LinearStage::Qkv)? {
            apply_gain(&mut norm, g);
        }
        let mut qkv = vec![0.0f32; c.qkv_dim()];
        QuantLinear::new(w).apply(ProductAt::new(0, LinearStage::Qkv), &norm, &mut qkv)?;
        Ok(Ahead { token, qkv })
    }

    /// Runs a decoded release (`n >= 1` rows of `d_model` values, as
    /// [`decode_release`] guarantees) through layers `k..` and returns what `out` asks for.
    pub(crate) fn run(
        &mut self,
        w: &Weights,
        mut x: Vec<f32>,
        out: TailOutput,
    ) -> Result<Vec<f32>> {
        let c = w.config();
        let n = x.len() / c.d_model;
        if n == 0 || x.len() != n * c.d_model {
            return Err(Error::MalformedRelease {
                what: "length does not match n x d",
            });
        }
        let mut plain = QuantLinear::new(w);
        forward_layers(
            w,
            self.k..c.n_layers,
            &mut x,
            &mut self.cache,
            &mut plain,
            &mut |_, _| {},
        )?;
        let rows = match out {
            TailOutput::Logits(Logits::All) => &x[..],
            TailOutput::Logits(Logits::Last) => x.get((n - 1) * c.d_model..).unwrap_or(&[]),
            TailOutput::Hidden => {
                return Ok(x.get((n - 1) * c.d_model..).unwrap_or(&[]).to_vec());
            }
        };
        let mut logits = vec![0.0; rows.len() / c.d_model * c.vocab_size];
        head(w, rows, &mut plain, &mut logits)?;
        Ok(logits)
    }
}
