//! Private generation in Selene's strict client-aided mode (ARCHITECTURE.md, "One
//! generation step"): the server multiplies CKKS-encrypted activations by its weights,
//! the client does everything without a weight matrix and keeps the key.
//!
//! The crate is laid out by role, and dependencies between its files point one way:
//!
//! - [`codec`]: every byte format both roles share: the framed messages ([`wire`]),
//!   a selective release ([`codec::release`]), a public prefix's keys and values
//!   ([`PrefixKv`]). Decoders check every length before allocating.
//! - [`client`]: the session ([`ClientSession`]: `Hello`, numbered requests, `Close`),
//!   [`StrictLinear`] (a [`selene_model::Linear`] that encrypts each product's input,
//!   sends it and decrypts the answer; the LM head, the public embedding table, runs here
//!   in plaintext), [`SelectiveClient`] (flooded releases after `k` layers),
//!   [`PaddedLinear`] and the token loop after a public prefix.
//! - [`server`]: [`PreparedModel`] (every layer's four products, RMSNorm gains folded
//!   in, encoded once), [`SessionServer`] (shared by all connections), one [`Connection`]
//!   state machine per peer with one handler per message kind, selective mode's
//!   [`PlainTail`] and the [`PublicPrefix`] run.
//! - [`transport`]: the [`Transport`] trait the client speaks through; [`InProcess`],
//!   the embedded default, drives the same [`Connection`] with the same bytes a network
//!   peer sends (the one file that names both roles); [`net`] runs TLS over TCP.
//! - [`policy`]: what runs encrypted and what may be released, checked by both roles.
//!
//! A client file never imports a server file or the reverse (`scripts/check_modules.py`).
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

pub mod client;
pub mod codec;
mod embedded;
pub mod error;
pub mod limits;
pub mod plan;
pub mod policy;
mod quality;
pub mod server;
pub mod transport;

pub use client::{
    generate_after_prefix, generate_after_prefix_drafted, generate_session, model_fingerprint,
    ClientSession, Flooding, PaddedLinear, PrivateGenerator, PrivateStats, Released,
    SelectiveClient, StrictLinear, TrafficStats, MAX_OUTSTANDING, MIN_FLOODED_PRECISION_BITS,
    PIPELINE_ROWS, PRODUCT_REPLY_FACTOR, VERIFY_TOLERANCE,
};
pub use codec::prefix_kv::{PrefixKv, PrefixLimits};
pub use codec::release::{decode_release, encode_release};
pub use codec::stage::{Product, ENCRYPTED_STAGES};
pub use codec::wire;
pub use embedded::generate_selective;
pub use error::{Error, Result};
pub use limits::Limits;
pub use policy::{Policy, PolicyGuard, ReleaseGuard, ReleaseRequest, Terms};
pub use quality::{compare_logits, Flip, LogitComparison};
pub use server::{
    check_token_strength, new_token, Connection, Counters, EarlyItem, EarlyWork, EncodedBytes,
    ModelServer, PlainTail, Prefetch, Prefetched, PreparedModel, PublicPrefix, SessionEvent,
    SessionServer, Streamed, MIN_TOKEN_BYTES,
};
pub use transport::{net, InProcess, Transport};
