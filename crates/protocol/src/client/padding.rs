//! Length padding (the policy's `pad_to`): in strict mode the server
//! sees each encrypted product's token count, so the prompt's products reveal the prompt
//! length. [`PaddedLinear`] pads every product of the prompt's forward pass with dummy
//! rows up to a multiple of `pad_to` and discards their outputs, so the server learns
//! only the length bucket.
//!
//! The dummy rows are copies of the last real row: any nonzero row would do (the
//! coefficient encoding scales each token by the inverse of its norm, so a zero row
//! cannot be encoded), and under encryption the server cannot tell them from real ones.
//! They exist only inside the product: the forward pass sees the real rows' outputs, so
//! nothing of the padding enters the KV cache or the attention.
//!
//! # Security
//! Decode steps are one token each and are not padded: the number of generated tokens
//! stays visible, as ARCHITECTURE.md states. In selective mode padding hides nothing (a
//! release has one row per real position), so [`crate::Policy::validate`] refuses
//! `pad_to` together with a release.

use selene_model::{Config, Linear, LinearStage, ProductAt};

use crate::error::{Error, Result};

/// A [`Linear`] that pads the prompt's products to a multiple of `pad_to` rows.
///
/// It pads every product until the forward pass reaches the LM head (the end of the
/// prompt's pass), then passes products through unchanged; [`PaddedLinear::rearm`]
/// pads the next pass again (a new prompt).
#[derive(Debug)]
pub struct PaddedLinear<L> {
    inner: L,
    config: Config,
    pad_to: usize,
    armed: bool,
}

impl<L: Linear> PaddedLinear<L> {
    /// Wraps `inner` for a model `config`, padding the next prompt to a multiple of
    /// `pad_to` tokens.
    ///
    /// # Errors
    /// [`Error::Policy`] for `pad_to = 0`.
    pub fn new(inner: L, config: &Config, pad_to: usize) -> Result<Self> {
        if pad_to == 0 {
            return Err(Error::Policy {
                why: "pad_to = 0: the length bucket must hold at least one token".to_string(),
            });
        }
        Ok(Self {
            inner,
            config: config.clone(),
            pad_to,
            armed: true,
        })
    }

    /// Pads the next forward pass again (before a new prompt).
    pub fn rearm(&mut self) {
        self.armed = true;
    }

    /// The wrapped implementation.
    pub fn inner(&self) -> &L {
        &self.inner
    }

    /// Unwraps.
    pub fn into_inner(self) -> L {
        self.inner
    }
}

impl<L: Linear> Linear for PaddedLinear<L> {
    fn apply(&mut self, at: ProductAt, x: &[f32], out: &mut [f32]) -> selene_model::Result<()> {
        let ProductAt { layer, stage } = at;
        if stage == LinearStage::LmHead {
            // The head ends a forward pass: the prompt is done, decode steps pass through.
            self.armed = false;
            return self.inner.apply(ProductAt::new(layer, stage), x, out);
        }
        let n = stage.check(&self.config, x, out)?;
        let padded = n.next_multiple_of(self.pad_to);
        if !self.armed || padded == n || n == 0 {
            return self.inner.apply(ProductAt::new(layer, stage), x, out);
        }
        let (d_in, d_out) = stage.dims(&self.config);
        let mut xp = Vec::with_capacity(padded * d_in);
        xp.extend_from_slice(x);
        let last = &x[(n - 1) * d_in..];
        for _ in n..padded {
            xp.extend_from_slice(last);
        }
        let mut yp = vec![0.0f32; padded * d_out];
        self.inner
            .apply(ProductAt::new(layer, stage), &xp, &mut yp)?;
        out.copy_from_slice(&yp[..n * d_out]);
        Ok(())
    }

    fn gains_folded(&self) -> bool {
        self.inner.gains_folded()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use selene_model::Arch;

    /// Records the row counts it is asked for and returns `2 x` per input row.
    struct Rows(Vec<usize>, Config);

    impl Linear for Rows {
        fn apply(&mut self, at: ProductAt, x: &[f32], out: &mut [f32]) -> selene_model::Result<()> {
            let stage = at.stage;
            let n = stage.check(&self.1, x, out)?;
            self.0.push(n);
            let (d_in, d_out) = stage.dims(&self.1);
            for t in 0..n {
                for j in 0..d_out {
                    out[t * d_out + j] = 2.0 * x[t * d_in + j % d_in];
                }
            }
            Ok(())
        }
    }

    #[test]
    fn prompt_products_are_padded_and_outputs_kept_exact() {
        let c = Config {
            arch: Arch::Llama,
            n_layers: 2,
            d_model: 4,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 2,
            d_ff: 6,
            vocab_size: 5,
            context_length: 32,
            rope_theta: 10_000.0,
            rms_eps: 1e-5,
        };
        let mut p = PaddedLinear::new(Rows(Vec::new(), c.clone()), &c, 8).unwrap();
        let x: Vec<f32> = (0..3 * 4).map(|i| i as f32 + 1.0).collect();
        let mut y = vec![0.0; 3 * 4];
        p.apply(ProductAt::new(0, LinearStage::AttnOut), &x, &mut y)
            .unwrap();
        let want: Vec<f32> = x.iter().map(|v| 2.0 * v).collect();
        assert_eq!(y, want);
        let mut logits = vec![0.0; 3 * 5];
        p.apply(ProductAt::new(2, LinearStage::LmHead), &x, &mut logits)
            .unwrap();
        let mut y1 = vec![0.0; 4];
        p.apply(ProductAt::new(0, LinearStage::AttnOut), &x[..4], &mut y1)
            .unwrap();
        p.rearm();
        p.apply(ProductAt::new(0, LinearStage::AttnOut), &x[..4], &mut y1)
            .unwrap();
        assert_eq!(y1, want[..4]);
        // Prompt padded to 8, head unpadded, decode step 1, re-armed prompt 8.
        assert_eq!(p.inner().0, vec![8, 3, 1, 8]);
        assert!(PaddedLinear::new(Rows(Vec::new(), c.clone()), &c, 0).is_err());
    }
}
