//! The session protocol's wire format: one [`Message`] per frame.
//!
//! ```text
//! frame   = length u32 LE (bytes after this field)
//!           magic b"SELW" | version u16 LE | kind u8 | request id u64 LE | payload
//! ```
//! Strings and byte strings are a u32 LE length then the bytes; lists a u32 count then
//! the items; floats f32 LE. Ciphertexts, layouts and releases travel as the opaque bytes
//! of their own versioned formats (selene-linalg's `SLLA`, the release's `SELR`) and are
//! validated by their own decoders against the session's parameters.
//!
//! | kind | message | direction | reply |
//! |---|---|---|---|
//! | 1 | [`Hello`] | client | `Welcome` |
//! | 2 | [`Welcome`] | server | |
//! | 3 | `Product` | client | `ProductResult` |
//! | 4 | `ProductResult` | server | |
//! | 5 | `Release` | client | `Logits` (head on the server) or `HiddenState` (head on the client) |
//! | 6 | `Logits` | server | |
//! | 7 | `HiddenState` | server | |
//! | 8 | `Close` | client | `Close`, then the server ends the session and the connection |
//! | 9 | `Error` | server | |
//! | 10 | `PublicPrefix` | client, first request after `Hello` | `PrefixKv` |
//! | 11 | `PrefixKv` | server | |
//! | 12 | `GaloisKeys` | client | `KeysAccepted` |
//! | 13 | `KeysAccepted` | server | |
//! | 14 | `Products` | client, fused sessions | `ProductResults` |
//! | 15 | `ProductResults` | server | |
//! | 16 | `LogitsAhead` | server, version-6 sessions | |
//! | 17 | `HiddenAhead` | server, version-6 sessions | |
//!
//! Kinds 14 and 15 (one round trip for the products of a fused pair) are new in wire
//! version 2 and travel in version-2 frames; every other kind keeps its version-1 frame
//! ([`Kind::version`]). Version 3 adds no frame: a version-3 server reads the next
//! request while it answers one, so its client may send a request before it reads the
//! previous reply (at most [`crate::MAX_OUTSTANDING`] outstanding; replies come in
//! request order). The version a client names in `Hello` is the session's: this client
//! names 3, which an older server refuses rather than leave both sides writing.
//! Kinds 16 and 17 are new in version 6 and travel in version-6 frames: a version-6
//! session's server answers a `Release` with them, adding to the logits or the hidden
//! state its greedy next token and that token's first-layer q|k|v ([`Ahead`]).
//!
//! [`decode`] checks the length against [`Limits::max_message_bytes`], then magic,
//! version and kind, and every inner length against the bytes left (and its own bound)
//! before allocating; trailing bytes are an error. It never panics.

use std::ops::Range;

use selene_codec::{Reader, Writer};
use selene_model::LinearStage;

use crate::codec::stage::{stage_index, Product, ENCRYPTED_STAGES};
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::policy::Policy;

/// Magic at the start of every frame body.
pub const MAGIC: [u8; 4] = *b"SELW";
/// Version of the session protocol this build speaks. Version 2 added `Products` (fused
/// sessions); version 3 changes no frame: its server reads the next request while it
/// answers one, so its client may send a request before reading the previous reply
/// ([`crate::ClientSession::send_product`]). Version 4 changes no frame either: its
/// client's fresh ciphertexts expand their `c1` seeds by ChaCha8 (the ciphertext
/// format's flag 2, `selene_ckks::ring::sampler::Expansion`), which an older server
/// cannot read. Version 5 changes no frame: its client's uploads may round `c0` (the
/// ciphertext format's flag 3, `selene_ckks::Ciphertext::encode_rounded`; docs/packing.md,
/// "Rounded uploads"). A server refuses a `Hello` above its own version, so a newer
/// client never sends what an older server misreads; a version-5 server still reads the
/// whole `c0`s and ChaCha20 seeds of older clients. Version 6 adds `LogitsAhead` and
/// `HiddenAhead` ([`AHEAD_WIRE_VERSION`]), the answers to a version-6 session's `Release`.
pub const WIRE_VERSION: u16 = 6;
/// The version `Products` and `ProductResults` frames travel under.
pub const FUSED_WIRE_VERSION: u16 = 2;
/// The version `LogitsAhead` and `HiddenAhead` frames travel under, and the least session
/// version whose `Release` they answer.
pub const AHEAD_WIRE_VERSION: u16 = 6;
/// Oldest wire version this build decodes (kinds 1-13 unchanged since).
pub const MIN_WIRE_VERSION: u16 = 1;
/// Most products in one `Products` request (a fused pair needs three).
pub const MAX_BATCH_PRODUCTS: usize = 4;
/// Bytes before the payload: length, magic, version, kind, request id.
pub const HEADER_BYTES: usize = 4 + 4 + 2 + 1 + 8;
/// Longest bearer token accepted.
pub const MAX_TOKEN_BYTES: usize = 256;
/// Longest policy (TOML text) accepted.
pub const MAX_POLICY_BYTES: usize = 4096;
/// Longest preset name accepted.
pub const MAX_PRESET_BYTES: usize = 32;
/// Most evaluation keys in one `Hello` (the slot method's Galois keys number about 100).
pub const MAX_EVAL_KEYS: usize = 256;
/// Longest error text sent.
pub const MAX_ERROR_BYTES: usize = 1024;
/// Most tokens in a public prefix (SmolLM2's whole context).
pub const MAX_PREFIX_TOKENS: usize = 8192;
/// Most layouts in a `Welcome` (4 per layer, and 2 more per layer in a fused session).
pub const MAX_LAYOUTS: usize = 6 * 1024;

