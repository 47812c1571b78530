//! Selective mode by depth (ARCHITECTURE.md): the first `k` layers run as in strict mode,
//! then the client releases the noise-flooded residual stream and the server runs the
//! remaining layers, the final norm and the LM head in plaintext.
//!
//! # Security
//! The server sees the released hidden states, so it learns the prompt: the leakage
//! audit (`selene audit`, docs/audit.md) recovers nearly every token from them at small
//! `k`. The ring-level flooding of every product decryption (Li, Micciancio, Schultz,
//! Sorrell, CRYPTO 2022; [`StrictLinear::flood_decryptions`]) protects the CKKS key
//! against decryption-based key recovery (Li and Micciancio, EUROCRYPT 2021) by an
//! honest-but-curious server, one that answers every product with the product; it does
//! not hide the text. An active server could answer with a crafted ciphertext (`c1 = c`
//! decrypts to `c s`): the client pins the decoding scales, bounds every output by
//! `||x|| ||w_j||` and releases nothing after a failed check, and spot checks
//! ([`StrictLinear::with_verify_rate`]) catch answers within the bound with the
//! probability they are drawn with (docs/hardening.md, item 6). Selective mode therefore
//! runs on a preset with room for the flooding the LMSS22 bound asks for (sigma about
//! `2^34-2^37` download units): `coeff12wide` ([`crate::policy::SELECTIVE_PRESET`], a
//! 61-bit prime and a `2^47` download modulus) or its packed sibling `coeff12widepack`
//! ([`crate::policy::SELECTIVE_PACKED_PRESET`], downloads at `2^50`, what `selene`
//! defaults to). [`SelectiveClient::new`] always floods, and refuses
//! ([`Error::FloodingTooWide`]) a preset or a release cap that would leave fewer than
//! [`MIN_FLOODED_PRECISION_BITS`] bits (docs/hardening.md, section 3, has the numbers).
//! There is no unflooded selective client.
//!
//! The server's answer to a release carries its greedy next token and that token's
//! layer-0 q|k|v (`wire::Ahead`, protocol version 6); the client uses them for the next
//! position when it samples that token, one round trip fewer, after bounding them as it
//! bounds a decrypted output. The server computed the logits, so the token tells it
//! nothing the release did not; under sampling it sees whether the client took it, which
//! the next release shows anyway.

use std::ops::ControlFlow;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use selene_model::forward::forward_layers;
use selene_model::fused::forward_layers_fused;
use selene_model::{
    generate_with, head, FusedLinear, KvCache, Linear, LinearStage, ProductAt, QuantLinear,
    Sampler, Weights,
};

use sha2::{Digest, Sha256};

use super::session::Released;
use super::strict::StrictLinear;
use crate::codec::prefix_kv::PrefixKv;
use crate::codec::release::encode_release;
use crate::codec::wire::Ahead;
use crate::error::{Error, Result};
use crate::policy::{PolicyGuard, ReleaseAuthorized, ReleaseGuard, ReleaseRequest, Tensor};
use crate::transport::Transport;

/// Adds independent N(0, sigma^2) noise to every value (Box-Muller on a CSPRNG).
fn flood(values: &mut [f32], sigma: f64, rng: &mut ChaCha20Rng) {
    if sigma == 0.0 {
        return;
    }
    for v in values {
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let u1: f64 = 1.0 - rng.gen::<f64>();
        let u2: f64 = rng.gen::<f64>();
        *v += (sigma * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32;
    }
}

/// Fewest bits of product precision [`SelectiveClient::new`] accepts under decryption
/// flooding: the unflooded presets keep about 15 (selene-linalg docs) and greedy tokens
/// match the plaintext model's; ten leaves the model's own f32/Q4 error dominant.
pub const MIN_FLOODED_PRECISION_BITS: f64 = 10.0;

/// Refuses a flooding that leaves fewer than [`MIN_FLOODED_PRECISION_BITS`] bits.
fn check_flooding<T: Transport>(strict: &StrictLinear<'_, T>) -> Result<()> {
    match strict.flooding() {
        Some(f) if f.precision_bits < MIN_FLOODED_PRECISION_BITS => Err(Error::FloodingTooWide {
            released: f.released,
            precision_bits: f.precision_bits,
            min_bits: MIN_FLOODED_PRECISION_BITS,
        }),
        _ => Ok(()),
    }
}

/// The client's half: embeddings, the first `k` layers encrypted, then a flooded release.
pub struct SelectiveClient<'w, T: Transport> {
    w: &'w Weights,
    k: usize,
    strict: StrictLinear<'w, T>,
    cache: KvCache,
    sigma: f64,
    rng: ChaCha20Rng,
    releases: usize,
    guard: Box<dyn ReleaseGuard + Send>,
    /// The server's greedy next token and its layer-0 q|k|v, from the last release.
    ahead: Option<Ahead>,
    /// Positions whose layer-0 q|k|v came ahead (each one round trip saved).
    ahead_used: usize,
}

