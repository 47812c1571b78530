//! The state every connection of a server shares: the prepared model of each preset
//! served, the weights of the plaintext tail, the accepted token hashes, the limits, the
//! counters and the event sink.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use selene_linalg::{Layout, LinalgPreset};
use selene_model::Weights;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::backoff::Backoff;
use super::prepared::PreparedModel;
use super::products::ModelServer;
use crate::codec::wire::ModelFacts;
use crate::limits::Limits;

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
    /// Products answered with a result computed while their request still uploaded
    /// ([`super::Prefetch`]).
    pub prefetched: u64,
    /// Products finished from input ciphertexts multiplied in while their request
    /// uploaded ([`super::Prefetch::stream`]).
    pub streamed: u64,
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
pub(super) struct ServedModel {
    /// The preset of its parameters (`None`: no preset, so no `Hello` matches).
    pub(super) preset: Option<LinalgPreset>,
    pub(super) products: ModelServer,
    /// Its layouts in wire form, four per layer.
    pub(super) layouts: Vec<Vec<u8>>,
    /// Its fused matrices' layouts in wire form (`selene_model::fused::fused_order`; empty
    /// when it has none).
    pub(super) fused_layouts: Vec<Vec<u8>>,
    /// Its batched layouts in wire form, four per layer (empty when it has none).
    pub(super) batched_layouts: Vec<Vec<u8>>,
}

impl ServedModel {
    fn new(model: Arc<PreparedModel>) -> Self {
        let preset = LinalgPreset::of(model.params());
        let wire = |l: &[Layout]| l.iter().map(Layout::to_bytes).collect::<Vec<_>>();
        let layouts = wire(model.layouts().as_flattened());
        let fused_layouts = wire(&model.fused_layouts());
        let batched_layouts = wire(model.batched_layouts().as_flattened());
        Self {
            preset,
            products: ModelServer::new(model),
            layouts,
            fused_layouts,
            batched_layouts,
        }
    }
}

/// The state all connections share: the prepared model of each preset served, the token
/// hashes, the limits.
pub struct SessionServer {
    pub(super) models: Vec<ServedModel>,
    pub(super) weights: Option<Arc<Weights>>,
    pub(super) n_layers: Option<usize>,
    pub(super) context_length: usize,
    pub(super) facts: ModelFacts,
    pub(super) token_hashes: Vec<[u8; 32]>,
    pub(super) backoff: Backoff,
    pub(super) limits: Limits,
    pub(super) open: AtomicUsize,
    pub(super) ever: AtomicU64,
    pub(super) next_id: AtomicU64,
    pub(super) bytes_in: AtomicU64,
    pub(super) bytes_out: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) prefetched: AtomicU64,
    pub(super) streamed: AtomicU64,
    pub(super) events: Option<EventSink>,
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
    /// [`SessionServer::with_token`] adds one. Computes the model fingerprint once
    /// ([`Weights::fingerprint`]; it goes to every client).
    ///
    pub fn new(model: Arc<PreparedModel>, weights: Arc<Weights>, limits: Limits) -> Self {
        let c = weights.config();
        let facts = ModelFacts {
            layers: c.n_layers as u32,
            d_model: c.d_model as u32,
            vocab: c.vocab_size as u32,
            fingerprint: weights.fingerprint(),
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
            backoff: Backoff::new(limits.free_refusals, limits.refusal_backoff),
            limits,
            open: AtomicUsize::new(0),
            ever: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            prefetched: AtomicU64::new(0),
            streamed: AtomicU64::new(0),
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
            prefetched: self.prefetched.load(Ordering::Relaxed),
            streamed: self.streamed.load(Ordering::Relaxed),
        }
    }

    pub(super) fn emit(&self, e: &SessionEvent) {
        if let Some(sink) = &self.events {
            sink(e);
        }
    }

    /// True when `token` hashes to an accepted hash; compares every hash in constant time.
    pub(super) fn authorized(&self, token: &[u8]) -> bool {
        let h: [u8; 32] = Sha256::digest(token).into();
        self.token_hashes
            .iter()
            .fold(subtle::Choice::from(0), |acc, t| acc | t.ct_eq(&h))
            .into()
    }
}
