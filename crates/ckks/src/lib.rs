//! Full-RNS CKKS (Cheon-Kim-Kim-Song, ASIACRYPT 2017; RNS variant, SAC 2018) for Selene.
//!
//! Layered like Lattigo: `ring` (RNS polynomials, NTT) -> `rlwe` (keys, encryption,
//! key switching) -> `scheme` (encoder, evaluator). A lower module never uses a higher one;
//! `params` (validated parameter sets) sits beside `ring` and is used by both upper layers,
//! and `embedding` (the canonical embedding's FFT, pure f64 math) is used only by `scheme`.
//!
//! ```
//! use std::sync::Arc;
//! use selene_ckks::*;
//!
//! let params = ExampleParams::Test12.build()?; // Anchor13/14/15 are the benchmark sets
//! let sk = Arc::new(SecretKey::generate(&params));
//! let pk = Arc::new(PublicKey::new(&sk));
//! let rlk = Arc::new(RelinKey::new(&sk));
//! let gks = Arc::new(GaloisKeys::new(&sk, &[1], false));
//! let encoder = Encoder::new(&params)?;
//! let mut encryptor = Encryptor::with_public_key(pk);
//! let decryptor = Decryptor::new(sk);
//! let mut eval = Evaluator::new(&params).with_relin_key(rlk).with_galois_keys(gks);
//!
//! let scale = Scale(params.default_scale());
//! let top = params.max_level();
//! let x = encryptor.encrypt(&encoder.encode(&[0.5, -0.25, 1.0], top, scale, Encoding::Slots)?);
//! let y = eval.mul_relin(&x, &x)?; // scale 2^44 ...
//! let y = eval.rescale(&y)?; // ... back near 2^22, one level down
//! let y = eval.rotate(&y, 1)?; // slot i <- slot i + 1
//! let out = encoder.decode(&decryptor.decrypt(&y))?;
//! assert!((out[0] - 0.0625).abs() < 1e-2 && (out[1] - 1.0).abs() < 1e-2);
//! # Ok::<(), selene_ckks::Error>(())
//! ```

pub mod embedding;
pub mod error;
pub mod params;
pub mod ring;
pub mod rlwe;
pub mod scheme;

pub use error::{Error, Result};
pub use params::{ExampleParams, Parameters, ParametersLiteral, Security};
pub use rlwe::{
    flooding_sigma, Decryptor, Encryptor, GaloisKey, GaloisKeys, PublicKey, RelinKey, SecretKey,
};
pub use scheme::{Ciphertext, Encoder, Encoding, Evaluator, Plaintext, PreparedPlaintext, Scale};
