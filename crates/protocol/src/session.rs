//! The server's session state machine, shared by every connection and independent of the
//! transport: [`SessionServer`] holds the prepared model, the accepted token hashes, the
//! limits and the counters; each connection drives one [`Connection`], which turns one
//! request frame into one reply frame.
//!
//! A connection is `Idle` until a valid `Hello` opens its session (version, token, policy,
//! parameters, keys and the session limit are all checked before anything is allocated);
//! then it answers requests in order, each with a request id above the last. The session
//! ends on `Close`, when the connection is dropped (the peer vanished), at its idle
//! timeout or lifetime, or when it has used its requests; ending it frees its tail state
//! and keys. A malformed frame gets an `Error` reply and touches no other session.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use selene_linalg::LinalgPreset;
use selene_model::{Logits, Weights};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::Error;
use crate::limits::Limits;
use crate::policy::{HeadSide, Policy};
use crate::prefix::PublicPrefix;
use crate::prepared::PreparedModel;
use crate::selective::{decode_release, TailOutput, TailState};
use crate::server::ModelServer;
use crate::wire::{
    self, ErrorCode, Frame, Hello, Message, ModelFacts, SessionLimits, Welcome, WIRE_VERSION,
};

/// Counters for monitoring and for tests that check sessions are freed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Sessions open now.
    pub sessions_open: usize,
    /// Sessions opened since the server started.
    pub sessions_ever: u64,
    /// Frame bytes received.
    pub bytes_in: u64,
    /// Frame bytes sent.
    pub bytes_out: u64,
    /// Error replies sent.
    pub errors: u64,
}

/// A session opening or ending, for the server's log.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// A session opened with `encrypted_layers` encrypted layers.
    Opened {
        /// Session id.
        id: u64,
        /// Encrypted layers of its policy.
        encrypted_layers: usize,
    },
    /// A session ended.
    Closed {
        /// Session id.
        id: u64,
        /// Why: "close", "disconnect", "idle timeout", "lifetime", "request limit".
        reason: &'static str,
        /// Requests it made.
        requests: u64,
    },
}

impl std::fmt::Display for SessionEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionEvent::Opened {
                id,
                encrypted_layers,
            } => write!(
                f,
                "session {id} opened: {encrypted_layers} encrypted layers"
            ),
            SessionEvent::Closed {
                id,
                reason,
                requests,
            } => write!(
                f,
                "session {id} closed ({reason}) after {requests} requests"
            ),
        }
    }
}

type EventSink = Box<dyn Fn(&SessionEvent) + Send + Sync>;

/// One preset's prepared model, as sessions that name the preset use it.
struct ServedModel {
    /// The preset of its parameters (`None`: no preset, so no `Hello` matches).
    preset: Option<LinalgPreset>,
    products: ModelServer,
    /// Its layouts in wire form, four per layer.
    layouts: Vec<Vec<u8>>,
}

impl ServedModel {
    fn new(model: Arc<PreparedModel>) -> Self {
        let preset = LinalgPreset::of(model.params());
        let layouts = model
            .layouts()
            .iter()
            .flat_map(|l| l.iter().map(|x| x.to_bytes()))
            .collect();
        Self {
            preset,
            products: ModelServer::new(model),
            layouts,
        }
    }
}

/// The state all connections share: the prepared model of each preset served, the token
/// hashes, the limits.
pub struct SessionServer {
    models: Vec<ServedModel>,
    weights: Option<Arc<Weights>>,
    n_layers: Option<usize>,
    context_length: usize,
    facts: ModelFacts,
    token_hashes: Vec<[u8; 32]>,
    limits: Limits,
    open: AtomicUsize,
    ever: AtomicU64,
    next_id: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    errors: AtomicU64,
    events: Option<EventSink>,
}

impl std::fmt::Debug for SessionServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let presets: Vec<_> = self.models.iter().map(|m| m.preset).collect();
        f.debug_struct("SessionServer")
            .field("presets", &presets)
            .field("facts", &self.facts)
            .field("tokens", &self.token_hashes.len())
            .field("limits", &self.limits)
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

