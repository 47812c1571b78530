//! The public encryption key `(b, a) = (-a s + e, a)` over `QP`, with `a` from a seed.
//!
//! Over `QP` rather than `Q` (as SEAL does) so that public-key encryption can run over
//! `Q_l P` and divide by `P`: the encryption noise `e u + e0 + e1 s` shrinks by `P` and a
//! fresh ciphertext carries only rounding noise, several bits more precision.

use std::sync::Arc;

use crate::params::Parameters;
use crate::ring::sampler::{gaussian, os_rng, os_seed, uniform_poly};
use crate::ring::{Ntt, Poly};

use super::secret_key::SecretKey;

/// An RLWE encryption of zero at the top level, used for public-key encryption.
#[derive(Clone, Debug, PartialEq)]
pub struct PublicKey {
    params: Arc<Parameters>,
    pub(crate) b: Poly<Ntt>,
    pub(crate) a: Poly<Ntt>,
    seed: [u8; 32],
}

impl PublicKey {
    /// Generates the public key of `sk`.
    pub fn new(sk: &SecretKey) -> Self {
        let params = sk.params().clone();
        let ring = params.ring();
        let level = params.max_level();
        let seed = os_seed();
        let a = uniform_poly(ring, &seed, level, true);
        let e = gaussian(&mut os_rng(), params.n());
        let mut b = Poly::from_signed(ring, &e, level, true).into_ntt(ring);
        let mut as_ = a.clone();
        as_.mul_assign(ring, sk.ntt());
        b.sub_assign(ring, &as_);
        Self { params, b, a, seed }
    }

    /// Rebuilds a key from its `b` component and the seed of `a` (deserialization).
    pub(crate) fn from_parts(params: Arc<Parameters>, b: Poly<Ntt>, seed: [u8; 32]) -> Self {
        let a = uniform_poly(params.ring(), &seed, params.max_level(), true);
        Self { params, b, a, seed }
    }

    /// The parameters.
    pub fn params(&self) -> &Arc<Parameters> {
        &self.params
    }

    /// The seed of `a`.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }
}
