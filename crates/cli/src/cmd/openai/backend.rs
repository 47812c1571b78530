//! What the HTTP layer needs from whatever computes the model: the [`ChatBackend`]
//! trait, and [`SessionBackend`], which runs each request in its own protocol session,
//! in process (the embedded default, as `selene run`) or against `selene serve`.

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, OnceLock};

use selene_audit::view::DEFAULT_FLOOD_SIGMA;
use selene_ckks::Parameters;
use selene_linalg::LinalgPreset;
use selene_model::store::{self, KnownModel};
use selene_model::{Sampler, SamplingParams, Tokenizer, Weights};
use selene_protocol::net::{TlsTransport, Trust};
use selene_protocol::policy::SELECTIVE_PACKED_PRESET;
use selene_protocol::{InProcess, Policy, SessionServer, Transport};

use super::super::generation;

/// Facts about the served model and policy that requests are validated against.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendInfo {
    /// The model's id in `/v1/models` and in every response.
    pub model_id: String,
    /// Positions the model holds (prompt plus completion).
    pub context_length: usize,
    /// The model's depth: `encrypted_layers == n_layers` is strict mode.
    pub n_layers: usize,
    /// Encrypted layers when a request does not choose (the `--encrypted-layers` flag).
    pub default_encrypted_layers: usize,
    /// The most encrypted layers a request may choose (the layers the server prepared).
    pub max_encrypted_layers: usize,
    /// Flooding standard deviation of selective-mode releases (for the leakage lookup).
    pub flood_sigma: f64,
    /// The shipped leakage table of this model, when the audit measured it.
    pub audit: Option<&'static selene_audit::measured::Measured>,
}

/// One generation, validated: the prompt is already templated and tokenized.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// How many of the prompt's first tokens are a public prefix the server runs in
    /// plaintext (`selene.public_context`); 0 keeps the whole prompt private.
    pub public_positions: usize,
    /// Most tokens to generate (`prompt.len() + max_tokens` fits the context).
    pub max_tokens: usize,
    /// Sampling (temperature 0 is greedy).
    pub sampling: SamplingParams,
    /// Layers run encrypted; the model's depth is strict mode.
    pub encrypted_layers: usize,
}

/// Why a backend could not generate.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend (or the remote server behind it) cannot be reached or has gone away.
    #[error("backend unavailable: {reason}")]
    Unavailable {
        /// What happened.
        reason: String,
    },
    /// Generation started and failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Computes completions for the HTTP layer. Generation is blocking CPU work: the HTTP
/// layer calls [`ChatBackend::generate`] on a blocking thread, one job at a time.
pub trait ChatBackend: Send + Sync + 'static {
    /// The served model and policy.
    fn info(&self) -> &BackendInfo;

    /// The model's tokenizer (the client always holds it: prompts are tokenized and
    /// tokens decoded on the client side).
    fn tokenizer(&self) -> &Tokenizer;

    /// Generates `job`, calling `on_token` with each new id (an end-of-sequence id
    /// included) until it breaks, an end-of-sequence id comes, or `job.max_tokens`.
    ///
    /// # Errors
    /// [`BackendError::Unavailable`] when the computation cannot be reached,
    /// [`BackendError::Failed`] otherwise.
    fn generate(
        &self,
        job: &Job,
        on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
    ) -> Result<(), BackendError>;
}

/// Where a request's session goes.
pub enum Connector {
    /// The session server in this process, prepared at startup (the embedded default).
    Embedded {
        /// The server.
        server: Arc<SessionServer>,
        /// The in-process bearer token it accepts.
        token: Vec<u8>,
    },
    /// A `selene serve` server over TLS.
    Remote {
        /// `host:port`.
        addr: String,
        /// How its certificate is checked.
        trust: Trust,
        /// Its bearer token.
        token: Vec<u8>,
    },
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Connector::Embedded { .. } => f.write_str("Embedded { token: [redacted] }"),
            Connector::Remote { addr, .. } => {
                write!(f, "Remote {{ addr: {addr:?}, token: [redacted] }}")
            }
        }
    }
}

/// The backend of `selene openai`: each request opens its own session (a fresh client
/// key) with the policy it asked for, through the [`Connector`], and runs the token
/// loop `selene run` runs.
#[derive(Debug)]
pub struct SessionBackend {
    info: BackendInfo,
    weights: Arc<Weights>,
    tokenizer: Tokenizer,
    params: Arc<Parameters>,
    /// `coeff12widepack`'s parameters, for selective requests.
    wide_params: Arc<Parameters>,
    preset: LinalgPreset,
    connector: Connector,
    /// The model fingerprint (`selene_model::Weights::fingerprint`), which the server's
    /// must equal.
    fingerprint: [u8; 32],
}

