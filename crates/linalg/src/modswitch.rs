//! The download's form of a product: a ciphertext switched from `q` to `2^down_bits`
//! ([`selene_ckks::rlwe::modswitch`] does the switch and its decryption), shared by both
//! methods.

use selene_ckks::rlwe::Pow2Modulus;

use crate::error::Result;

/// A product ciphertext after the switch to `2^k`: `c0` (all of it, or only the used
/// coefficients) and all of `c1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SwitchedCt {
    pub(crate) c0: Vec<u64>,
    pub(crate) c1: Vec<u64>,
}

/// The download modulus `2^down_bits` of a layout.
///
/// # Errors
/// `down_bits` outside what the engine's switch supports (a layout no preset makes).
pub(crate) fn download_modulus(down_bits: u32) -> Result<Pow2Modulus> {
    Ok(Pow2Modulus::new(down_bits)?)
}
