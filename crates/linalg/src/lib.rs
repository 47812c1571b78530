//! Encrypted linear algebra for Selene's client-aided mode: `Enc(X) * W` for activations
//! `X` (`n` tokens x `d_in`) and the server's plaintext weights `W` (`d_in x d_out`).
//!
//! # Three sides
//! - Server, once: [`PreparedMatrix::new`] encodes `W` in NTT form and keeps it
//!   ([`PreparedMatrix::memory_bytes`]); its public [`Layout`] goes to the client.
//! - Client, per product: [`Client::encode_encrypt`] -> [`EncryptedInput`] (seeded
//!   ciphertexts) and private [`TokenScales`].
//! - Server: [`Server::apply`] -> [`EncryptedOutput`] (switched to a small modulus).
//! - Client: [`Client::decrypt_decode`] -> `Y` (`n x d_out`), or
//!   [`Client::decrypt_decode_flooded`] when anything derived from `Y` reaches the server
//!   ([`flooding`]).
//!
//! Shapes, methods, tilings and parameter sets are checked at every step; a mismatch is
//! an [`Error`]. Both messages report [`EncryptedInput::wire_bytes`] and
//! [`EncryptedOutput::wire_bytes`].
//!
//! # Two methods
//! - [`Method::Coefficients`] ([`coeff`], [`tiling`]): Cheetah/Iron polynomial products.
//!   No rotations, no keys beyond the secret key: `ceil(d_in/k_i) ceil(d_out/k_o)`
//!   NTT-domain products of `N` coefficients, i.e. about `d_in d_out` lazy
//!   multiply-adds per token, two inverse NTTs per output block, and a download of `c1`
//!   plus the used coefficients of `c0` at 24 bits.
//! - [`Method::Slots`] ([`slots`]): Halevi-Shoup diagonals with baby-step giant-step and
//!   hoisted baby steps, several tokens per ciphertext; `g + h - 2` Galois keys.
//!
//! # Which method, and why
//! [`choose_method`] ([`choice`]: server time plus wire time at 1 Gbit/s) picks the
//! coefficient method for every SmolLM2 shape and every `n`.
//! Both methods do about one modular multiply-add per useful multiply-add, so the
//! compute floor is the same `n d_in d_out`; the slot method adds `g + h - 2` key
//! switches per ciphertext (46-77 of them per matrix at `N = 2^13`) and multiplies
//! `N = 2^13`-coefficient diagonals for every input, while the coefficient method needs
//! no key switching at all. On the wire the slot method is smaller at `n = 1` (one
//! ciphertext each way per matrix), but at 1 Gbit/s the bytes it saves per layer take
//! far less time than its key switches. `selene bench linalg` measures both.
//!
//! # Precision and cost
//! The measured precision of each preset (bits against the f64 product over real SmolLM2
//! layers, `crates/cli/tests/linalg_smollm2.rs`), the server time and traffic per layer
//! and the memory of the prepared weights (`selene bench linalg`) are in
//! `docs/benchmarks.md`, "Figures the crate docs point to".
//!
//! # Limits
//! - Traffic: unpacked, the coefficient method ships all of `c1` for every output block,
//!   so a layer costs about `sum 2 sqrt(N d_in d_out up_bits down_bits)` bits per token.
//!   The packing preset ([`LinalgPreset::Coeff12Pack`]) merges the output blocks of a
//!   product into few ciphertexts with the client's Galois keys
//!   ([`selene_ckks::Evaluator::pack`]), at one key switch per merged block, and its
//!   tiling is chosen for a [`Link`] ([`tiling::Tiling::choose_packed`]);
//!   `docs/packing.md` has the costs and how they scale.
//! - Prefill: both methods already spend about one modular multiply-add per useful
//!   multiply-add, so `n d_in d_out` is a floor and the server time per token cannot fall
//!   20x with `n`. Tokens per ciphertext (`n_b`) cut the traffic per token instead
//!   (`~1/sqrt(n_b)`), at `n_b` times the server memory.

pub mod choice;
pub mod coeff;
pub mod error;
pub mod flooding;
pub mod hoist;
pub mod link;
pub mod params;
pub mod slots;
pub mod tiling;

mod client;
mod lazy;
mod matrix;
mod message;
mod modswitch;
mod server;
mod streamed;

pub use choice::choose_method;
pub use client::{Client, TokenScales, OUTPUT_BOUND_SLACK};
pub use error::{Error, Result};
pub use link::Link;
pub use matrix::{Layout, LayoutKind, PreparedMatrix};
pub use message::{EncryptedInput, EncryptedOutput};
pub use params::LinalgPreset;
pub use server::{Server, StreamedProduct};

/// How activations are packed into ciphertexts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// Coefficient encoding (Cheetah/Iron): no rotations.
    Coefficients,
    /// Slot encoding, diagonal method with baby-step giant-step.
    Slots,
}

impl Method {
    /// Short name for tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Method::Coefficients => "coeff",
            Method::Slots => "slots",
        }
    }
}

/// `d_in -> d_out`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MatrixShape {
    /// Inputs per token.
    pub d_in: usize,
    /// Outputs per token.
    pub d_out: usize,
}

impl MatrixShape {
    /// A shape.
    pub fn new(d_in: usize, d_out: usize) -> Self {
        Self { d_in, d_out }
    }

    fn check(self) -> Result<()> {
        if self.d_in == 0 || self.d_out == 0 {
            return Err(Error::EmptyShape {
                d_in: self.d_in,
                d_out: self.d_out,
            });
        }
        Ok(())
    }
}

/// Errors unless `v` has `expected` finite values.
fn check_values(what: &'static str, v: &[f32], expected: usize) -> Result<()> {
    if v.len() != expected {
        return Err(Error::Length {
            what,
            found: v.len(),
            expected,
        });
    }
    if let Some(index) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::NonFinite { what, index });
    }
    Ok(())
}

/// Errors unless a message's header matches `layout`.
fn check_header(layout: &Layout, h: &message::Header) -> Result<()> {
    if h.fingerprint != layout.fingerprint {
        return Err(Error::ParamsMismatch {
            expected: layout.fingerprint,
            found: h.fingerprint,
        });
    }
    if h.method != layout.method() {
        return Err(Error::MethodMismatch {
            expected: layout.method(),
            found: h.method,
        });
    }
    if h.shape != layout.shape {
        return Err(Error::ShapeMismatch {
            d_in: layout.shape.d_in,
            d_out: layout.shape.d_out,
            found_in: h.shape.d_in,
            found_out: h.shape.d_out,
        });
    }
    if h.tag != layout.tag() {
        return Err(Error::LayoutMismatch {
            expected: layout.tag(),
            found: h.tag,
        });
    }
    Ok(())
}