impl SessionServer {
    /// A server for `model` (prepared from `weights`, any number of leading layers) that
    /// also runs selective mode's plaintext tail. Accepts no token until
    /// [`SessionServer::with_token`] adds one. Hashes the model file once (its
    /// fingerprint goes to every client).
    ///
    pub fn new(model: Arc<PreparedModel>, weights: Arc<Weights>, limits: Limits) -> Self {
        let c = weights.config();
        let facts = ModelFacts {
            layers: c.n_layers as u32,
            d_model: c.d_model as u32,
            vocab: c.vocab_size as u32,
            fingerprint: Sha256::digest(weights.gguf().bytes()).into(),
        };
        let (n_layers, context_length) = (c.n_layers, c.context_length);
        Self::build(
            model,
            Some(weights),
            Some(n_layers),
            context_length,
            facts,
            limits,
        )
    }

    /// A server for `model` without weights, so without a plaintext tail: sessions with
    /// a release policy open (the caller may run the tail itself, as
    /// [`crate::generate_selective`] does) but a `Release` is refused. What
    /// [`crate::InProcess::new`] embeds.
    pub fn strict_only(model: Arc<PreparedModel>, limits: Limits) -> Self {
        let layouts = model.layouts();
        let d_model = layouts.first().map_or(0, |l| l[0].shape().d_in);
        let facts = ModelFacts {
            layers: model.layers() as u32,
            d_model: d_model as u32,
            vocab: 0,
            fingerprint: [0; 32],
        };
        Self::build(model, None, None, usize::MAX, facts, limits)
    }

    fn build(
        model: Arc<PreparedModel>,
        weights: Option<Arc<Weights>>,
        n_layers: Option<usize>,
        context_length: usize,
        facts: ModelFacts,
        limits: Limits,
    ) -> Self {
        Self {
            models: vec![ServedModel::new(model)],
            weights,
            n_layers,
            context_length,
            facts,
            token_hashes: Vec::new(),
            limits,
            open: AtomicUsize::new(0),
            ever: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            events: None,
        }
    }

    /// Also serves sessions that name `model`'s preset: e.g. the full depth at `coeff12`
    /// for strict sessions plus the first few layers at
    /// [`crate::policy::SELECTIVE_PRESET`] for selective ones (selective sessions only
    /// need layers `0..k`, so preparing all of them twice would waste memory). A model
    /// for a preset already served replaces it. Each session uses the model of the preset
    /// its policy names.
    #[must_use]
    pub fn with_model(mut self, model: Arc<PreparedModel>) -> Self {
        let m = ServedModel::new(model);
        self.models.retain(|x| x.preset != m.preset);
        self.models.push(m);
        self
    }

    /// Accepts `token` as a bearer token; only its SHA-256 is kept.
    #[must_use]
    pub fn with_token(self, token: &[u8]) -> Self {
        self.with_token_hash(Sha256::digest(token).into())
    }

    /// Accepts the token whose SHA-256 is `hash`.
    #[must_use]
    pub fn with_token_hash(mut self, hash: [u8; 32]) -> Self {
        self.token_hashes.push(hash);
        self
    }

    /// Calls `sink` when a session opens or ends (from the connection's thread).
    #[must_use]
    pub fn with_events(mut self, sink: impl Fn(&SessionEvent) + Send + Sync + 'static) -> Self {
        self.events = Some(Box::new(sink));
        self
    }