impl<T: Transport> std::fmt::Debug for SelectiveClient<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelectiveClient")
            .field("k", &self.k)
            .field("sigma", &self.sigma)
            .field("releases", &self.releases)
            .finish_non_exhaustive()
    }
}

impl<'w, T: Transport> SelectiveClient<'w, T> {
    /// A client that encrypts layers `0..k` through `strict`, decrypts every product with
    /// ring-level flooding sized for `capacity` released rows (the most one client can
    /// release: one per position; [`StrictLinear::flood_decryptions`]), and adds
    /// N(0, `flood_sigma`^2) message-space noise to every released value (an extra knob;
    /// 0 turns it off) from an OS-seeded ChaCha20.
    ///
    /// # Errors
    /// [`Error::InvalidSigma`] for a negative or non-finite sigma; `k` past the model;
    /// [`Error::FloodingTooWide`] when the flooding leaves fewer than
    /// [`MIN_FLOODED_PRECISION_BITS`] bits (a preset that does not flood, or a capacity
    /// too large for it: docs/hardening.md); `selene_linalg::Error::FloodingUnsupported`
    /// for slot-method layouts.
    pub fn new(
        w: &'w Weights,
        k: usize,
        strict: StrictLinear<'w, T>,
        flood_sigma: f64,
        capacity: usize,
    ) -> Result<Self> {
        Self::build(w, k, strict, flood_sigma, capacity, capacity)
    }

    /// [`Self::new`] for a session that starts with the public prefix `kv`: the flooding
    /// is sized for the private rows only (`capacity` minus the prefix, which arrives in
    /// plaintext and is never decrypted), so a long prefix is not refused for precision it
    /// never costs; then layers `0..k` of the prefix go into the cache (as
    /// [`Self::install_prefix`] does, without re-sizing again).
    ///
    /// # Errors
    /// As [`Self::new`] and [`Self::install_prefix`].
    pub fn with_prefix(
        w: &'w Weights,
        k: usize,
        strict: StrictLinear<'w, T>,
        flood_sigma: f64,
        capacity: usize,
        kv: &PrefixKv,
    ) -> Result<Self> {
        let private = capacity.saturating_sub(kv.positions());
        let mut client = Self::build(w, k, strict, flood_sigma, capacity, private)?;
        kv.install_layers(&mut client.cache, 0..k)?;
        Ok(client)
    }

    fn build(
        w: &'w Weights,
        k: usize,
        strict: StrictLinear<'w, T>,
        flood_sigma: f64,
        capacity: usize,
        flood_rows: usize,
    ) -> Result<Self> {
        if !(flood_sigma.is_finite() && flood_sigma >= 0.0) {
            return Err(Error::InvalidSigma { sigma: flood_sigma });
        }
        let layers = w.config().n_layers;
        if k > layers {
            return Err(Error::LayerOutOfRange { layer: k, layers });
        }
        let strict = strict.flood_decryptions(flood_rows as u64)?;
        check_flooding(&strict)?;
        Ok(Self {
            w,
            k,
            strict,
            cache: KvCache::new(w.config(), capacity),
            sigma: flood_sigma,
            rng: ChaCha20Rng::from_entropy(),
            releases: 0,
            guard: Box::new(PolicyGuard::new(k, flood_sigma, u64::MAX)),
            ahead: None,
            ahead_used: 0,
        })
    }

    /// Replaces the release guard (by default a [`PolicyGuard`] for this `k` and sigma
    /// with no cap): every release is authorized by it before it is returned.
    #[must_use]
    pub fn with_guard(mut self, guard: Box<dyn ReleaseGuard + Send>) -> Self {
        self.guard = guard;
        self
    }

