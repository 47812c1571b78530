//! The client's session over any [`Transport`]: `Hello`, then numbered requests, each
//! reply checked for its request id and kind.

use std::collections::VecDeque;
use std::sync::Arc;

use selene_ckks::Parameters;
use selene_linalg::Layout;
use selene_model::{Config, LinearStage};

use crate::codec::prefix_kv::{PrefixKv, PrefixLimits};
use crate::codec::wire::{
    self, Ahead, Frame, Hello, Kind, Message, ProductRequest, Welcome, WIRE_VERSION,
};
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::policy::{Policy, ReleaseAuthorized};
use crate::transport::Transport;

/// Largest reply the client accepts to anything (a public prefix's keys and values can
/// be large; a server that sends more is not one to trust).
const CLIENT_MAX_REPLY: usize = 1 << 30;

/// Largest reply that carries no model data: an `Error` (its text is at most
/// [`wire::MAX_ERROR_BYTES`]) or `Close`.
const SMALL_REPLY: usize = 64 << 10;

/// Largest layout on the wire: a header and one `f64` scale per output column, for up to
/// 32,768 columns (SmolLM2's widest encrypted product has 1,536).
const MAX_LAYOUT_BYTES: usize = 64 + 8 * (1 << 15);

/// Most requests a session has sent and not yet read the replies of: a server of
/// [`WIRE_VERSION`] 3 reads one request ahead while it computes, so the second request's
/// upload overlaps the first's compute, and neither side blocks writing while the other
/// writes too (the server always reads the one request the client may send ahead).
pub const MAX_OUTSTANDING: usize = 2;

/// A product's answer is at most this many times its request, plus [`SMALL_REPLY`]. The
/// answer holds one output block per `k_o` columns of each token group where the request
/// holds one input block per `k_i` rows, each answer ciphertext cut to the download
/// modulus; `tls_replies_stay_within_the_client_bounds` (tests/tls.rs) measures the
/// largest ratio over every stage of both presets (1.27, `coeff12wide`'s QKV) and fails
/// if it passes half of this.
pub const PRODUCT_REPLY_FACTOR: usize = 8;

/// The largest reply `message` can legitimately get in a session with `welcome`'s model
/// facts, in bytes (length prefix excluded).
fn reply_bound(message: &Message, welcome: &Welcome) -> usize {
    let m = &welcome.model;
    let floats = |n: usize| n.saturating_mul(4);
    let bound = match message {
        Message::Product { ciphertext, .. } => ciphertext
            .len()
            .saturating_mul(PRODUCT_REPLY_FACTOR)
            .saturating_add(SMALL_REPLY),
        // A fused matrix has the shape of a stage's (`W' Wo` that of `GateUp`, `W'' Wdown`
        // a narrower `Down`), so each answer keeps within the same factor.
        Message::Products { items } => items
            .iter()
            .map(|i| i.ciphertext.len())
            .sum::<usize>()
            .saturating_mul(PRODUCT_REPLY_FACTOR)
            .saturating_add(SMALL_REPLY),
        // Logits or a hidden state of the last position, and the next token's q|k|v
        // (at most `3 d_model` wide).
        Message::Release { .. } => floats(
            (m.vocab as usize)
                .max(m.d_model as usize)
                .saturating_add(3 * m.d_model as usize),
        )
        .saturating_add(SMALL_REPLY),
        // Keys and values (each at most `d_model` wide) of every layer, per token.
        Message::PublicPrefix { tokens } => floats(
            tokens
                .len()
                .saturating_mul(m.layers as usize)
                .saturating_mul(2 * m.d_model as usize),
        )
        .saturating_add(SMALL_REPLY),
        _ => SMALL_REPLY,
    };
    bound.min(CLIENT_MAX_REPLY)
}

/// What a release returns, by where the policy runs the LM head.
#[derive(Clone, Debug, PartialEq)]
pub enum Released {
    /// The server ran the head: logits of the last position.
    Logits(Vec<f32>),
    /// The head is the client's: the final hidden state of the last position.
    Hidden(Vec<f32>),
}

/// An open session: the server's `Welcome`, the layouts to encrypt for, and the next
/// request id.
pub struct ClientSession<T: Transport> {
    transport: T,
    next_id: u64,
    welcome: Welcome,
    layouts: Vec<[Layout; 4]>,
    fused_layouts: Vec<Layout>,
    batched_layouts: Vec<[Layout; 4]>,
    round_trips: u64,
    limits: Limits,
    closed: bool,
    /// Requests sent, replies not yet read: id, kind and reply bound, oldest first.
    outstanding: VecDeque<(u64, Kind, usize)>,
}