    /// A new connection's state machine.
    pub fn connect(self: &Arc<Self>) -> Connection {
        Connection {
            server: self.clone(),
            session: None,
            last_request: 0,
            connected: Instant::now(),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The model facts sent in every `Welcome`.
    pub fn facts(&self) -> &ModelFacts {
        &self.facts
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        Counters {
            sessions_open: self.open.load(Ordering::SeqCst),
            sessions_ever: self.ever.load(Ordering::SeqCst),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    fn emit(&self, e: &SessionEvent) {
        if let Some(sink) = &self.events {
            sink(e);
        }
    }

    /// True when `token` hashes to an accepted hash; compares every hash in constant time.
    fn authorized(&self, token: &[u8]) -> bool {
        let h: [u8; 32] = Sha256::digest(token).into();
        self.token_hashes
            .iter()
            .fold(subtle::Choice::from(0), |acc, t| acc | t.ct_eq(&h))
            .into()
    }
}

/// One open session: its policy, counters and plaintext tail.
struct Session {
    id: u64,
    server: Arc<SessionServer>,
    /// Index of its preset's model in `server.models`.
    model: usize,
    policy: Policy,
    opened: Instant,
    last_active: Instant,
    requests: u64,
    released_rows: u64,
    tail: Option<TailState>,
    end_reason: &'static str,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.server.open.fetch_sub(1, Ordering::SeqCst);
        self.server.emit(&SessionEvent::Closed {
            id: self.id,
            reason: self.end_reason,
            requests: self.requests,
        });
    }
}

/// An error reply and whether it ends the connection.
struct Reject {
    code: ErrorCode,
    message: String,
}

fn reject(code: ErrorCode, message: impl std::fmt::Display) -> Reject {
    Reject {
        code,
        message: message.to_string(),
    }
}

/// What to send back for one request frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    /// The reply frame.
    pub bytes: Vec<u8>,
    /// True when the connection must close after sending it.
    pub close: bool,
}

/// One connection's state machine: no session until `Hello`, then one session.
pub struct Connection {
    server: Arc<SessionServer>,
    session: Option<Session>,
    last_request: u64,
    connected: Instant,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("session", &self.session.as_ref().map(|s| s.id))
            .field("last_request", &self.last_request)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The open session's id.
    pub fn session_id(&self) -> Option<u64> {
        self.session.as_ref().map(|s| s.id)
    }

    /// When this connection must end if no request arrives: the handshake timeout before
    /// `Hello`, then the earlier of the idle timeout and the session's lifetime.
    pub fn deadline(&self) -> Instant {
        let l = &self.server.limits;
        match &self.session {
            None => self.connected + l.handshake_timeout,
            Some(s) => (s.last_active + l.idle_timeout).min(s.opened + l.max_lifetime),
        }
    }

    /// Ends the session because its deadline passed; returns the `Error` frame to send
    /// before closing.
    pub fn expire(&mut self) -> Reply {
        let why = self.end("idle timeout or lifetime");
        self.error_reply(0, ErrorCode::SessionExpired, why, true)
    }

    fn end(&mut self, reason: &'static str) -> &'static str {
        if let Some(mut s) = self.session.take() {
            s.end_reason = reason;
        }
        reason
    }

    fn frame(&self, request_id: u64, message: Message) -> Vec<u8> {
        let bytes = wire::encode(&Frame {
            request_id,
            message,
        })
        .or_else(|e| {
            wire::encode(&Frame {
                request_id,
                message: Message::error(ErrorCode::Internal, e),
            })
        })
        // Error frames never fail to encode (no policy inside).
        .unwrap_or_default();
        self.server
            .bytes_out
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        bytes
    }

    fn error_reply(
        &self,
        request_id: u64,
        code: ErrorCode,
        message: impl std::fmt::Display,
        close: bool,
    ) -> Reply {
        self.server.errors.fetch_add(1, Ordering::Relaxed);
        Reply {
            bytes: self.frame(request_id, Message::error(code, message)),
            close,
        }
    }

    /// Answers one request frame (length prefix included). Never panics: every failure
    /// is an `Error` reply; `close` is set after `Close`, a frame over the size limit, an
    /// expired session and a used-up request budget.
    pub fn handle(&mut self, bytes: &[u8]) -> Reply {
        self.server
            .bytes_in
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let frame = match wire::decode(bytes, &self.server.limits) {
            Ok(f) => f,
            Err(e @ Error::FrameTooLarge { .. }) => {
                return self.error_reply(0, ErrorCode::MessageTooLarge, e, true)
            }
            Err(e @ Error::PolicyParse { .. }) => {
                return self.error_reply(0, ErrorCode::PolicyRejected, e, false)
            }
            Err(e) => return self.error_reply(0, ErrorCode::Malformed, e, false),
        };
        let id = frame.request_id;
        if let Some(s) = &self.session {
            let now = Instant::now();
            let l = &self.server.limits;
            if now > s.last_active + l.idle_timeout || now > s.opened + l.max_lifetime {
                let why = self.end("idle timeout or lifetime");
                return self.error_reply(id, ErrorCode::SessionExpired, why, true);
            }
        }
        if id <= self.last_request {
            return self.error_reply(
                id,
                ErrorCode::BadRequestId,
                format!(
                    "request id {id} is not above the last one ({})",
                    self.last_request
                ),
                false,
            );
        }
        self.last_request = id;
        if let Some(s) = &mut self.session {
            s.last_active = Instant::now();
            s.requests += 1;
            if s.requests > self.server.limits.max_requests {
                let why = self.end("request limit");
                return self.error_reply(id, ErrorCode::RequestLimit, why, true);
            }
        }
        if matches!(frame.message, Message::Close) {
            self.end("close");
            return Reply {
                bytes: self.frame(id, Message::Close),
                close: true,
            };
        }
        match self.answer(frame.message) {
            Ok(m) => Reply {
                bytes: self.frame(id, m),
                close: false,
            },
            Err(r) => self.error_reply(id, r.code, r.message, false),
        }
    }

    fn answer(&mut self, message: Message) -> std::result::Result<Message, Reject> {
        let server = self.server.clone();
        let session = match (message, &mut self.session) {
            (Message::Hello(h), None) => return self.open(h),
            (Message::Hello(_), Some(_)) => {
                return Err(reject(ErrorCode::AlreadyOpen, "a session is already open"))
            }
            (
                Message::Product { .. }
                | Message::Release { .. }
                | Message::PublicPrefix { .. }
                | Message::Close,
                None,
            ) => return Err(reject(ErrorCode::NoSession, "no session: send Hello first")),
            (
                m @ (Message::Product { .. }
                | Message::Release { .. }
                | Message::PublicPrefix { .. }),
                Some(s),
            ) => (m, s),
            (m, _) => {
                return Err(reject(
                    ErrorCode::UnexpectedMessage,
                    format!("a client never sends {:?}", m.kind()),
                ))
            }
        };
        match session {
            (
                Message::Product {
                    layer,
                    stage,
                    ciphertext,
                },
                s,
            ) => {
                let layer = layer as usize;
                if layer >= s.policy.encrypted_layers {
                    return Err(reject(
                        ErrorCode::NotAllowed,
                        format!(
                            "layer {layer} is not encrypted under this session's policy \
                             (layers 0..{})",
                            s.policy.encrypted_layers
                        ),
                    ));
                }
                let products = &server
                    .models
                    .get(s.model)
                    .ok_or_else(|| reject(ErrorCode::Internal, "session model missing"))?
                    .products;
                let out = products
                    .handle(layer, stage, &ciphertext)
                    .map_err(|e| reject(ErrorCode::BadPayload, e))?;
                Ok(Message::ProductResult { ciphertext: out })
            }
            (Message::PublicPrefix { tokens }, s) => {
                let Some(w) = &server.weights else {
                    return Err(reject(
                        ErrorCode::NotAllowed,
                        "this server holds no plaintext weights to run a public prefix",
                    ));
                };
                // Only the session's first request may be a prefix: it fills positions
                // 0..P of every cache, so nothing private may have run before it.
                // (`requests` counts Hello too, so the prefix is request 2.)
                if s.requests != 2 {
                    return Err(reject(
                        ErrorCode::NotAllowed,
                        "a public prefix must be the session's first request after Hello",
                    ));
                }
                let kv =
                    PublicPrefix::run(w, &tokens).map_err(|e| reject(ErrorCode::BadPayload, e))?;
                let k = s.policy.encrypted_layers;
                let client = match &mut s.tail {
                    Some(tail) => {
                        let (client, rest) = kv.split_at(k);
                        tail.install_prefix(w, &rest)
                            .map_err(|e| reject(ErrorCode::BadPayload, e))?;
                        client
                    }
                    None => kv,
                };
                Ok(Message::PrefixKv {
                    bytes: client.to_bytes(),
                })
            }
            (Message::Release { bytes }, s) => {
                let (Some(tail), Some(w), Some(r)) =
                    (&mut s.tail, &server.weights, &s.policy.release)
                else {
                    return Err(reject(
                        ErrorCode::NotAllowed,
                        "no release under this session's policy, or no plaintext tail on \
                         this server",
                    ));
                };
                let d = w.config().d_model;
                let rows = decode_release(&bytes, d)
                    .map_err(|e| reject(ErrorCode::BadPayload, e))?
                    .len()
                    / d;
                let total = s.released_rows.saturating_add(rows as u64);
                if total > r.max_per_session {
                    return Err(reject(
                        ErrorCode::NotAllowed,
                        format!(
                            "release of {rows} rows passes the policy's cap of {}",
                            r.max_per_session
                        ),
                    ));
                }
                let with_head = s.policy.lm_head == HeadSide::Server;
                let out = if with_head {
                    TailOutput::Logits(Logits::Last)
                } else {
                    TailOutput::Hidden
                };
                let values = tail
                    .run(w, &bytes, out)
                    .map_err(|e| reject(ErrorCode::BadPayload, e))?;
                s.released_rows = total;
                Ok(if with_head {
                    Message::Logits { values }
                } else {
                    Message::HiddenState { values }
                })
            }
            (m, _) => Err(reject(
                ErrorCode::UnexpectedMessage,
                format!("unexpected {:?}", m.kind()),
            )),
        }
    }

    /// Validates a `Hello` completely, then takes a session slot and opens the session.
    fn open(&mut self, h: Hello) -> std::result::Result<Message, Reject> {
        let server = self.server.clone();
        if h.protocol != WIRE_VERSION {
            return Err(reject(
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {} (this server speaks {WIRE_VERSION})",
                    h.protocol
                ),
            ));
        }
        if !server.authorized(&h.token) {
            return Err(reject(ErrorCode::Unauthorized, "bearer token not accepted"));
        }
        let p = h.policy;
        // A server without weights does not know the model's depth: it checks coherence
        // against the depth the policy implies (one plaintext layer after a release).
        let depth = server
            .n_layers
            .unwrap_or(p.encrypted_layers + usize::from(p.release.is_some()));
        p.validate(depth)
            .map_err(|e| reject(ErrorCode::PolicyRejected, e))?;
        let served: Vec<_> = server.models.iter().map(|m| m.preset).collect();
        let Some(model_at) = served.iter().position(|m| *m == Some(p.preset)) else {
            let served: Vec<_> = served.iter().map(|m| m.map(LinalgPreset::name)).collect();
            return Err(reject(
                ErrorCode::ParamsMismatch,
                format!(
                    "client preset {:?}; this server serves {served:?}",
                    p.preset.name()
                ),
            ));
        };
        let model = &server.models[model_at];
        let fp = model.products.model().params().fingerprint();
        if h.params_fingerprint != fp {
            return Err(reject(
                ErrorCode::ParamsMismatch,
                format!(
                    "client preset {:?} / parameters {:02x?}, server {fp:02x?}",
                    p.preset.name(),
                    h.params_fingerprint
                ),
            ));
        }
        let prepared = model.products.model().layers();
        if p.encrypted_layers > prepared {
            return Err(reject(
                ErrorCode::PolicyRejected,
                format!(
                    "encrypted_layers = {} but this server prepared {prepared} layers at preset \
                     {:?}",
                    p.encrypted_layers,
                    p.preset.name()
                ),
            ));
        }
        let context = h.context as usize;
        if context == 0 || context > server.context_length {
            return Err(reject(
                ErrorCode::PolicyRejected,
                format!("context {context} must be in 1..={}", server.context_length),
            ));
        }
        if !h.eval_keys.is_empty() {
            return Err(reject(
                ErrorCode::KeysRejected,
                format!(
                    "the coefficient method needs no evaluation keys; got {}",
                    h.eval_keys.len()
                ),
            ));
        }
        let max = server.limits.max_sessions;
        if server
            .open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err()
        {
            return Err(reject(
                ErrorCode::TooManySessions,
                format!("the server has {max} sessions open"),
            ));
        }
        server.ever.fetch_add(1, Ordering::SeqCst);
        let id = server.next_id.fetch_add(1, Ordering::SeqCst);
        let k = p.encrypted_layers;
        let tail = match (&server.weights, &p.release) {
            (Some(w), Some(_)) => Some(TailState::new(w, k, context)),
            _ => None,
        };
        let now = Instant::now();
        self.session = Some(Session {
            id,
            server: server.clone(),
            model: model_at,
            policy: p,
            opened: now,
            last_active: now,
            requests: 1,
            released_rows: 0,
            tail,
            end_reason: "disconnect",
        });
        server.emit(&SessionEvent::Opened {
            id,
            encrypted_layers: k,
        });
        let l = &server.limits;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Ok(Message::Welcome(Welcome {
            session_id: id,
            model: server.facts,
            limits: SessionLimits {
                max_message_bytes: u32::try_from(l.max_message_bytes).unwrap_or(u32::MAX),
                max_requests: l.max_requests,
                idle_timeout_ms: ms(l.idle_timeout),
                lifetime_ms: ms(l.max_lifetime),
            },
            layouts: server.models[model_at]
                .layouts
                .get(..4 * k)
                .unwrap_or(&[])
                .to_vec(),
        }))
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
