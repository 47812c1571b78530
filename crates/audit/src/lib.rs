//! Leakage audit for Selene's selective mode.
//!
//! In selective mode the client releases the (noise-flooded) residual stream after layer
//! K to the server, which holds the weights. Published attacks recover the exact prompt
//! from such states (SipIt, 2025; embedding- and prompt-inversion attacks). This crate
//! measures what each K leaks on Selene's own model with two real attacks:
//! - a learned inverter ([`probe`]): ridge regression from layer-K states to the token
//!   embedding space, trained on a corpus disjoint from the one it is scored on;
//! - exact sequential inversion ([`inversion`]): position by position, with the prefix
//!   recovered, run layers 0..K on candidate tokens (ranked by the probe) and keep the one
//!   whose state matches what the server saw.
//!
//! Strict mode releases no plaintext: the server sees only ciphertexts, the token count
//! and timing, so there is nothing to invert (see [`report::STRICT_MODE_NOTE`]).

pub mod candidates;
pub mod corpus;
pub mod dense;
pub mod error;
mod gemm;
pub mod inversion;
pub mod measured;
pub mod metrics;
pub mod noise;
pub mod plot;
pub mod prior;
pub mod probe;
pub mod report;
pub mod ridge;
pub mod runner;
mod templates;
pub mod view;

pub use error::{Error, Result};
