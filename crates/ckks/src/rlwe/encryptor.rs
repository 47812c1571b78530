//! RLWE encryption of NTT-form polynomials: secret-key (seeded, so the `a` half ships as a
//! 32-byte seed) and public-key (`(b u + e0 + m, a u + e1)`).

use std::sync::Arc;

use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use zeroize::{Zeroize, Zeroizing};

use crate::params::Parameters;
use crate::ring::basis::mod_down;
use crate::ring::poly::{for_each_row, join};
use crate::ring::sampler::{gaussian, os_rng, os_seed, ternary, uniform_poly_by, Expansion, Seed};
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
    pub seed: Option<Seed>,
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
    /// `u, e0, e1` buffers over `Q_l P` (public-key encryption), reused.
    scratch: Option<[Poly<Ntt>; 3]>,
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

/// `(NTT(v) - a s, a)` with `a` uniform from a fresh seed (shipped instead of `a`): the
/// secret-key encryption of the integer polynomial `v`, a message plus its error.
fn secret_key_encrypt(
    params: &Parameters,
    sk: &SecretKey,
    v: &[i64],
    level: usize,
) -> RlweCiphertext {
    let ring = params.ring();
    let seed = Seed {
        bytes: os_seed(),
        expansion: Expansion::ChaCha8,
    };
    let c1 = uniform_poly_by(ring, &seed.bytes, level, false, seed.expansion);
    let mut c0 = Poly::<Ntt>::zero(ring, level, false);
    c0.assign_signed(ring, v);
    // Row r of -s is row r of its QP form: c0 += a (-s), no copy of the key.
    c0.mul_add_assign(ring, &c1, sk.neg_ntt());
    RlweCiphertext {
        c0,
        c1,
        seed: Some(seed),
    }
}

impl Drop for Encryptor {
    fn drop(&mut self) {
        if let Some(s) = self.scratch.as_mut() {
            s.iter_mut().for_each(Zeroize::zeroize);
        }
    }
}

impl Encryptor {
    /// Secret-key encryptor (fresh ciphertexts are seed-compressible).
    pub fn with_secret_key(sk: Arc<SecretKey>) -> Self {
        Self {
            params: sk.params().clone(),
            key: Key::Secret(sk),
            rng: os_rng(),
            scratch: None,
        }
    }