/// Message kinds, as on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[non_exhaustive]
pub enum Kind {
    /// Session setup.
    Hello = 1,
    /// Session accepted.
    Welcome = 2,
    /// An encrypted product request.
    Product = 3,
    /// Its encrypted answer.
    ProductResult = 4,
    /// A flooded hidden-state release.
    Release = 5,
    /// The server's logits after a release.
    Logits = 6,
    /// The server's final hidden state after a release (head on the client).
    HiddenState = 7,
    /// End of session.
    Close = 8,
    /// An error reply.
    Error = 9,
    /// A public prefix the server runs in plaintext.
    PublicPrefix = 10,
    /// The prefix's keys and values for the client's layers.
    PrefixKv = 11,
    /// The client's Galois keys for packed product outputs, once per session.
    GaloisKeys = 12,
    /// The server installed them.
    KeysAccepted = 13,
    /// Several encrypted products in one request (a fused pair), version 2.
    Products = 14,
    /// Their answers, in request order, version 2.
    ProductResults = 15,
    /// `Logits` with the server's greedy next token ahead, version 6.
    LogitsAhead = 16,
    /// `HiddenState` with the server's greedy next token ahead, version 6.
    HiddenAhead = 17,
}

impl Kind {
    /// The frame version this kind travels under: 2 for `Products` and
    /// `ProductResults`, 6 for `LogitsAhead` and `HiddenAhead`, 1 for the rest, so a
    /// version-1 peer reads every session that does not fuse.
    pub fn version(self) -> u16 {
        match self {
            Kind::Products | Kind::ProductResults => FUSED_WIRE_VERSION,
            Kind::LogitsAhead | Kind::HiddenAhead => AHEAD_WIRE_VERSION,
            _ => MIN_WIRE_VERSION,
        }
    }

    fn from_u8(v: u8) -> Option<Self> {
        use Kind::*;
        [
            Hello,
            Welcome,
            Product,
            ProductResult,
            Release,
            Logits,
            HiddenState,
            Close,
            Error,
            PublicPrefix,
            PrefixKv,
            GaloisKeys,
            KeysAccepted,
            Products,
            ProductResults,
            LogitsAhead,
            HiddenAhead,
        ]
        .into_iter()
        .find(|k| *k as u8 == v)
    }
}

/// Stable error codes of `Error` replies (never renumbered; new codes are appended).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame does not decode.
    Malformed = 1,
    /// Unknown protocol version.
    UnsupportedVersion = 2,
    /// Wrong or missing bearer token.
    Unauthorized = 3,
    /// The policy is incoherent or not servable.
    PolicyRejected = 4,
    /// The client's preset or parameters differ from the server's.
    ParamsMismatch = 5,
    /// Evaluation keys of the wrong kind, size or number.
    KeysRejected = 6,
    /// The server is at its session limit.
    TooManySessions = 7,
    /// A request before `Hello`.
    NoSession = 8,
    /// A second `Hello` on an open session.
    AlreadyOpen = 9,
    /// A request id not above the last one (replayed or reordered).
    BadRequestId = 10,
    /// A frame above the size limit (the connection is closed).
    MessageTooLarge = 11,
    /// A ciphertext or release its decoder rejects.
    BadPayload = 12,
    /// A request the session's policy does not allow.
    NotAllowed = 13,
    /// The session passed its idle timeout or lifetime.
    SessionExpired = 14,
    /// The session used up its requests.
    RequestLimit = 15,
    /// The server failed on a valid request.
    Internal = 16,
    /// A message the server never accepts from a client.
    UnexpectedMessage = 17,
}

