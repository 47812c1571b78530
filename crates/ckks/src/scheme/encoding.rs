//! Which of the two CKKS encodings a plaintext or ciphertext carries; travels with every
//! value so that mixing them is an error instead of garbage. The slot encoding's
//! transform itself is [`crate::embedding`].

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How values map to the plaintext polynomial.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Encoding {
    /// Canonical embedding: up to `N/2` complex slots, products are slot-wise.
    Slots,
    /// Value `i` is coefficient `i`: products are negacyclic convolutions.
    Coefficients,
}

/// Errors unless the two encodings agree.
pub(crate) fn check_encoding(a: Encoding, b: Encoding) -> Result<()> {
    if a == b {
        Ok(())
    } else {
        Err(Error::EncodingMismatch { left: a, right: b })
    }
}