impl<T: Transport> std::fmt::Debug for ClientSession<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("session_id", &self.welcome.session_id)
            .field("next_id", &self.next_id)
            .field("layers", &self.layouts.len())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl<T: Transport> ClientSession<T> {
    /// Opens a session: sends `Hello` (the transport's token, `policy`, the fingerprint of
    /// `params`, `context` positions) and checks the `Welcome` (one valid layout per
    /// encrypted product, for `params`).
    ///
    /// # Errors
    /// [`Error::Remote`] when the server refuses (wrong token, policy, parameters, full),
    /// channel errors, a malformed `Welcome`.
    pub fn open(
        mut transport: T,
        params: &Arc<Parameters>,
        policy: Policy,
        context: usize,
    ) -> Result<Self> {
        let k = policy.encrypted_layers;
        // A fused session has 2k - 1 more layouts, after the 4k of the stages.
        let fused = if policy.fused {
            (2 * k).saturating_sub(1)
        } else {
            0
        };
        let hello = Message::Hello(Hello {
            // Version 3: this client may send a request before the previous reply
            // (a long prompt's products), which a server that does not read ahead could
            // leave both sides writing; such a server refuses the version instead.
            protocol: WIRE_VERSION,
            token: transport.token().to_vec(),
            policy,
            params_fingerprint: params.fingerprint(),
            context: u32::try_from(context).unwrap_or(u32::MAX),
            eval_keys: Vec::new(),
        });
        let limits = Limits {
            max_message_bytes: CLIENT_MAX_REPLY,
            ..Limits::default()
        };
        let welcome_max = Limits {
            max_message_bytes: (8 * k + fused).saturating_mul(MAX_LAYOUT_BYTES) + SMALL_REPLY,
            ..Limits::default()
        };
        transport.limit_reply(welcome_max.max_message_bytes);
        let welcome = match exchange(&mut transport, &welcome_max, 1, hello)? {
            Message::Welcome(w) => w,
            m => return Err(unexpected(m, Kind::Hello)),
        };
        // The stages', the fused matrices' (fused sessions), then the batched stages' when
        // the server holds them.
        let n = welcome.layouts.len();
        if n != 4 * k + fused && n != 8 * k + fused {
            return Err(Error::Wire {
                what: "layout count in Welcome",
                offset: 0,
            });
        }
        let (stage_layouts, rest) = welcome.layouts.split_at(4 * k);
        let (fused_bytes, batched_bytes) = rest.split_at(fused);
        let fused_layouts = fused_bytes
            .iter()
            .map(|b| Layout::from_bytes(b, params))
            .collect::<selene_linalg::Result<Vec<_>>>()?;
        let layouts = four_per_layer(stage_layouts, params)?;
        let batched_layouts = four_per_layer(batched_bytes, params)?;
        Ok(Self {
            transport,
            next_id: 2,
            welcome,
            layouts,
            fused_layouts,
            batched_layouts,
            round_trips: 1,
            limits,
            closed: false,
            outstanding: VecDeque::new(),
        })
    }

    /// The server's `Welcome`.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Layouts per encrypted layer, in [`crate::ENCRYPTED_STAGES`] order.
    pub fn layouts(&self) -> &[[Layout; 4]] {
        &self.layouts
    }

    /// The batched layouts per encrypted layer (several rows per ciphertext, for a
    /// prompt's pass), empty when the server holds none.
    pub fn batched_layouts(&self) -> &[[Layout; 4]] {
        &self.batched_layouts
    }

    /// The fused matrices' layouts of a fused session, in
    /// [`selene_model::fused::fused_order`] (empty otherwise).
    pub fn fused_layouts(&self) -> &[Layout] {
        &self.fused_layouts
    }

    /// Request-reply exchanges so far, `Hello` included.
    pub fn round_trips(&self) -> u64 {
        self.round_trips
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport, mutably: for tests that break the framing inside an open session.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    fn request(&mut self, message: Message) -> Result<Message> {
        if !self.outstanding.is_empty() {
            return Err(Error::Pipeline {
                why: "a request while pipelined ones wait for their replies",
            });
        }
        self.send(message)?;
        self.receive()
    }

    /// Sends `message` without reading its reply ([`Self::receive`] reads replies in
    /// order). A request sent while others are outstanding costs no round trip of its
    /// own: its reply follows theirs.
    fn send(&mut self, message: Message) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        if self.outstanding.len() >= MAX_OUTSTANDING {
            return Err(Error::Pipeline {
                why: "more than two requests outstanding",
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        let kind = message.kind();
        let max = reply_bound(&message, &self.welcome);
        let request = wire::encode(&Frame {
            request_id: id,
            message,
        })?;
        if self.outstanding.is_empty() {
            self.round_trips += 1;
        }
        let sent = self.transport.send(&request);
        self.check_channel(&sent);
        sent?;
        self.outstanding.push_back((id, kind, max));
        Ok(())
    }

    /// Reads the reply to the oldest outstanding request and checks its id and kind.
    fn receive(&mut self) -> Result<Message> {
        let (id, kind, max) = self.outstanding.pop_front().ok_or(Error::Pipeline {
            why: "no request outstanding",
        })?;
        self.transport.limit_reply(max);
        let limits = Limits {
            max_message_bytes: max,
            ..self.limits.clone()
        };
        let reply = self
            .transport
            .receive()
            .and_then(|bytes| check_reply(&bytes, &limits, id, kind));
        self.check_channel(&reply);
        reply
    }

    /// A broken channel ends the session (nothing later can be matched to its request).
    fn check_channel<R>(&mut self, r: &Result<R>) {
        if matches!(r, Err(Error::Io(_) | Error::Closed | Error::Tls(_))) {
            self.closed = true;
        }
    }

    /// Sends one encrypted product request and returns the encrypted answer's bytes.
    ///
    /// # Errors
    /// [`Error::Remote`] (bad ciphertext, layer not encrypted), channel errors.
    pub fn product(
        &mut self,
        layer: usize,
        stage: LinearStage,
        ciphertext: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let m = Message::Product {
            layer: u32::try_from(layer).unwrap_or(u32::MAX),
            stage,
            ciphertext,
        };
        match self.request(m)? {
            Message::ProductResult { ciphertext } => Ok(ciphertext),
            m => Err(unexpected(m, Kind::Product)),
        }
    }

    /// Sends one encrypted product request without reading its answer: at most
    /// [`MAX_OUTSTANDING`] requests wait at once, and [`Self::receive_product`] reads
    /// their answers in order. A long prompt's product goes as several requests this
    /// way, each one's upload overlapping the server's work on the one before.
    ///
    /// # Errors
    /// Channel errors; [`Error::Pipeline`] with two requests already outstanding.
    pub fn send_product(
        &mut self,
        layer: usize,
        stage: LinearStage,
        ciphertext: Vec<u8>,
    ) -> Result<()> {
        self.send(Message::Product {
            layer: u32::try_from(layer).unwrap_or(u32::MAX),
            stage,
            ciphertext,
        })
    }

    /// The encrypted answer's bytes to the oldest request [`Self::send_product`] sent.
    ///
    /// # Errors
    /// [`Error::Remote`] (bad ciphertext, layer not encrypted), channel errors,
    /// [`Error::Pipeline`] with nothing outstanding.
    pub fn receive_product(&mut self) -> Result<Vec<u8>> {
        match self.receive()? {
            Message::ProductResult { ciphertext } => Ok(ciphertext),
            m => Err(unexpected(m, Kind::Product)),
        }
    }

    /// Reads and drops the replies of every outstanding request: after one of them
    /// failed, so later requests (`Close` among them) are not answered by stale replies.
    /// A reply that cannot be read ends the session.
    pub fn discard_outstanding(&mut self) {
        while !self.outstanding.is_empty() && !self.closed {
            let _ = self.receive();
        }
        self.outstanding.clear();
    }

    /// Sends several encrypted products in one request (a fused session's round trip)
    /// and returns their answers in order.
    ///
    /// # Errors
    /// [`Error::Remote`] (not a fused session, bad ciphertext), channel errors, an answer
    /// count that differs from the request's.
    pub fn products(&mut self, items: Vec<ProductRequest>) -> Result<Vec<Vec<u8>>> {
        let n = items.len();
        match self.request(Message::Products { items })? {
            Message::ProductResults { ciphertexts } if ciphertexts.len() == n => Ok(ciphertexts),
            Message::ProductResults { .. } => Err(Error::Wire {
                what: "answer count in ProductResults",
                offset: 0,
            }),
            m => Err(unexpected(m, Kind::Products)),
        }
    }

    /// Uploads the Galois keys packed layouts need (`codec::keys` bytes), once.
    ///
    /// # Errors
    /// [`Error::Remote`] (keys of other elements, a second upload, nothing packed),
    /// channel errors.
    pub fn upload_galois_keys(&mut self, bytes: Vec<u8>) -> Result<()> {
        match self.request(Message::GaloisKeys { bytes })? {
            Message::KeysAccepted => Ok(()),
            m => Err(unexpected(m, Kind::GaloisKeys)),
        }
    }

    /// Sends a release (`SELR` bytes) and returns the server's answer, with the next
    /// token ahead when the server sends one ([`Ahead`]: version-6 sessions). It takes
    /// the guard's proof that this release was authorized (and, under a keystore,
    /// logged), so a release without one does not compile.
    ///
    /// # Errors
    /// [`Error::Remote`] (policy without release, cap reached), channel errors.
    pub fn release(
        &mut self,
        bytes: Vec<u8>,
        _authorized: ReleaseAuthorized,
    ) -> Result<(Released, Option<Ahead>)> {
        match self.request(Message::Release { bytes })? {
            Message::Logits { values } => Ok((Released::Logits(values), None)),
            Message::HiddenState { values } => Ok((Released::Hidden(values), None)),
            Message::LogitsAhead { values, ahead } => Ok((Released::Logits(values), Some(ahead))),
            Message::HiddenAhead { values, ahead } => Ok((Released::Hidden(values), Some(ahead))),
            m => Err(unexpected(m, Kind::Release)),
        }
    }

    /// Sends a public prefix for the server to run in plaintext (the session's first
    /// request) and returns the keys and values of the layers this client runs, decoded
    /// for `config` and checked against its context length.
    ///
    /// # Errors
    /// The server's refusal, a malformed answer, channel errors.
    pub fn public_prefix(&mut self, tokens: &[u32], config: &Config) -> Result<PrefixKv> {
        match self.request(Message::PublicPrefix {
            tokens: tokens.to_vec(),
        })? {
            Message::PrefixKv { bytes } => {
                PrefixKv::from_bytes(&bytes, config, &PrefixLimits::for_config(config))
            }
            m => Err(unexpected(m, Kind::PublicPrefix)),
        }
    }

    /// Ends the session (the server frees it and closes the connection).
    ///
    /// # Errors
    /// Channel errors; [`Error::Closed`] when it already ended.
    pub fn close(&mut self) -> Result<()> {
        let r = self.request(Message::Close);
        self.closed = true;
        match r? {
            Message::Close => Ok(()),
            m => Err(unexpected(m, Kind::Close)),
        }
    }

    /// Sends raw frame bytes and returns the decoded reply: for tests of the server's
    /// handling of malformed input.
    ///
    /// # Errors
    /// Channel errors and a malformed reply.
    pub fn send_raw(&mut self, frame: &[u8]) -> Result<Frame> {
        let reply = self.transport.exchange(frame)?;
        wire::decode(&reply, &self.limits)
    }

    /// The next request id this session will use.
    pub fn next_request_id(&self) -> u64 {
        self.next_id
    }
}

fn unexpected(m: Message, to: Kind) -> Error {
    match m {
        Message::Error { code, message } => Error::Remote { code, message },
        m => Error::UnexpectedReply { got: m.kind(), to },
    }
}

/// One request, one reply with the same id.
fn exchange<T: Transport>(
    transport: &mut T,
    limits: &Limits,
    id: u64,
    message: Message,
) -> Result<Message> {
    let kind = message.kind();
    let request = wire::encode(&Frame {
        request_id: id,
        message,
    })?;
    check_reply(&transport.exchange(&request)?, limits, id, kind)
}

/// Decodes the reply to request `id` of `kind`: an `Error` or another id is an error.
fn check_reply(bytes: &[u8], limits: &Limits, id: u64, kind: Kind) -> Result<Message> {
    let reply = wire::decode(bytes, limits)?;
    match reply.message {
        e @ Message::Error { .. } => Err(unexpected(e, kind)),
        m if reply.request_id != id => Err(Error::UnexpectedReply {
            got: m.kind(),
            to: kind,
        }),
        m => Ok(m),
    }
}

/// Decodes layouts in wire form, four per layer.
fn four_per_layer(bytes: &[Vec<u8>], params: &Parameters) -> Result<Vec<[Layout; 4]>> {
    let mut layouts = Vec::with_capacity(bytes.len() / 4);
    for chunk in bytes.chunks_exact(4) {
        let mut one = Vec::with_capacity(4);
        for b in chunk {
            one.push(Layout::from_bytes(b, params)?);
        }
        let arr: [Layout; 4] = one.try_into().map_err(|_| Error::Wire {
            what: "layout count in Welcome",
            offset: 0,
        })?;
        layouts.push(arr);
    }
    Ok(layouts)
}