impl ErrorCode {
    fn from_u16(v: u16) -> Option<Self> {
        use ErrorCode::*;
        [
            Malformed,
            UnsupportedVersion,
            Unauthorized,
            PolicyRejected,
            ParamsMismatch,
            KeysRejected,
            TooManySessions,
            NoSession,
            AlreadyOpen,
            BadRequestId,
            MessageTooLarge,
            BadPayload,
            NotAllowed,
            SessionExpired,
            RequestLimit,
            Internal,
            UnexpectedMessage,
        ]
        .into_iter()
        .find(|k| *k as u16 == v)
    }
}

/// An evaluation key the policy needs (kind 1: a Galois key set for the slot method).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvalKey {
    /// What the key is for.
    pub kind: u8,
    /// The key in the CKKS engine's serialization.
    pub bytes: Vec<u8>,
}

/// Session setup: who the client is, what it wants and what it brings.
#[derive(Clone, PartialEq)]
pub struct Hello {
    /// Protocol version the client speaks ([`WIRE_VERSION`]).
    pub protocol: u16,
    /// The bearer token (the server stores only its SHA-256).
    pub token: Vec<u8>,
    /// The client's policy.
    pub policy: Policy,
    /// Fingerprint of the client's CKKS parameters.
    pub params_fingerprint: [u8; 8],
    /// Positions (prompt plus generated tokens) the session will use.
    pub context: u32,
    /// Evaluation keys the policy needs (none for the coefficient method).
    pub eval_keys: Vec<EvalKey>,
}

impl std::fmt::Debug for Hello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hello")
            .field("protocol", &self.protocol)
            .field("token", &"[redacted]")
            .field("policy", &self.policy)
            .field("params_fingerprint", &self.params_fingerprint)
            .field("context", &self.context)
            .field("eval_keys", &self.eval_keys.len())
            .finish()
    }
}

/// What a version-6 server adds to its answer to a `Release`: the token the plaintext
/// tail's logits rank first for the next position, and that token's first-layer q|k|v
/// (`rms_norm(embed(token)) W_qkv^T` with the gain, without the bias), which the client
/// uses instead of the first encrypted product of the next position when it samples
/// that token. The server computed the logits, so it knows the token either way.
#[derive(Clone, Debug, PartialEq)]
pub struct Ahead {
    /// The greedy next token.
    pub token: u32,
    /// Its layer-0 q|k|v (`qkv_dim` values).
    pub qkv: Vec<f32>,
}

/// One product of a `Products` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductRequest {
    /// Layer.
    pub layer: u32,
    /// Which matrix of the layer.
    pub product: Product,
    /// The encrypted input's wire bytes.
    pub ciphertext: Vec<u8>,
}

/// Public facts about the served model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelFacts {
    /// Transformer layers.
    pub layers: u32,
    /// Hidden width.
    pub d_model: u32,
    /// Vocabulary size.
    pub vocab: u32,
    /// The model fingerprint (`selene_model::Weights::fingerprint`: header, tensor index
    /// and the client bundle's tensors; all zero when the server does not know it).
    pub fingerprint: [u8; 32],
}

/// The limits a session runs under, as the server tells the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// Largest frame accepted.
    pub max_message_bytes: u32,
    /// Requests per session.
    pub max_requests: u64,
    /// Idle timeout, milliseconds.
    pub idle_timeout_ms: u64,
    /// Session lifetime, milliseconds.
    pub lifetime_ms: u64,
}

/// Session accepted.
#[derive(Clone, Debug, PartialEq)]
pub struct Welcome {
    /// The session's id (for logs).
    pub session_id: u64,
    /// The model.
    pub model: ModelFacts,
    /// The session's limits.
    pub limits: SessionLimits,
    /// Serialized layouts of the encrypted products, 4 per encrypted layer in
    /// [`ENCRYPTED_STAGES`] order.
    pub layouts: Vec<Vec<u8>>,
}