    /// Runs `tokens` (the next positions) through the encrypted layers and returns the
    /// flooded release in wire form, once the guard has authorized it.
    ///
    /// # Errors
    /// Token out of range, a full cache, encrypted product failures (among them the
    /// checks on the server's answers: [`Error::ProductCheck`], [`Error::SpotCheckFailed`];
    /// after one, every later step fails with [`Error::FailedCheckEarlier`] and releases
    /// nothing), [`Error::ReleaseRefused`] when the guard says no.
    pub fn step(&mut self, tokens: &[u32]) -> Result<Vec<u8>> {
        // The caller hands the bytes to an in-process tail; the guard has checked (and
        // under a keystore logged) them, which is all the proof stands for.
        let (bytes, _authorized) = self.authorized_step(tokens)?;
        Ok(bytes)
    }

    /// [`SelectiveClient::step`], with the guard's proof for sending the release.
    fn authorized_step(&mut self, tokens: &[u32]) -> Result<(Vec<u8>, ReleaseAuthorized)> {
        if self.strict.check_failed() {
            return Err(Error::FailedCheckEarlier);
        }
        let d = self.w.config().d_model;
        let mut x = vec![0.0; tokens.len() * d];
        self.w.embed(tokens, &mut x)?;
        // The server's next token ahead stands in for layer 0's q|k|v when this is that
        // token (one round trip fewer); any other step discards it.
        let ahead = self
            .ahead
            .take()
            .filter(|a| self.k > 0 && tokens == [a.token]);
        let used = ahead.is_some();
        // A fused session runs a generated token's pass in two requests per layer; the
        // prompt's pass, several rows, takes the stages.
        let fused = self.strict.is_fused() && tokens.len() == 1;
        let mut linear = AheadQkv {
            inner: &mut self.strict,
            qkv: ahead.map(|a| a.qkv),
        };
        if fused {
            forward_layers_fused(self.w, 0..self.k, &mut x, &mut self.cache, &mut linear)?;
        } else {
            forward_layers(
                self.w,
                0..self.k,
                &mut x,
                &mut self.cache,
                &mut linear,
                &mut |_, _| {},
            )?;
        }
        self.ahead_used += usize::from(used);
        // A product that failed a check aborted the layers above; should a caller have
        // swallowed that error, the release is still refused.
        if self.strict.check_failed() {
            return Err(Error::FailedCheckEarlier);
        }
        flood(&mut x, self.sigma, &mut self.rng);
        let bytes = encode_release(&x, tokens.len(), d);
        let request = ReleaseRequest {
            after_layer: self.k,
            tensor: Tensor::Residual,
            rows: tokens.len(),
            flood_sigma: self.sigma,
            digest: Sha256::digest(&bytes).into(),
        };
        let authorized = self
            .guard
            .authorize(&request)
            .map_err(|source| Error::ReleaseRefused { source })?;
        self.releases += tokens.len();
        Ok((bytes, authorized))
    }

    /// Runs `tokens` through the encrypted layers, releases them through the session and
    /// returns the last position's logits (applying the LM head here when the policy
    /// keeps it on the client and the server returned the final hidden state).
    ///
    /// # Errors
    /// As [`SelectiveClient::step`], the server's refusal, channel and model errors.
    pub fn next_logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let (bytes, authorized) = self.authorized_step(tokens)?;
        let (released, ahead) = self.strict.session_mut().release(bytes, authorized)?;
        self.ahead = ahead;
        match released {
            Released::Logits(logits) => Ok(logits),
            Released::Hidden(hidden) => {
                let mut logits = vec![0.0; self.w.config().vocab_size];
                head(self.w, &hidden, &mut QuantLinear::new(self.w), &mut logits)?;
                Ok(logits)
            }
        }
    }

    /// The strict half, mutably (its session).
    pub fn strict_mut(&mut self) -> &mut StrictLinear<'w, T> {
        &mut self.strict
    }

    /// Installs the client's part of a public prefix (layers `0..k`) into its cache,
    /// before the first step; its capacity must include the prefix.
    ///
    /// The prefix's positions arrive in plaintext and are never decrypted, so the key
    /// releases at most `capacity - prefix` rows: the decryption flooding is re-sized for
    /// that cap (a smaller sigma, more precision; nothing has been decrypted yet, as the
    /// cache is still empty).
    ///
    /// # Errors
    /// A prefix for other layers, a cache already in use or too small.
    pub fn install_prefix(&mut self, kv: &PrefixKv) -> Result<()> {
        kv.install_layers(&mut self.cache, 0..self.k)?;
        if let Some(cap) = self.strict.flooding().map(|f| f.releases_cap) {
            let private = cap.saturating_sub(kv.positions() as u64);
            self.strict.size_flooding(private)?;
        }
        Ok(())
    }

    /// Re-sizes the decryption flooding for a session key that may release `rows` rows
    /// over every session it serves (a persisted key: `ReleaseGuard::key_rows_cap`), when
    /// that is more than this session's cap: the privacy loss adds up over every release
    /// under one key. Call it after [`Self::install_prefix`] and before the first step.
    ///
    /// # Errors
    /// [`Error::FloodingTooWide`] when the flooding for `rows` leaves fewer than
    /// [`MIN_FLOODED_PRECISION_BITS`] bits: such a key cannot be reused for that many rows.
    pub fn flood_for_key_rows(&mut self, rows: u64) -> Result<()> {
        let current = self.strict.flooding().map_or(0, |f| f.releases_cap);
        if rows > current {
            self.strict.size_flooding(rows)?;
        }
        check_flooding(&self.strict)
    }

    /// Positions whose layer-0 q|k|v the server sent ahead with the previous release
    /// (the greedy token it predicted was the one sampled): one round trip saved each.
    pub fn ahead_used(&self) -> usize {
        self.ahead_used
    }

    /// Hidden-state rows released so far (one per position).
    pub fn releases(&self) -> usize {
        self.releases
    }

    /// The strict half (traffic statistics).
    pub fn strict(&self) -> &StrictLinear<'w, T> {
        &self.strict
    }
}

