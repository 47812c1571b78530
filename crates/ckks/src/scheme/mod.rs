//! CKKS scheme layer: encoder, plaintexts, ciphertexts with level/scale/encoding, the
//! evaluator and the binary format. Uses `rlwe`, `ring` and `params`.

pub mod ciphertext;
pub mod encoder;
pub mod encoding;
pub mod evaluator;
pub mod plaintext;
pub mod serialize;

pub use ciphertext::Ciphertext;
pub use encoder::Encoder;
pub use encoding::Encoding;
pub use evaluator::{pack_galois_elements, Evaluator, PackedMasks};
pub use plaintext::{Plaintext, PreparedPlaintext};

pub(crate) use encoding::check_encoding;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The CKKS scale `Delta` a message is multiplied by.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize, Deserialize)]
pub struct Scale(pub f64);

impl Scale {
    /// Relative tolerance under which two scales are the same (f64 rounding only).
    pub const TOLERANCE: f64 = 1e-12;

    /// The scale as a number.
    pub fn value(self) -> f64 {
        self.0
    }

    /// `log2` of the scale.
    pub fn log2(self) -> f64 {
        self.0.log2()
    }

    /// Errors unless `self` and `other` agree up to f64 rounding.
    pub fn check_same(self, other: Scale) -> Result<()> {
        if (self.0 / other.0 - 1.0).abs() <= Self::TOLERANCE {
            Ok(())
        } else {
            Err(Error::ScaleMismatch {
                left: self.0,
                right: other.0,
            })
        }
    }
}

/// Errors unless the two levels agree.
pub(crate) fn check_level(a: usize, b: usize) -> Result<()> {
    if a == b {
        Ok(())
    } else {
        Err(Error::LevelMismatch { left: a, right: b })
    }
}
