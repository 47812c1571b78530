//! Full-RNS CKKS (Cheon-Kim-Kim-Song, ASIACRYPT 2017; RNS variant, SAC 2018) for Selene.
//!
//! Layered like Lattigo: `ring` (RNS polynomials, NTT) -> `rlwe` (keys, encryption,
//! key switching) -> `scheme` (encoder, evaluator). A lower module never uses a higher one;
//! `params` (validated parameter sets) sits beside `ring` and is used by both upper layers,
//! and `encoding` (the canonical embedding, pure f64 math) is used only by `scheme`.

pub mod encoding;
pub mod error;
pub mod params;
pub mod ring;
pub mod rlwe;
pub mod scheme;

pub use error::{Error, Result};
pub use params::{Parameters, ParametersLiteral, Preset, Security};
pub use rlwe::{
    flooding_sigma, Decryptor, Encryptor, GaloisKey, GaloisKeys, PublicKey, RelinKey, SecretKey,
};
pub use scheme::{Ciphertext, Encoder, Encoding, Evaluator, Plaintext, PreparedPlaintext, Scale};