/// Every message of the protocol.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Message {
    /// Session setup.
    Hello(Hello),
    /// Session accepted.
    Welcome(Welcome),
    /// An encrypted product of `layer`'s `stage` (an [`ENCRYPTED_STAGES`] entry).
    Product {
        /// Layer.
        layer: u32,
        /// Stage.
        stage: LinearStage,
        /// The encrypted input's wire bytes.
        ciphertext: Vec<u8>,
    },
    /// The encrypted output's wire bytes.
    ProductResult {
        /// Ciphertext bytes.
        ciphertext: Vec<u8>,
    },
    /// A flooded release of the residual stream (`SELR` bytes).
    Release {
        /// Release bytes.
        bytes: Vec<u8>,
    },
    /// Logits of the last released position.
    Logits {
        /// One per vocabulary entry.
        values: Vec<f32>,
    },
    /// The final hidden state of the last released position (before the final norm).
    HiddenState {
        /// `d_model` values.
        values: Vec<f32>,
    },
    /// `Logits`, and the next token ahead (a version-6 session's answer to `Release`).
    LogitsAhead {
        /// One per vocabulary entry.
        values: Vec<f32>,
        /// The greedy next token and its first-layer q|k|v.
        ahead: Ahead,
    },
    /// `HiddenState`, and the next token ahead (a version-6 session's answer to
    /// `Release`, head on the client).
    HiddenAhead {
        /// `d_model` values.
        values: Vec<f32>,
        /// The greedy next token and its first-layer q|k|v.
        ahead: Ahead,
    },
    /// A public prefix (system prompt, public document) for the server to run in
    /// plaintext before any private token.
    PublicPrefix {
        /// The prefix's token ids.
        tokens: Vec<u32>,
    },
    /// The prefix's keys and values for the layers the client runs (`SELP` bytes).
    PrefixKv {
        /// `PrefixKv` wire bytes.
        bytes: Vec<u8>,
    },
    /// The client's Galois keys for packing (`codec::keys` bytes), once per session.
    GaloisKeys {
        /// Key-set bytes.
        bytes: Vec<u8>,
    },
    /// The server installed the Galois keys.
    KeysAccepted,
    /// Several products answered in one reply (at most [`MAX_BATCH_PRODUCTS`]).
    Products {
        /// The products, each with its own ciphertext.
        items: Vec<ProductRequest>,
    },
    /// The answers of a `Products` request, in its order.
    ProductResults {
        /// One ciphertext per requested product.
        ciphertexts: Vec<Vec<u8>>,
    },
    /// End of session.
    Close,
    /// An error reply.
    Error {
        /// Stable code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
}

impl Message {
    /// This message's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello(_) => Kind::Hello,
            Message::Welcome(_) => Kind::Welcome,
            Message::Product { .. } => Kind::Product,
            Message::ProductResult { .. } => Kind::ProductResult,
            Message::Release { .. } => Kind::Release,
            Message::Logits { .. } => Kind::Logits,
            Message::HiddenState { .. } => Kind::HiddenState,
            Message::LogitsAhead { .. } => Kind::LogitsAhead,
            Message::HiddenAhead { .. } => Kind::HiddenAhead,
            Message::PublicPrefix { .. } => Kind::PublicPrefix,
            Message::PrefixKv { .. } => Kind::PrefixKv,
            Message::GaloisKeys { .. } => Kind::GaloisKeys,
            Message::KeysAccepted => Kind::KeysAccepted,
            Message::Products { .. } => Kind::Products,
            Message::ProductResults { .. } => Kind::ProductResults,
            Message::Close => Kind::Close,
            Message::Error { .. } => Kind::Error,
        }
    }

    /// An error reply, its text cut to [`MAX_ERROR_BYTES`].
    pub fn error(code: ErrorCode, message: impl std::fmt::Display) -> Self {
        let mut message = message.to_string();
        if message.len() > MAX_ERROR_BYTES {
            let mut cut = MAX_ERROR_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        Message::Error { code, message }
    }
}

/// One message with its request id (a reply carries the id of its request).
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// Request id: strictly increasing per session.
    pub request_id: u64,
    /// The message.
    pub message: Message,
}

