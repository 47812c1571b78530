//! Private generation in Selene's strict client-aided mode (ARCHITECTURE.md, "One
//! generation step"): the server multiplies CKKS-encrypted activations by its weights,
//! the client does everything without a weight matrix and keeps the key.
//!
//! - [`PreparedModel`] (server, once): every layer's four weight products, RMSNorm gains
//!   folded in, encoded for [`selene_linalg`]'s coefficient method.
//! - [`ModelServer`] (server, per request): decodes an encrypted input from its wire
//!   bytes, applies the layer's matrix, encodes the encrypted output.
//! - [`StrictLinear`] (client): a [`selene_model::Linear`] that encrypts each product's
//!   input, sends it through a [`Transport`], and decrypts the answer; the LM head (the
//!   tied, public embedding table) runs on the client in plaintext.
//! - [`InProcess`]: the embedded transport (client and server in one process). Every
//!   message still crosses as bytes in the versioned wire format, so what the server
//!   sees is exactly what a network peer would see.
//!
//! # Security
//! The server sees ciphertexts, their sizes and their timing, and therefore the number
//! of tokens (the prompt length and how many tokens are generated). It sees no token, no
//! activation and no logit. In client-aided mode the client sees every layer's outputs,
//! so with many chosen queries it could learn the weights: Selene does not claim weight
//! privacy.
//!
//! Selective mode by depth ([`SelectiveClient`], [`PlainTail`]) releases the
//! noise-flooded hidden states after the first `k` layers; the server then sees the
//! prompt for all practical purposes (see the leakage audit). Not built yet (issue 7):
//! the TLS transport and sessions, a policy file, public prefixes and length padding.

pub mod error;
pub mod policy;
mod prepared;
mod selective;
mod server;
mod strict;
mod transport;

pub use error::{Error, Result};
pub use policy::{Policy, PolicyGuard, ReleaseGuard, ReleaseRequest};
pub use prepared::{PreparedModel, ENCRYPTED_STAGES};
pub use selective::{
    decode_release, encode_release, generate_selective, PlainTail, SelectiveClient,
    MIN_FLOODED_PRECISION_BITS,
};
pub use server::ModelServer;
pub use strict::{Flooding, StrictLinear, TrafficStats};
pub use transport::{InProcess, Transport};