/// The encrypted products of the first `k` layers, except layer 0's q|k|v when the server
/// sent it ahead: that one is checked as a decrypted output is
/// ([`StrictLinear::check_ahead`]: the output bound, and the plaintext product when the
/// client holds the layer matrices) and used as it is.
struct AheadQkv<'a, 'w, T: Transport> {
    inner: &'a mut StrictLinear<'w, T>,
    qkv: Option<Vec<f32>>,
}

impl<T: Transport> Linear for AheadQkv<'_, '_, T> {
    fn apply(&mut self, at: ProductAt, x: &[f32], out: &mut [f32]) -> selene_model::Result<()> {
        if at == ProductAt::new(0, LinearStage::Qkv) {
            if let Some(qkv) = self.qkv.take() {
                let wrap = |e: Error| selene_model::Error::Linear {
                    layer: at.layer,
                    stage: at.stage,
                    source: Box::new(e),
                };
                if qkv.len() != out.len() {
                    return Err(wrap(Error::AheadShape {
                        found: qkv.len(),
                        expected: out.len(),
                    }));
                }
                self.inner.check_ahead(x, &qkv).map_err(wrap)?;
                out.copy_from_slice(&qkv);
                return Ok(());
            }
        }
        self.inner.apply(at, x, out)
    }

    fn gains_folded(&self) -> bool {
        self.inner.gains_folded()
    }
}

impl<T: Transport> FusedLinear for AheadQkv<'_, '_, T> {
    fn attn_gate(
        &mut self,
        layer: usize,
        a: &[f32],
        x: &[f32],
        o: &mut [f32],
        gu: &mut [f32],
    ) -> selene_model::Result<()> {
        self.inner.attn_gate(layer, a, x, o, gu)
    }

    fn down_qkv(
        &mut self,
        layer: usize,
        m: &[f32],
        h: &[f32],
        down: &mut [f32],
        qkv: Option<&mut [f32]>,
    ) -> selene_model::Result<()> {
        self.inner.down_qkv(layer, m, h, down, qkv)
    }
}

/// Generates like [`generate_selective`], with the server's tail behind the session:
/// every release goes through the transport and the server answers with logits (or the
/// final hidden state, when the policy keeps the head on the client).
///
/// # Errors
/// An empty prompt and whatever either side or `on_token` fails with.
pub fn generate_session<T: Transport>(
    client: &mut SelectiveClient<'_, T>,
    prompt: &[u32],
    max_tokens: usize,
    stop: &[u32],
    sampler: &mut Sampler,
    on_token: &mut dyn FnMut(u32) -> selene_model::Result<ControlFlow<()>>,
) -> Result<Vec<u32>> {
    generate_with(
        prompt,
        max_tokens,
        stop,
        sampler,
        &mut |ids| client.next_logits(ids),
        &mut |id| Ok(on_token(id)?),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flooding_has_the_requested_spread() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut v = vec![0f32; 100_000];
        flood(&mut v, 0.25, &mut rng);
        let var = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / v.len() as f64;
        assert!((var.sqrt() - 0.25).abs() < 0.01, "sd {}", var.sqrt());
    }
}