/// Encodes a frame, length prefix included.
///
/// # Errors
/// [`Error::Wire`] for a field above the bound [`decode`] enforces (the peer would refuse
/// the frame, so it never leaves): a token, evaluation-key or layout list, prefix or
/// error text too long, or a `Hello` whose policy cannot be written as TOML or prints
/// longer than [`MAX_POLICY_BYTES`] (never for a validated policy: its preset is one of a
/// few names).
pub fn encode(frame: &Frame) -> Result<Vec<u8>> {
    let mut w = Writer::with_capacity(HEADER_BYTES + payload_hint(&frame.message));
    // The length, patched in at the end.
    w.u32(0);
    let kind = frame.message.kind();
    w.header(&MAGIC, kind.version());
    w.u8(kind as u8);
    w.u64(frame.request_id);
    match &frame.message {
        Message::Hello(h) => {
            w.u16(h.protocol);
            w.bytes_u32("token", &h.token, MAX_TOKEN_BYTES)?;
            // What `decode` accepts: a policy is printed anew, not copied from its text,
            // so its length is checked here too; a frame the peer refuses must not leave.
            let policy = h.policy.to_toml()?;
            w.bytes_u32("policy", policy.as_bytes(), MAX_POLICY_BYTES)?;
            w.raw(&h.params_fingerprint);
            w.u32(h.context);
            w.count_u32("evaluation key count", h.eval_keys.len(), MAX_EVAL_KEYS)?;
            for k in &h.eval_keys {
                w.u8(k.kind);
                w.bytes_u32("evaluation key", &k.bytes, usize::MAX)?;
            }
        }
        Message::Welcome(welcome) => {
            w.u64(welcome.session_id);
            for v in [
                welcome.model.layers,
                welcome.model.d_model,
                welcome.model.vocab,
            ] {
                w.u32(v);
            }
            w.raw(&welcome.model.fingerprint);
            w.u32(welcome.limits.max_message_bytes);
            for v in [
                welcome.limits.max_requests,
                welcome.limits.idle_timeout_ms,
                welcome.limits.lifetime_ms,
            ] {
                w.u64(v);
            }
            w.count_u32("layout count", welcome.layouts.len(), MAX_LAYOUTS)?;
            for l in &welcome.layouts {
                w.bytes_u32("layout", l, usize::MAX)?;
            }
        }
        Message::Product {
            layer,
            stage,
            ciphertext,
        } => {
            w.u32(*layer);
            // A stage outside ENCRYPTED_STAGES is sent as 255, which decoding refuses.
            w.u8(stage_index(*stage).map_or(u8::MAX, |i| i as u8));
            w.bytes_u32("ciphertext", ciphertext, usize::MAX)?;
        }
        Message::ProductResult { ciphertext } => {
            w.bytes_u32("ciphertext", ciphertext, usize::MAX)?
        }
        Message::Products { items } => {
            w.count_u32("product count", items.len(), MAX_BATCH_PRODUCTS)?;
            for it in items {
                w.u32(it.layer);
                w.u8(it.product.to_byte());
                w.bytes_u32("ciphertext", &it.ciphertext, usize::MAX)?;
            }
        }
        Message::ProductResults { ciphertexts } => {
            w.count_u32("product count", ciphertexts.len(), MAX_BATCH_PRODUCTS)?;
            for c in ciphertexts {
                w.bytes_u32("ciphertext", c, usize::MAX)?;
            }
        }
        Message::Release { bytes }
        | Message::PrefixKv { bytes }
        | Message::GaloisKeys { bytes } => w.bytes_u32("payload", bytes, usize::MAX)?,
        Message::PublicPrefix { tokens } => {
            w.count_u32("prefix token count", tokens.len(), MAX_PREFIX_TOKENS)?;
            for &t in tokens {
                w.u32(t);
            }
        }
        Message::Logits { values } | Message::HiddenState { values } => {
            write_floats(&mut w, values)?;
        }
        Message::LogitsAhead { values, ahead } | Message::HiddenAhead { values, ahead } => {
            write_floats(&mut w, values)?;
            w.u32(ahead.token);
            write_floats(&mut w, &ahead.qkv)?;
        }
        Message::Close | Message::KeysAccepted => {}
        Message::Error { code, message } => {
            w.u16(*code as u16);
            w.bytes_u32("error text", message.as_bytes(), MAX_ERROR_BYTES)?;
        }
    }
    let mut out = w.into_bytes();
    // Every frame is bounded by the frame limit, which is below 4 GiB.
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_le_bytes());
    Ok(out)
}

