//! The server's half of a public prefix: the plaintext, batched run of the prefix through
//! every layer, whose keys and values go back to the client (and, in selective mode, into
//! the session's plaintext tail).

use selene_model::forward::forward_layers;
use selene_model::{KvCache, QuantLinear, Weights};

use crate::codec::prefix_kv::PrefixKv;
use crate::error::{Error, Result};

/// The server's plaintext run of a public prefix.
#[derive(Clone, Copy, Debug)]
pub struct PublicPrefix;

impl PublicPrefix {
    /// Runs `tokens` through every layer of `w` in plaintext (batched) and returns each
    /// layer's keys (after RoPE, positions `0..tokens.len()`) and values.
    ///
    /// # Errors
    /// No tokens, more than the context length, a token out of range.
    pub fn run(w: &Weights, tokens: &[u32]) -> Result<PrefixKv> {
        let c = w.config();
        if tokens.is_empty() {
            return Err(Error::MalformedPrefix {
                what: "empty public prefix",
            });
        }
        let mut cache = KvCache::new(c, tokens.len());
        let mut x = vec![0.0f32; tokens.len() * c.d_model];
        w.embed(tokens, &mut x)?;
        forward_layers(
            w,
            0..c.n_layers,
            &mut x,
            &mut cache,
            &mut QuantLinear::new(w),
            &mut |_, _| {},
        )?;
        Ok(PrefixKv::from_cache(&cache, 0..c.n_layers, c.kv_dim()))
    }
}