impl SessionBackend {
    /// A backend answering as `model_id` that opens sessions through `connector` with
    /// `preset`'s parameters; `default_k` encrypted layers unless a request chooses.
    ///
    /// # Errors
    /// `default_k` past the model's depth; the preset's parameters.
    pub fn new(
        model_id: String,
        weights: Arc<Weights>,
        tokenizer: Tokenizer,
        preset: LinalgPreset,
        default_k: usize,
        connector: Connector,
    ) -> anyhow::Result<Self> {
        let config = weights.config();
        let layers = config.n_layers;
        anyhow::ensure!(
            default_k <= layers,
            "--encrypted-layers {default_k} is out of range: the model has {layers} layers \
             (use {layers} for strict mode)"
        );
        let info = BackendInfo {
            model_id,
            context_length: config.context_length,
            n_layers: layers,
            default_encrypted_layers: default_k,
            // The embedded server prepares every layer, as `selene serve` does.
            max_encrypted_layers: layers,
            flood_sigma: DEFAULT_FLOOD_SIGMA,
            audit: generation::audit_table(&weights),
        };
        // Hashed once here, not per request: every session checks the server's against it.
        let fingerprint = selene_protocol::model_fingerprint(&weights);
        Ok(Self {
            info,
            params: preset.build()?,
            wide_params: SELECTIVE_PACKED_PRESET.build()?,
            weights,
            tokenizer,
            preset,
            connector,
            fingerprint,
        })
    }

    fn run<T: Transport>(
        &self,
        transport: T,
        policy: Policy,
        job: &Job,
        on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
    ) -> Result<(), BackendError> {
        let params = if policy.release.is_some() {
            &self.wide_params
        } else {
            &self.params
        };
        let mut session =
            generation::open(&self.weights, &self.fingerprint, params, policy, transport).map_err(
                |e| BackendError::Unavailable {
                    reason: format!("{e:#}"),
                },
            )?;
        let (public, private) = job
            .prompt
            .split_at(job.public_positions.min(job.prompt.len()));
        let prefix = if public.is_empty() {
            None
        } else {
            let kv = session
                .session_mut()
                .public_prefix(public, self.weights.config())
                .map_err(anyhow::Error::from)?;
            Some(kv)
        };
        let mut sampler = Sampler::new(job.sampling).map_err(anyhow::Error::from)?;
        session
            .generate(
                prefix.as_ref(),
                private,
                job.max_tokens,
                self.tokenizer.eos_ids(),
                &mut sampler,
                &mut |id| Ok(on_token(id)),
            )
            .map_err(anyhow::Error::from)?;
        Ok(())
    }
}

impl ChatBackend for SessionBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn generate(
        &self,
        job: &Job,
        on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
    ) -> Result<(), BackendError> {
        let layers = self.info.n_layers;
        let mut policy = Policy::selective(layers, job.encrypted_layers);
        // Selective requests run on the packed flooding preset, as `selene run` does.
        policy.preset = if policy.release.is_none() {
            self.preset
        } else {
            SELECTIVE_PACKED_PRESET
        };
        policy.validate(layers).map_err(anyhow::Error::from)?;
        match &self.connector {
            Connector::Embedded { server, token } => {
                self.run(InProcess::connect(server, token), policy, job, on_token)
            }
            Connector::Remote { addr, trust, token } => {
                let transport = TlsTransport::connect(addr, trust, token).map_err(|e| {
                    BackendError::Unavailable {
                        reason: format!(
                            "could not reach the Selene server at {addr}: {}",
                            super::error::with_causes(&e)
                        ),
                    }
                })?;
                self.run(transport, policy, job, on_token)
            }
        }
    }
}