fn payload_hint(m: &Message) -> usize {
    match m {
        Message::Product { ciphertext, .. } | Message::ProductResult { ciphertext } => {
            ciphertext.len() + 16
        }
        Message::Products { items } => items.iter().map(|i| i.ciphertext.len() + 16).sum(),
        Message::ProductResults { ciphertexts } => ciphertexts.iter().map(|c| c.len() + 8).sum(),
        Message::Release { bytes }
        | Message::PrefixKv { bytes }
        | Message::GaloisKeys { bytes } => bytes.len() + 8,
        Message::PublicPrefix { tokens } => 4 * tokens.len() + 8,
        Message::Logits { values } | Message::HiddenState { values } => 4 * values.len() + 8,
        Message::LogitsAhead { values, ahead } | Message::HiddenAhead { values, ahead } => {
            4 * (values.len() + ahead.qkv.len()) + 20
        }
        _ => 64,
    }
}

/// Checks a frame's 4-byte length prefix against the limits and returns the number of
/// bytes that follow it: a stream reader calls this before reading (or allocating) the
/// body.
///
/// # Errors
/// [`Error::FrameTooLarge`] above [`Limits::max_message_bytes`], [`Error::Wire`] below
/// the fixed header.
pub fn body_len(prefix: [u8; 4], limits: &Limits) -> Result<usize> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > limits.max_message_bytes {
        return Err(Error::FrameTooLarge {
            len,
            max: limits.max_message_bytes,
        });
    }
    if len < HEADER_BYTES - 4 {
        return Err(Error::Wire {
            what: "frame shorter than its header",
            offset: 0,
        });
    }
    Ok(len)
}

/// `n` finite f32 values behind a u32 count.
fn write_floats(w: &mut Writer, values: &[f32]) -> Result<()> {
    w.count_u32("value count", values.len(), usize::MAX)?;
    for &x in values {
        w.f32(x);
    }
    Ok(())
}

fn floats(rd: &mut Reader<'_>, what: &'static str) -> Result<Vec<f32>> {
    let n = rd.count_u32(what, usize::MAX, 4)?;
    let v = (0..n)
        .map(|_| rd.f32(what))
        .collect::<selene_codec::Result<Vec<f32>>>()?;
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::Wire {
            what,
            offset: rd.offset(),
        });
    }
    Ok(v)
}

fn ahead(rd: &mut Reader<'_>) -> Result<Ahead> {
    Ok(Ahead {
        token: rd.u32("next token")?,
        qkv: floats(rd, "next token's q|k|v")?,
    })
}

/// One item of a `Products` request: its layer, product and ciphertext bytes.
fn product_item<'a>(rd: &mut Reader<'a>) -> Result<(u32, Product, &'a [u8])> {
    let layer = rd.u32("layer")?;
    let at = rd.offset();
    let product = Product::from_byte(rd.u8("product")?).ok_or(Error::Wire {
        what: "product",
        offset: at,
    })?;
    Ok((layer, product, rd.bytes_u32("ciphertext", usize::MAX)?))
}

/// An item of a `Products` frame whose bytes have all arrived ([`ready_products`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyProduct {
    /// Its position in the request.
    pub index: usize,
    /// Layer.
    pub layer: u32,
    /// Which matrix of the layer.
    pub product: Product,
    /// Where its ciphertext bytes sit in the frame (length prefix included).
    pub ciphertext: Range<usize>,
}

/// The items of a `Products` frame that lie whole in `prefix`, the frame's first bytes
/// (length prefix included), in order: a server starts on them while the rest of the
/// request uploads. Empty for any other kind, and from the first field [`decode`] would
/// refuse; each item is read by the code `decode` reads it with, so when the whole frame
/// decodes, its items begin with these.
pub fn ready_products(prefix: &[u8], limits: &Limits) -> Vec<ReadyProduct> {
    let mut rd = Reader::new(prefix);
    let Some(n) = products_count(&mut rd, limits) else {
        return Vec::new();
    };
    let mut ready = Vec::with_capacity(n);
    for index in 0..n {
        let Ok((layer, product, bytes)) = product_item(&mut rd) else {
            break;
        };
        let end = rd.offset();
        ready.push(ReadyProduct {
            index,
            layer,
            product,
            ciphertext: end - bytes.len()..end,
        });
    }
    ready
}

