//! RLWE layer: keys, hybrid key switching, encryption and decryption of RNS polynomials,
//! and the modulus switch to a power of two.
//! Uses `ring` and `params`; knows nothing of encodings or scales.

pub mod decryptor;
pub mod encryptor;
pub mod galois_key;
pub mod keyswitch;
pub mod modswitch;
pub mod public_key;
pub mod relin_key;
pub mod secret_key;

pub use decryptor::{flooding_sigma, Decryptor};
pub use encryptor::{Encryptor, RlweCiphertext};
pub use galois_key::{GaloisKey, GaloisKeys};
pub use keyswitch::{Decomposition, KeySwitchKey};
pub use modswitch::Pow2Modulus;
pub use public_key::PublicKey;
pub use relin_key::RelinKey;
pub use secret_key::SecretKey;

use sha2::{Digest, Sha256};

/// Derives an independent 32-byte seed for sub-object `index` of a seeded object with
/// domain-separation label `label` (SHA-256 as a PRF; the seed itself is public).
pub(crate) fn derive_seed(seed: &[u8; 32], label: &[u8], index: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label);
    h.update(seed);
    h.update(index.to_le_bytes());
    h.finalize().into()
}
