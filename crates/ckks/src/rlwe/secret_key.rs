//! The ternary secret key, kept in NTT form over `QP`, zeroized on drop, never printed.

use std::sync::Arc;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::params::Parameters;
use crate::ring::sampler::{os_seed, ternary};
use crate::ring::{Ntt, Poly};

/// A uniform ternary secret `s` in `{-1, 0, 1}^N`, derived from a 32-byte seed.
pub struct SecretKey {
    params: Arc<Parameters>,
    seed: [u8; 32],
    coeffs: Vec<i64>,
    /// `s` over all of `Q P`, NTT form.
    ntt: Poly<Ntt>,
    /// `-s` likewise: secret-key encryption accumulates `a (-s)` onto the message with
    /// one SIMD multiply-add per row.
    neg_ntt: Poly<Ntt>,
}

impl SecretKey {
    /// A fresh secret from the OS CSPRNG.
    pub fn generate(params: &Arc<Parameters>) -> Self {
        let mut seed = os_seed();
        let sk = Self::from_seed(params, &seed);
        seed.zeroize();
        sk
    }

    /// The secret determined by `seed` (so a key store can wrap just the seed).
    pub fn from_seed(params: &Arc<Parameters>, seed: &[u8; 32]) -> Self {
        let mut rng = ChaCha20Rng::from_seed(*seed);
        let coeffs = ternary(&mut rng, params.n());
        let ring = params.ring();
        let ntt = Poly::from_signed(ring, &coeffs, params.max_level(), true).into_ntt(ring);
        let mut neg_ntt = ntt.clone();
        neg_ntt.neg_assign(ring);
        Self {
            params: params.clone(),
            seed: *seed,
            coeffs,
            ntt,
            neg_ntt,
        }
    }

    /// The seed this key was derived from. Secret: handle like the key itself.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The parameters.
    pub fn params(&self) -> &Arc<Parameters> {
        &self.params
    }

    /// `s` in NTT form over `Q P`.
    pub(crate) fn ntt(&self) -> &Poly<Ntt> {
        &self.ntt
    }

    /// `-s` in NTT form over `Q P`.
    pub(crate) fn neg_ntt(&self) -> &Poly<Ntt> {
        &self.neg_ntt
    }

    /// The ternary coefficients of `s`.
    #[cfg(test)]
    pub(crate) fn coeffs(&self) -> &[i64] {
        &self.coeffs
    }
}

impl Zeroize for SecretKey {
    fn zeroize(&mut self) {
        self.seed.zeroize();
        self.coeffs.zeroize();
        self.ntt.zeroize();
        self.neg_ntt.zeroize();
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for SecretKey {}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SecretKey {{ params: {:02x?}, key: [redacted] }}",
            self.params.fingerprint()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::ExampleParams;

    #[test]
    fn seeded_secret_is_reproducible_ternary_and_redacted() {
        let params = ExampleParams::Test12.build().unwrap();
        let a = SecretKey::from_seed(&params, &[3; 32]);
        let b = SecretKey::from_seed(&params, &[3; 32]);
        assert_eq!(a.coeffs(), b.coeffs());
        assert!(a.coeffs().iter().all(|c| (-1..=1).contains(c)));
        let dbg = format!("{a:?}");
        assert!(dbg.contains("[redacted]") && !dbg.contains("seed"));
        let mut c = SecretKey::generate(&params);
        assert_ne!(c.coeffs(), a.coeffs());
        c.zeroize();
        assert!(c.coeffs().iter().all(|&x| x == 0) && c.seed() == &[0; 32]);
    }
}