/// The item of a `Products` frame whose bytes are arriving: `prefix` holds the frame's
/// first bytes (length prefix included) and every earlier item whole, and the item's
/// ciphertext begins in `prefix` and ends past it, inside the frame (`ciphertext` is its
/// whole range). `None` otherwise, for any other kind, and from the first field
/// [`decode`] would refuse. A server streams this item's product
/// ([`crate::Prefetch::stream`]) until its bytes are whole; items that arrive whole in
/// one read are left to [`ready_products`].
pub fn arriving_product(prefix: &[u8], limits: &Limits) -> Option<ReadyProduct> {
    let mut rd = Reader::new(prefix);
    let n = products_count(&mut rd, limits)?;
    let frame_end = 4 + body_len(prefix.get(..4)?.try_into().ok()?, limits).ok()?;
    for index in 0..n {
        let mut head = rd.clone();
        let layer = head.u32("layer").ok()?;
        let product = Product::from_byte(head.u8("product").ok()?)?;
        let len = head.u32("ciphertext length").ok()? as usize;
        let start = head.offset();
        if start + len > prefix.len() {
            return (start + len <= frame_end).then_some(ReadyProduct {
                index,
                layer,
                product,
                ciphertext: start..start + len,
            });
        }
        product_item(&mut rd).ok()?;
    }
    None
}

/// Reads a `Products` frame's header and item count, as [`decode`] does (but for the
/// count's room check: the items may not have arrived); `None` for another kind or a
/// refused field.
fn products_count(rd: &mut Reader<'_>, limits: &Limits) -> Option<usize> {
    body_len(rd.array("length prefix").ok()?, limits).ok()?;
    let version = rd
        .header(&MAGIC, MIN_WIRE_VERSION..=AHEAD_WIRE_VERSION)
        .ok()?;
    let kind = Kind::from_u8(rd.u8("kind").ok()?)?;
    if kind != Kind::Products || kind.version() != version {
        return None;
    }
    rd.u64("request id").ok()?;
    rd.count_u32("product count", MAX_BATCH_PRODUCTS, 0).ok()
}

