//! Decryption `m = c0 + c1 s`, plain or with noise flooding.
//!
//! # Noise flooding
//! A CKKS decryption reveals `m + e`, and `e` depends on the secret: publishing it lets an
//! adversary recover the key (Li and Micciancio, EUROCRYPT 2021). Li, Micciancio, Schultz
//! and Sorrell ("Securing Approximate Homomorphic Encryption Using Differential Privacy",
//! CRYPTO 2022) show that adding, before release, a fresh discrete Gaussian of standard
//! deviation `sigma` to the decrypted polynomial makes the released values reveal at most
//! `2^-s` statistical advantage over `q` releases when `sigma = sqrt(12 q) * 2^(s/2) * B`,
//! with `B` a bound on the **Euclidean norm** of each release's error vector (their
//! Rényi-divergence analysis of Gaussian flooding, Sec. 4; the same formula OpenFHE uses in
//! its `NOISE_FLOODING_DECRYPT` mode). This is far below the `2^s * B` that a statistical-
//! distance argument needs, so fewer bits of precision are lost: about `log2(sigma)`
//! bits below the scale. [`flooding_sigma`] computes it.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::params::Parameters;
use crate::ring::sampler::{os_rng, wide_gaussian};
use crate::ring::{Coeff, Ntt, Poly};

use super::secret_key::SecretKey;

/// The flooding standard deviation for a bound `noise_bound` on the Euclidean norm of each
/// release's error vector, at most `releases` of them per key (a release may be a single
/// coefficient with its own bound: only `releases * noise_bound^2` counts), and
/// `stat_security` bits of statistical security: `sqrt(12 releases) * 2^(stat_security /
/// 2) * noise_bound` (Li, Micciancio, Schultz, Sorrell, CRYPTO 2022; see the module docs).
pub fn flooding_sigma(noise_bound: f64, releases: u64, stat_security: u32) -> f64 {
    noise_bound * (12.0 * releases.max(1) as f64).sqrt() * (f64::from(stat_security) / 2.0).exp2()
}

/// Largest flooding sigma accepted (samples stay far inside `i128`).
const MAX_FLOODING_SIGMA: f64 = 1.152_921_504_606_847e18; // 2^60

/// Decrypts RLWE ciphertexts with a secret key.
pub struct Decryptor {
    sk: Arc<SecretKey>,
}

impl std::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Decryptor {{ key: [redacted] }}")
    }
}

impl Decryptor {
    /// A decryptor for `sk`.
    pub fn new(sk: Arc<SecretKey>) -> Self {
        Self { sk }
    }

    /// The parameters.
    pub fn params(&self) -> &Arc<Parameters> {
        self.sk.params()
    }

    /// The secret key (crate-internal: the power-of-two decryption reads its NTT form).
    pub(crate) fn secret_key(&self) -> &SecretKey {
        &self.sk
    }

    /// `c0 + c1 s` in NTT form.
    pub fn decrypt_ntt(&self, c0: &Poly<Ntt>, c1: &Poly<Ntt>) -> Poly<Ntt> {
        let ring = self.sk.params().ring();
        let mut m = c0.clone();
        m.mul_add_assign(ring, c1, self.sk.ntt());
        m
    }

    /// `c0 + c1 s` in coefficient form.
    pub fn decrypt_poly(&self, c0: &Poly<Ntt>, c1: &Poly<Ntt>) -> Poly<Coeff> {
        self.decrypt_ntt(c0, c1).into_coeff(self.sk.params().ring())
    }

    /// `c0 + c1 s + f` with `f` a fresh rounded Gaussian of standard deviation `sigma` per
    /// coefficient (noise flooding; see the module docs for choosing `sigma`).
    pub fn decrypt_poly_flooded(
        &self,
        c0: &Poly<Ntt>,
        c1: &Poly<Ntt>,
        sigma: f64,
    ) -> Result<Poly<Coeff>> {
        if !sigma.is_finite() || !(0.0..=MAX_FLOODING_SIGMA).contains(&sigma) {
            return Err(Error::InvalidFloodingSigma { sigma });
        }
        let ring = self.sk.params().ring();
        let mut m = self.decrypt_poly(c0, c1);
        let f = wide_gaussian(&mut os_rng(), ring.n(), sigma);
        for r in 0..m.rows() {
            let md = ring.moduli()[r];
            for (x, &e) in m.row_mut(r).iter_mut().zip(&f) {
                *x = md.add(*x, md.reduce_i128(e));
            }
        }
        Ok(m)
    }
}
