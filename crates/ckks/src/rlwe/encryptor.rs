//! RLWE encryption of NTT-form polynomials: secret-key (seeded, so the `a` half ships as a
//! 32-byte seed) and public-key (`(b u + e0 + m, a u + e1)`).

use std::sync::Arc;

use rand_chacha::ChaCha20Rng;

use crate::params::Parameters;
use crate::ring::sampler::{gaussian, os_rng, os_seed, ternary, uniform_poly};
use crate::ring::{Ntt, Poly};

use super::public_key::PublicKey;
use super::secret_key::SecretKey;

/// A two-component RLWE ciphertext `(c0, c1)` with `c0 + c1 s = m + e`.
#[derive(Clone, Debug, PartialEq)]
pub struct RlweCiphertext {
    /// First component.
    pub c0: Poly<Ntt>,
    /// Second component (uniform from `seed` while fresh).
    pub c1: Poly<Ntt>,
    /// Seed of `c1` for a fresh secret-key encryption.
    pub seed: Option<[u8; 32]>,
}

enum Key {
    Secret(Arc<SecretKey>),
    Public(Arc<PublicKey>),
}

/// Encrypts with a secret or a public key; owns a ChaCha20 CSPRNG seeded from the OS.
pub struct Encryptor {
    params: Arc<Parameters>,
    key: Key,
    rng: ChaCha20Rng,
}

impl std::fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.key {
            Key::Secret(_) => "secret",
            Key::Public(_) => "public",
        };
        write!(f, "Encryptor {{ key: {kind}, rng: [redacted] }}")
    }
}

impl Encryptor {
    /// Secret-key encryptor (fresh ciphertexts are seed-compressible).
    pub fn with_secret_key(sk: Arc<SecretKey>) -> Self {
        Self {
            params: sk.params().clone(),
            key: Key::Secret(sk),
            rng: os_rng(),
        }
    }

    /// Public-key encryptor.
    pub fn with_public_key(pk: Arc<PublicKey>) -> Self {
        Self {
            params: pk.params().clone(),
            key: Key::Public(pk),
            rng: os_rng(),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &Arc<Parameters> {
        &self.params
    }

    /// Encrypts `m` (NTT form over `Q_l`) at its level.
    pub fn encrypt_poly(&mut self, m: &Poly<Ntt>) -> RlweCiphertext {
        let mut ct = self.encrypt_zero(m.level());
        ct.c0.add_assign(self.params.ring(), m);
        ct
    }

    /// An encryption of zero at `level`.
    pub fn encrypt_zero(&mut self, level: usize) -> RlweCiphertext {
        let ring = self.params.ring();
        let n = self.params.n();
        match &self.key {
            Key::Secret(sk) => {
                let seed = os_seed();
                let c1 = uniform_poly(ring, &seed, level, false);
                let e = gaussian(&mut self.rng, n);
                let mut c0 = Poly::from_signed(ring, &e, level, false).into_ntt(ring);
                let mut as_ = c1.clone();
                as_.mul_assign(ring, &sk.ntt().q_part(level));
                c0.sub_assign(ring, &as_);
                RlweCiphertext {
                    c0,
                    c1,
                    seed: Some(seed),
                }
            }
            Key::Public(pk) => {
                let u = ternary(&mut self.rng, n);
                let e0 = gaussian(&mut self.rng, n);
                let e1 = gaussian(&mut self.rng, n);
                let (u, (mut c0, mut c1)) = rayon::join(
                    || Poly::from_signed(ring, &u, level, false).into_ntt(ring),
                    || {
                        rayon::join(
                            || Poly::from_signed(ring, &e0, level, false).into_ntt(ring),
                            || Poly::from_signed(ring, &e1, level, false).into_ntt(ring),
                        )
                    },
                );
                c0.mul_add_assign(ring, &pk.b, &u);
                c1.mul_add_assign(ring, &pk.a, &u);
                RlweCiphertext { c0, c1, seed: None }
            }
        }
    }
}
