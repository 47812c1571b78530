//! RLWE encryption of NTT-form polynomials: secret-key (seeded, so the `a` half ships as a
//! 32-byte seed) and public-key (`(b u + e0 + m, a u + e1)`).

use std::sync::Arc;

use rand_chacha::ChaCha20Rng;

use crate::params::Parameters;
use crate::ring::basis::mod_down;
use crate::ring::poly::{for_each_row, join};
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
                // Row r of s is row r of its QP form: multiply in place, no copy of s.
                as_.mul_assign_prefix(ring, sk.ntt());
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
                // Over Q_l P, then divided by P: the noise shrinks to rounding noise.
                let to_ntt = |v: &[i64]| Poly::from_signed(ring, v, level, true).into_ntt(ring);
                let (u, (mut t0, mut t1)) =
                    join(|| to_ntt(&u), || join(|| to_ntt(&e0), || to_ntt(&e1)));
                let q_rows = level + 1;
                for (t, k) in [(&mut t0, &pk.b), (&mut t1, &pk.a)] {
                    for_each_row(t.data_mut(), n, |r, row| {
                        let idx = ring.modulus_index(q_rows, r);
                        ring.plan(idx).mul_add(row, k.row(idx), u.row(r));
                    });
                }
                let mut c0 = Poly::zero(ring, level, false);
                let mut c1 = Poly::zero(ring, level, false);
                let inv_p = self.params.inv_p();
                join(
                    || mod_down(ring, &t0, inv_p, &mut c0),
                    || mod_down(ring, &t1, inv_p, &mut c1),
                );
                RlweCiphertext { c0, c1, seed: None }
            }
        }
    }
}
