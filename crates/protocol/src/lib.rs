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
//! - Sessions ([`session`]): [`SessionServer`] (shared by all connections: the prepared
//!   model, the weights for selective mode's plaintext tail, SHA-256 hashes of the
//!   accepted bearer tokens, [`Limits`], [`Counters`]) and one [`Connection`] state
//!   machine per peer; [`ClientSession`] is the client's side (`Hello`, numbered
//!   requests, `Close`).
//! - [`wire`]: the versioned binary frames (`SELW`, message kinds and stable error
//!   codes), decoded without panics and with every length checked before allocating.
//! - Transports ([`Transport`] carries frames): [`InProcess`], the embedded default,
//!   drives the same [`Connection`] with the same bytes a network peer sends; [`net`]
//!   runs TLS over TCP (tokio + rustls/ring server, blocking client with certificate
//!   pinning or CA roots).
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
//! prompt for all practical purposes (see the leakage audit). Not built: the slot
//! method's evaluation keys in `Hello` (the field exists; the server refuses any key,
//! since every preset a session can choose uses the coefficient method, which needs none).
//!
//! Selective by span ([`PublicPrefix`], [`PrefixKv`]): a public prefix runs in plaintext
//! on the server, which returns its keys and values; the private tokens run after it.
//! Length padding ([`PaddedLinear`]) pads the prompt's encrypted products to a bucket.
//!
//! What binds a request to its session: the TLS channel (only the peer holding that
//! connection's keys can put a frame in it) and the session state on the server (one
//! session per connection, request ids strictly increasing, the policy's layers and
//! release cap). Nothing binds a *ciphertext* to a session cryptographically: with the
//! coefficient method the server holds no key material and cannot tell whose key
//! encrypted an input. A ciphertext moved from session A into session B is answered
//! (`tests/faults.rs` shows it); the answer is still encrypted under A's key, so B's
//! client decrypts noise (relative error above 1) and only A's key recovers the
//! product. Moving it gains a peer nothing it could not get by sending its own inputs.

mod blob;
mod client;
pub mod error;
pub mod limits;
pub mod net;
mod padding;
pub mod policy;
mod prefix;
mod prepared;
mod quality;
mod selective;
mod server;
pub mod session;
mod strict;
mod transport;
pub mod wire;

pub use client::{ClientSession, Released};
pub use error::{Error, Result};
pub use limits::Limits;
pub use padding::PaddedLinear;
pub use policy::{Policy, PolicyGuard, ReleaseGuard, ReleaseRequest};
pub use prefix::{generate_after_prefix, PrefixKv, PrefixLimits, PublicPrefix};
pub use prepared::{PreparedModel, ENCRYPTED_STAGES};
pub use quality::{compare_logits, Flip, LogitComparison};
pub use selective::{
    decode_release, encode_release, generate_selective, generate_session, PlainTail,
    SelectiveClient, MIN_FLOODED_PRECISION_BITS,
};
pub use server::ModelServer;
pub use session::{Connection, Counters, SessionEvent, SessionServer};
pub use strict::{Flooding, StrictLinear, TrafficStats};
pub use transport::{InProcess, Transport};
