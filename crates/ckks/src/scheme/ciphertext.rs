//! Ciphertexts: two NTT-form polynomials over `Q_l` with scale, encoding and, while fresh
//! from secret-key encryption, the seed of `c1` (dropped on the first mutation, as in
//! fhe.rs, so only fresh ciphertexts serialize compressed).

use crate::error::Result;
use crate::ring::sampler::Seed;
use crate::ring::{Ntt, Poly};
use crate::rlwe::{Decryptor, Encryptor, RlweCiphertext};

use super::plaintext::Plaintext;
use super::{Encoding, Scale};

/// A CKKS ciphertext `(c0, c1)` with `c0 + c1 s ~ Delta m`.
#[derive(Debug, PartialEq)]
pub struct Ciphertext {
    pub(crate) c0: Poly<Ntt>,
    pub(crate) c1: Poly<Ntt>,
    pub(crate) scale: Scale,
    pub(crate) encoding: Encoding,
    pub(crate) seed: Option<Seed>,
    /// Low bits of `c0` the wire form dropped ([`Ciphertext::encode_rounded`]; 0: whole),
    /// so that a decoded ciphertext re-encodes to the same bytes. Meaningful only while
    /// `seed` is set: a mutation drops the seed, and the ciphertext then ships whole.
    pub(crate) dropped_bits: u32,
}

impl Clone for Ciphertext {
    fn clone(&self) -> Self {
        Self {
            c0: self.c0.clone(),
            c1: self.c1.clone(),
            scale: self.scale,
            encoding: self.encoding,
            seed: self.seed,
            dropped_bits: self.dropped_bits,
        }
    }

    /// Reuses the destination's buffers (the `_into` ops rely on this).
    fn clone_from(&mut self, source: &Self) {
        self.c0.clone_from(&source.c0);
        self.c1.clone_from(&source.c1);
        self.scale = source.scale;
        self.encoding = source.encoding;
        self.seed = source.seed;
        self.dropped_bits = source.dropped_bits;
    }
}

impl Ciphertext {
    /// Level (number of `Q` primes minus one).
    pub fn level(&self) -> usize {
        self.c0.level()
    }

    /// Scale.
    pub fn scale(&self) -> Scale {
        self.scale
    }

    /// Encoding of the message.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Seed of `c1` (and the stream it expands by) while the ciphertext is fresh from
    /// secret-key encryption.
    pub fn seed(&self) -> Option<&Seed> {
        self.seed.as_ref()
    }

    /// The two components.
    pub fn components(&self) -> (&Poly<Ntt>, &Poly<Ntt>) {
        (&self.c0, &self.c1)
    }

    /// Overrides the recorded scale (for callers that track scales exactly themselves,
    /// e.g. after multiplying by a constant folded into the encoding).
    pub fn set_scale(&mut self, scale: Scale) {
        self.scale = scale;
    }

    /// A ciphertext from its two NTT-form components (for callers that compute `(c0, c1)`
    /// themselves, e.g. lazily accumulated products); carries no seed.
    pub fn from_components(c0: Poly<Ntt>, c1: Poly<Ntt>, scale: Scale, encoding: Encoding) -> Self {
        Self {
            c0,
            c1,
            scale,
            encoding,
            seed: None,
            dropped_bits: 0,
        }
    }

    /// Consumes the ciphertext into its two NTT-form components.
    pub fn into_components(self) -> (Poly<Ntt>, Poly<Ntt>) {
        (self.c0, self.c1)
    }

    pub(crate) fn from_rlwe(ct: RlweCiphertext, scale: Scale, encoding: Encoding) -> Self {
        Self {
            c0: ct.c0,
            c1: ct.c1,
            scale,
            encoding,
            seed: ct.seed,
            dropped_bits: 0,
        }
    }

    /// An all-zero ciphertext shaped like `self` (for `_into` outputs).
    pub(crate) fn zero_like(params: &crate::params::Parameters, level: usize) -> Self {
        let ring = params.ring();
        Self {
            c0: Poly::zero(ring, level, false),
            c1: Poly::zero(ring, level, false),
            scale: Scale(1.0),
            encoding: Encoding::Slots,
            seed: None,
            dropped_bits: 0,
        }
    }
}

impl Encryptor {
    /// Encrypts a plaintext at its level, scale and encoding.
    pub fn encrypt(&mut self, pt: &Plaintext) -> Ciphertext {
        Ciphertext::from_rlwe(self.encrypt_poly(&pt.poly), pt.scale, pt.encoding)
    }

    /// Encrypts the integer polynomial `m` (coefficient form, `|m_i| < 2^61`) at `level`
    /// with `scale` and `encoding`: [`Encryptor::encrypt`] of its NTT, one NTT cheaper
    /// ([`Encryptor::encrypt_signed`]).
    pub fn encrypt_coefficients(
        &mut self,
        m: &[i64],
        level: usize,
        scale: Scale,
        encoding: Encoding,
    ) -> Ciphertext {
        Ciphertext::from_rlwe(self.encrypt_signed(m, level), scale, encoding)
    }

    /// [`Encryptor::encrypt_coefficients`] of each of `ms`, in parallel with a secret key
    /// ([`Encryptor::encrypt_signed_batch`]).
    pub fn encrypt_coefficients_batch(
        &mut self,
        ms: &[Vec<i64>],
        level: usize,
        scale: Scale,
        encoding: Encoding,
    ) -> Vec<Ciphertext> {
        self.encrypt_signed_batch(ms, level)
            .into_iter()
            .map(|ct| Ciphertext::from_rlwe(ct, scale, encoding))
            .collect()
    }
}

impl Decryptor {
    /// Decrypts to a plaintext (no flooding: keep the result on the client).
    pub fn decrypt(&self, ct: &Ciphertext) -> Plaintext {
        Plaintext::from_poly(self.decrypt_ntt(&ct.c0, &ct.c1), ct.scale, ct.encoding)
    }

    /// Decrypts and adds a flooding Gaussian of `sigma` (see `rlwe::decryptor`): the only
    /// form fit for release to another party.
    pub fn decrypt_flooded(&self, ct: &Ciphertext, sigma: f64) -> Result<Plaintext> {
        let ring = self.params().ring();
        let m = self.decrypt_poly_flooded(&ct.c0, &ct.c1, sigma)?;
        Ok(Plaintext::from_poly(
            m.into_ntt(ring),
            ct.scale,
            ct.encoding,
        ))
    }
}