    /// Public-key encryptor.
    pub fn with_public_key(pk: Arc<PublicKey>) -> Self {
        Self {
            params: pk.params().clone(),
            key: Key::Public(pk),
            rng: os_rng(),
            scratch: None,
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

    /// Encrypts the integer polynomial `m` (coefficient form, `|m_i| < 2^61`) at
    /// `level`. With a secret key the message and the error are summed as integers and
    /// take one NTT together (an encryption of `NTT(m)` pays two).
    ///
    /// # Panics
    /// Never for `m.len() == N` (debug-asserted).
    pub fn encrypt_signed(&mut self, m: &[i64], level: usize) -> RlweCiphertext {
        let ring = self.params.ring();
        debug_assert_eq!(m.len(), self.params.n());
        match &self.key {
            Key::Secret(sk) => {
                // The error is secret: wiped when dropped, with the sum it hides in.
                let mut me = Zeroizing::new(gaussian(&mut self.rng, m.len()));
                for (v, &x) in me.iter_mut().zip(m) {
                    *v += x;
                }
                secret_key_encrypt(&self.params, sk, &me, level)
            }
            Key::Public(_) => {
                let m = Poly::from_signed(ring, m, level, false).into_ntt(ring);
                self.encrypt_poly(&m)
            }
        }
    }

    /// [`Encryptor::encrypt_signed`] of each of `ms`, in parallel with a secret key: the
    /// errors are drawn from this encryptor's generator one after the other, then each
    /// ciphertext's `c1` (from its own fresh seed), NTT and product with the key run
    /// side by side.
    ///
    /// # Panics
    /// Never for polynomials of `N` coefficients (debug-asserted).
    pub fn encrypt_signed_batch(&mut self, ms: &[Vec<i64>], level: usize) -> Vec<RlweCiphertext> {
        let Key::Secret(sk) = &self.key else {
            return ms.iter().map(|m| self.encrypt_signed(m, level)).collect();
        };
        let sums: Vec<Zeroizing<Vec<i64>>> = ms
            .iter()
            .map(|m| {
                debug_assert_eq!(m.len(), self.params.n());
                let mut me = Zeroizing::new(gaussian(&mut self.rng, m.len()));
                for (v, &x) in me.iter_mut().zip(m) {
                    *v += x;
                }
                me
            })
            .collect();
        let (params, sk) = (&self.params, sk);
        sums.par_iter()
            .map(|me| secret_key_encrypt(params, sk, me, level))
            .collect()
    }

    /// An encryption of zero at `level`.
    pub fn encrypt_zero(&mut self, level: usize) -> RlweCiphertext {
        let ring = self.params.ring();
        let n = self.params.n();
        match &self.key {
            Key::Secret(sk) => {
                let e = Zeroizing::new(gaussian(&mut self.rng, n));
                secret_key_encrypt(&self.params, sk, &e, level)
            }
            Key::Public(pk) => {
                // Encryption randomness is secret: wiped when dropped.
                let u = Zeroizing::new(ternary(&mut self.rng, n));
                let e0 = Zeroizing::new(gaussian(&mut self.rng, n));
                let e1 = Zeroizing::new(gaussian(&mut self.rng, n));
                // Over Q_l P, then divided by P: the noise shrinks to rounding noise. The
                // three QP buffers are reused across calls.
                let [mut pu, mut t0, mut t1] = match self.scratch.take() {
                    Some(s) if s[0].level() == level => s,
                    _ => std::array::from_fn(|_| Poly::zero(ring, level, true)),
                };
                join(
                    || pu.assign_signed(ring, &u),
                    || {
                        join(
                            || t0.assign_signed(ring, &e0),
                            || t1.assign_signed(ring, &e1),
                        )
                    },
                );
                let u = &pu;
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
                self.scratch = Some([pu, t0, t1]);
                RlweCiphertext { c0, c1, seed: None }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Decryptor, ExampleParams};

    /// A batch decrypts to each message up to the fresh error, every ciphertext with its
    /// own seed, and a public-key batch too.
    #[test]
    fn a_batch_encrypts_each_message() {
        let p = ExampleParams::Test12.build().unwrap();
        let sk = Arc::new(SecretKey::generate(&p));
        let n = p.n();
        let ms: Vec<Vec<i64>> = (0..5i64)
            .map(|k| {
                (0..n as i64)
                    .map(|i| (i * 31 + k * 1000) % 20_001 - 10_000)
                    .collect()
            })
            .collect();
        let dec = Decryptor::new(sk.clone());
        let q = p.ring().moduli()[0];
        // Fresh error: a Gaussian (sd 3.2) with a secret key; with a public key also
        // `e u`, a sum of about 2N/3 such terms.
        for (mut enc, bound) in [
            (Encryptor::with_secret_key(sk.clone()), 64),
            (
                Encryptor::with_public_key(Arc::new(PublicKey::new(&sk))),
                4096,
            ),
        ] {
            let cts = enc.encrypt_signed_batch(&ms, 0);
            assert_eq!(cts.len(), ms.len());
            for (ct, m) in cts.iter().zip(&ms) {
                let got = dec.decrypt_poly(&ct.c0, &ct.c1);
                let worst = got
                    .row(0)
                    .iter()
                    .zip(m)
                    .map(|(&g, &w)| (q.center(g) - w).abs())
                    .max()
                    .unwrap();
                assert!(worst < bound, "error {worst}");
            }
        }
        let seeds: Vec<_> = Encryptor::with_secret_key(sk)
            .encrypt_signed_batch(&ms, 0)
            .into_iter()
            .map(|ct| ct.seed.map(|s| s.bytes))
            .collect();
        assert!(seeds.iter().all(Option::is_some));
        assert!((1..seeds.len()).all(|i| seeds[i] != seeds[i - 1]));
    }
}