/// Makes the backend of a known model for its first request (the embedded endpoint:
/// loads the model and prepares a session server of its own).
pub type Loader = dyn Fn(&'static KnownModel) -> anyhow::Result<Arc<dyn ChatBackend>> + Send + Sync;

/// One model the endpoint answers with.
struct Entry {
    /// Its id in `GET /v1/models` and in replies.
    id: String,
    /// The store's model behind it, when it is one (its store name selects it too).
    known: Option<&'static KnownModel>,
    /// The backend, once made.
    backend: OnceLock<Arc<dyn ChatBackend>>,
    /// Held while the backend is made, so it is made once.
    loading: Mutex<()>,
}

impl Entry {
    /// True when a request's `model` names this entry: its id, or, for a model of the
    /// store, any name [`store::known`] maps to it (both case-insensitive).
    fn answers_to(&self, name: &str) -> bool {
        self.id.eq_ignore_ascii_case(name)
            || self.known.is_some_and(|m| store::known(name) == Some(m))
    }
}

/// The models the endpoint lists and a request's `model` field selects among: the
/// served one first (the answer when a request names none), then, when the endpoint runs
/// its own server, the other known models the store holds, each made by the [`Loader`]
/// on its first request and kept. Against a remote `selene serve` (one model per
/// server) the catalog is the served model alone.
pub struct Catalog {
    entries: Vec<Entry>,
    loader: Option<Box<Loader>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| &e.id))
            .finish()
    }
}

/// A model of the catalog, found by [`Catalog::find`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelRef(usize);

impl Catalog {
    /// The served model alone; `known` is the store's model it is, if any.
    pub fn single(served: Arc<dyn ChatBackend>, known: Option<&'static KnownModel>) -> Self {
        let entry = Entry {
            id: served.info().model_id.clone(),
            known,
            backend: OnceLock::from(served),
            loading: Mutex::new(()),
        };
        Self {
            entries: vec![entry],
            loader: None,
        }
    }

    /// The served model and the known models `stored` (those already served, or whose
    /// id it has, are skipped), made by `loader` when first asked for.
    pub fn with_stored(
        served: Arc<dyn ChatBackend>,
        known: Option<&'static KnownModel>,
        stored: &[&'static KnownModel],
        loader: Box<Loader>,
    ) -> Self {
        let mut catalog = Self::single(served, known);
        for &m in stored {
            if catalog
                .entries
                .iter()
                .any(|e| e.known == Some(m) || e.id.eq_ignore_ascii_case(m.id))
            {
                continue;
            }
            catalog.entries.push(Entry {
                id: m.id.to_string(),
                known: Some(m),
                backend: OnceLock::new(),
                loading: Mutex::new(()),
            });
        }
        catalog.loader = Some(loader);
        catalog
    }

    /// The listed ids, the served model's first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.id.as_str())
    }

    /// The model a request's `model` field names; `None` (the field is absent) is the
    /// served model. `Err` carries the name that matched nothing.
    pub fn find<'a>(&self, name: Option<&'a str>) -> Result<ModelRef, &'a str> {
        match name {
            None => Ok(ModelRef(0)),
            Some(name) => self
                .entries
                .iter()
                .position(|e| e.answers_to(name))
                .map(ModelRef)
                .ok_or(name),
        }
    }

    /// The id of `model`.
    pub fn id(&self, model: ModelRef) -> &str {
        self.entries.get(model.0).map_or("", |e| e.id.as_str())
    }

    /// `model`'s backend when it is already made (never blocks).
    pub fn ready(&self, model: ModelRef) -> Option<Arc<dyn ChatBackend>> {
        self.entries.get(model.0)?.backend.get().cloned()
    }

    /// `model`'s backend, made by the loader under the entry's lock if this is its first
    /// request (blocking: loading and preparing a model takes seconds to minutes). A
    /// failed load is not kept: the next request tries again.
    ///
    /// # Errors
    /// The loader's error; [`BackendError::Unavailable`] for a model with no loader.
    pub fn load(&self, model: ModelRef) -> Result<Arc<dyn ChatBackend>, BackendError> {
        let missing = || BackendError::Unavailable {
            reason: format!("no backend for model '{}'", self.id(model)),
        };
        let entry = self.entries.get(model.0).ok_or_else(missing)?;
        if let Some(b) = entry.backend.get() {
            return Ok(Arc::clone(b));
        }
        // A loader that panicked leaves nothing in the cell; the lock itself guards no data.
        let _guard = entry
            .loading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(b) = entry.backend.get() {
            return Ok(Arc::clone(b));
        }
        let (Some(loader), Some(known)) = (&self.loader, entry.known) else {
            return Err(missing());
        };
        let backend = loader(known).map_err(|e| {
            BackendError::Failed(e.context(format!("could not load model '{}'", entry.id)))
        })?;
        Ok(Arc::clone(entry.backend.get_or_init(|| backend)))
    }
}
