//! Plaintexts: an NTT-form polynomial with its scale and encoding, and `PreparedPlaintext`
//! for operands that multiply many ciphertexts.

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

/// The form of a fixed multiplicand (a matrix diagonal) that multiplies many ciphertexts.
///
/// This is the NTT form itself: tfhe-ntt's SIMD multiply-accumulate (AVX-512 IFMA)
/// measured faster than scalar Shoup multiplication with precomputed quotients
/// (`docs/benchmarks.md`, "Figures the crate docs point to"), and Shoup quotients would
/// double the memory of every stored diagonal. The type stays separate so a faster
/// precomputed form can be added without changing callers.
#[derive(Clone, Debug)]
pub struct PreparedPlaintext {
    pub(crate) pt: Plaintext,
}

impl PreparedPlaintext {
    /// Prepares `pt` for repeated multiplication.
    pub fn new(_params: &Parameters, pt: Plaintext) -> Self {
        Self { pt }
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
