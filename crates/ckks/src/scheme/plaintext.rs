//! Plaintexts: an NTT-form polynomial with its scale and encoding; `PreparedPlaintext`
//! adds Shoup quotients for fast repeated multiplication by a fixed operand.

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::params::Parameters;
use crate::ring::{Ntt, Poly};

use super::{Encoding, Scale};

/// An encoded message (NTT form over `Q_l`). Zeroized on drop: it may hold client data.
#[derive(Clone, PartialEq)]
pub struct Plaintext {
    pub(crate) poly: Poly<Ntt>,
    pub(crate) scale: Scale,
    pub(crate) encoding: Encoding,
}

impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plaintext")
            .field("level", &self.level())
            .field("scale_log2", &self.scale.log2())
            .field("encoding", &self.encoding)
            .finish_non_exhaustive()
    }
}

impl Plaintext {
    /// Wraps an NTT-form polynomial.
    pub fn from_poly(poly: Poly<Ntt>, scale: Scale, encoding: Encoding) -> Self {
        Self {
            poly,
            scale,
            encoding,
        }
    }

    /// Level.
    pub fn level(&self) -> usize {
        self.poly.level()
    }

    /// Scale.
    pub fn scale(&self) -> Scale {
        self.scale
    }

    /// Encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The polynomial.
    pub fn poly(&self) -> &Poly<Ntt> {
        &self.poly
    }
}

impl Drop for Plaintext {
    fn drop(&mut self) {
        self.poly.zeroize();
    }
}

impl ZeroizeOnDrop for Plaintext {}

/// A plaintext with the Shoup quotient of every residue precomputed, for operands that
/// multiply many ciphertexts (matrix diagonals): one multiply-high and one multiply-low
/// per product instead of a 128-bit Barrett reduction.
#[derive(Clone, Debug)]
pub struct PreparedPlaintext {
    pub(crate) pt: Plaintext,
    pub(crate) shoup: Vec<u64>,
}

impl PreparedPlaintext {
    /// Precomputes the Shoup quotients of `pt`.
    pub fn new(params: &Parameters, pt: Plaintext) -> Self {
        let ring = params.ring();
        let n = ring.n();
        let mut shoup = vec![0u64; pt.poly.data().len()];
        for (r, out) in shoup.chunks_exact_mut(n).enumerate() {
            let m = ring.moduli()[r];
            for (o, &w) in out.iter_mut().zip(pt.poly.row(r)) {
                *o = m.shoup(w);
            }
        }
        Self { pt, shoup }
    }

    /// The plaintext.
    pub fn plaintext(&self) -> &Plaintext {
        &self.pt
    }

    /// Level.
    pub fn level(&self) -> usize {
        self.pt.level()
    }
}
