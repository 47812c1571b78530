//! What crosses the wire: the client's encrypted input and the server's encrypted output,
//! with their sizes.
//!
//! Sizes are those of a bit-packed encoding: residues mod `q` take `ceil(log2 q)` bits,
//! switched residues mod `2^k` take `k` bits, a fresh secret-key ciphertext ships `c0` and
//! the 32-byte seed of `c1`, plus a fixed header (parameter fingerprint, method, shape,
//! tiling, token count). The engine's own serialization is not on this branch yet; its
//! seed-compressed format has the same payload.

use selene_ckks::ring::{Ntt, Poly};
use selene_ckks::Ciphertext;

use crate::coeff::{SeededCt, SwitchedCt};
use crate::{MatrixShape, Method};

/// Bytes of the fixed header of a message.
const HEADER_BYTES: usize = 48;
/// Bytes of a seed.
const SEED_BYTES: usize = 32;

/// Bytes of `count` values of `bits` bits each, bit-packed.
fn packed(count: usize, bits: u32) -> usize {
    (count * bits as usize).div_ceil(8)
}

/// The method-specific ciphertexts of an input.
#[derive(Clone, Debug)]
pub(crate) enum InputBody {
    Coefficients(Vec<SeededCt>),
    Slots(Vec<Ciphertext>),
}

/// The client's encrypted `X` (`n x d_in`) in the layout of one prepared matrix.
#[derive(Clone, Debug)]
pub struct EncryptedInput {
    pub(crate) fingerprint: [u8; 8],
    pub(crate) method: Method,
    pub(crate) shape: MatrixShape,
    pub(crate) tag: (usize, usize, usize),
    pub(crate) n: usize,
    pub(crate) q_bits: u32,
    pub(crate) body: InputBody,
}

impl EncryptedInput {
    /// Number of tokens.
    pub fn tokens(&self) -> usize {
        self.n
    }

    /// Number of ciphertexts.
    pub fn ciphertexts(&self) -> usize {
        match &self.body {
            InputBody::Coefficients(c) => c.len(),
            InputBody::Slots(c) => c.len(),
        }
    }

    /// Bytes on the wire (seeded ciphertexts, bit-packed `c0`).
    pub fn wire_bytes(&self) -> usize {
        let c0 = |p: &Poly<Ntt>| packed(p.data().len(), self.q_bits) + SEED_BYTES;
        HEADER_BYTES
            + match &self.body {
                InputBody::Coefficients(c) => c.iter().map(|ct| c0(&ct.c0)).sum::<usize>(),
                InputBody::Slots(c) => c.iter().map(|ct| c0(ct.components().0)).sum::<usize>(),
            }
    }
}

/// The method-specific ciphertexts of an output.
#[derive(Clone, Debug)]
pub(crate) enum OutputBody {
    Coefficients(Vec<SwitchedCt>),
    Slots(Vec<(Vec<u64>, Vec<u64>)>),
}

/// The server's encrypted `Y` (`n x d_out`), switched to the small download modulus.
#[derive(Clone, Debug)]
pub struct EncryptedOutput {
    pub(crate) fingerprint: [u8; 8],
    pub(crate) method: Method,
    pub(crate) shape: MatrixShape,
    pub(crate) tag: (usize, usize, usize),
    pub(crate) n: usize,
    pub(crate) down_bits: u32,
    pub(crate) body: OutputBody,
}

impl EncryptedOutput {
    /// Number of tokens.
    pub fn tokens(&self) -> usize {
        self.n
    }

    /// Number of ciphertexts.
    pub fn ciphertexts(&self) -> usize {
        match &self.body {
            OutputBody::Coefficients(c) => c.len(),
            OutputBody::Slots(c) => c.len(),
        }
    }

    /// Bytes on the wire (bit-packed residues mod `2^down_bits`).
    pub fn wire_bytes(&self) -> usize {
        let words: usize = match &self.body {
            OutputBody::Coefficients(c) => c.iter().map(|ct| ct.c0.len() + ct.c1.len()).sum(),
            OutputBody::Slots(c) => c.iter().map(|(a, b)| a.len() + b.len()).sum(),
        };
        HEADER_BYTES + packed(words, self.down_bits)
    }
}
