//! Full-RNS CKKS (Cheon-Kim-Kim-Song, ASIACRYPT 2017; RNS variant, SAC 2018) for Selene.
//!
//! Layered like Lattigo: `ring` (RNS polynomials, NTT) -> `rlwe` (keys, encryption,
//! key switching) -> `scheme` (encoder, evaluator). A lower module never uses a higher one.

pub mod ring;