/// Decodes one frame (length prefix included), checking every length against `limits`
/// and the bytes present before allocating.
///
/// # Errors
/// [`Error::FrameTooLarge`] or [`Error::Wire`] naming the first bad field; a policy that
/// does not parse is [`Error::PolicyParse`] (its coherence is the session's business).
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Frame> {
    let mut rd = Reader::new(bytes);
    let len = body_len(rd.array("length prefix")?, limits)?;
    if len != rd.remaining() {
        return Err(Error::Wire {
            what: "length prefix differs from the frame",
            offset: rd.offset(),
        });
    }
    let version = rd.header(&MAGIC, MIN_WIRE_VERSION..=AHEAD_WIRE_VERSION)?;
    let at = rd.offset();
    // Each kind travels under exactly one version (so every frame has one encoding).
    let kind = Kind::from_u8(rd.u8("kind")?)
        .filter(|k| k.version() == version)
        .ok_or(Error::Wire {
            what: "kind",
            offset: at,
        })?;
    let request_id = rd.u64("request id")?;
    let message = match kind {
        Kind::Hello => {
            let protocol = rd.u16("protocol version")?;
            let token = rd.bytes_u32("token", MAX_TOKEN_BYTES)?.to_vec();
            let policy = Policy::parse_toml(rd.str_u32("policy", MAX_POLICY_BYTES)?)?;
            let params_fingerprint = rd.array("parameter fingerprint")?;
            let context = rd.u32("context")?;
            // Each key takes at least its kind byte and its 4-byte length.
            let n = rd.count_u32("evaluation key count", MAX_EVAL_KEYS, 5)?;
            let mut eval_keys = Vec::with_capacity(n);
            for _ in 0..n {
                let kind = rd.u8("evaluation key kind")?;
                let bytes = rd.bytes_u32("evaluation key", usize::MAX)?.to_vec();
                eval_keys.push(EvalKey { kind, bytes });
            }
            Message::Hello(Hello {
                protocol,
                token,
                policy,
                params_fingerprint,
                context,
                eval_keys,
            })
        }
        Kind::Welcome => {
            let session_id = rd.u64("session id")?;
            let model = ModelFacts {
                layers: rd.u32("layers")?,
                d_model: rd.u32("d_model")?,
                vocab: rd.u32("vocab")?,
                fingerprint: rd.array("model fingerprint")?,
            };
            let limits = SessionLimits {
                max_message_bytes: rd.u32("limit")?,
                max_requests: rd.u64("limit")?,
                idle_timeout_ms: rd.u64("limit")?,
                lifetime_ms: rd.u64("limit")?,
            };
            let n = rd.count_u32("layout count", MAX_LAYOUTS, 4)?;
            let mut layouts = Vec::with_capacity(n);
            for _ in 0..n {
                layouts.push(rd.bytes_u32("layout", usize::MAX)?.to_vec());
            }
            Message::Welcome(Welcome {
                session_id,
                model,
                limits,
                layouts,
            })
        }
        Kind::Product => {
            let layer = rd.u32("layer")?;
            let at = rd.offset();
            let stage = *ENCRYPTED_STAGES
                .get(usize::from(rd.u8("stage")?))
                .ok_or(Error::Wire {
                    what: "stage",
                    offset: at,
                })?;
            let ciphertext = rd.bytes_u32("ciphertext", usize::MAX)?.to_vec();
            Message::Product {
                layer,
                stage,
                ciphertext,
            }
        }
        Kind::ProductResult => Message::ProductResult {
            ciphertext: rd.bytes_u32("ciphertext", usize::MAX)?.to_vec(),
        },
        Kind::Products => {
            // Each item takes at least its layer, product byte and ciphertext length.
            let n = rd.count_u32("product count", MAX_BATCH_PRODUCTS, 9)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                let (layer, product, ciphertext) = product_item(&mut rd)?;
                items.push(ProductRequest {
                    layer,
                    product,
                    ciphertext: ciphertext.to_vec(),
                });
            }
            Message::Products { items }
        }
        Kind::ProductResults => {
            let n = rd.count_u32("product count", MAX_BATCH_PRODUCTS, 4)?;
            let mut ciphertexts = Vec::with_capacity(n);
            for _ in 0..n {
                ciphertexts.push(rd.bytes_u32("ciphertext", usize::MAX)?.to_vec());
            }
            Message::ProductResults { ciphertexts }
        }
        Kind::Release => Message::Release {
            bytes: rd.bytes_u32("release", usize::MAX)?.to_vec(),
        },
        Kind::Logits => Message::Logits {
            values: floats(&mut rd, "logits")?,
        },
        Kind::HiddenState => Message::HiddenState {
            values: floats(&mut rd, "hidden state")?,
        },
        Kind::LogitsAhead => Message::LogitsAhead {
            values: floats(&mut rd, "logits")?,
            ahead: ahead(&mut rd)?,
        },
        Kind::HiddenAhead => Message::HiddenAhead {
            values: floats(&mut rd, "hidden state")?,
            ahead: ahead(&mut rd)?,
        },
        Kind::Close => Message::Close,
        Kind::Error => {
            let at = rd.offset();
            let code = ErrorCode::from_u16(rd.u16("error code")?).ok_or(Error::Wire {
                what: "error code",
                offset: at,
            })?;
            let message = rd.str_u32("error text", MAX_ERROR_BYTES)?.to_string();
            Message::Error { code, message }
        }
        Kind::PublicPrefix => {
            let n = rd.count_u32("prefix token count", MAX_PREFIX_TOKENS, 4)?;
            let mut tokens = Vec::with_capacity(n);
            for _ in 0..n {
                tokens.push(rd.u32("prefix token")?);
            }
            Message::PublicPrefix { tokens }
        }
        Kind::PrefixKv => Message::PrefixKv {
            bytes: rd.bytes_u32("prefix keys and values", usize::MAX)?.to_vec(),
        },
        Kind::GaloisKeys => Message::GaloisKeys {
            bytes: rd.bytes_u32("Galois keys", usize::MAX)?.to_vec(),
        },
        Kind::KeysAccepted => Message::KeysAccepted,
    };
    rd.expect_end()?;
    Ok(Frame {
        request_id,
        message,
    })
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
