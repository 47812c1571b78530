//! What the HTTP layer needs from whatever computes the model: the [`ChatBackend`]
//! trait, and [`EmbeddedBackend`], the in-process default that `selene run` uses too.

use selene_audit::view::DEFAULT_FLOOD_SIGMA;
use selene_model::{Sampler, SamplingParams, Tokenizer, Weights};
use std::ops::ControlFlow;

use super::super::embedded::{self, Embedded};

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
}

/// One generation, validated: the prompt is already templated and tokenized.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Prompt token ids.
    pub prompt: Vec<u32>,
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
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the remote backend (selene serve) will return it")
    )]
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

/// The embedded default: client and server in this process, the server's weights
/// prepared once at startup, a fresh client key per request.
#[derive(Debug)]
pub struct EmbeddedBackend {
    info: BackendInfo,
    weights: Weights,
    tokenizer: Tokenizer,
    server: Embedded,
}

impl EmbeddedBackend {
    /// A backend over prepared `server` products, answering as `model_id` (its layers
    /// bound the encrypted layers a request may choose; `default_k` is used when it does
    /// not).
    ///
    /// # Errors
    /// `default_k` past the prepared layers.
    pub fn new(
        model_id: String,
        weights: Weights,
        tokenizer: Tokenizer,
        server: Embedded,
        default_k: usize,
    ) -> anyhow::Result<Self> {
        let prepared = server.model.layers();
        anyhow::ensure!(
            default_k <= prepared,
            "default of {default_k} encrypted layers, but {prepared} are prepared"
        );
        let config = weights.config();
        let info = BackendInfo {
            model_id,
            context_length: config.context_length,
            n_layers: config.n_layers,
            default_encrypted_layers: default_k,
            max_encrypted_layers: prepared,
            flood_sigma: DEFAULT_FLOOD_SIGMA,
        };
        Ok(Self {
            info,
            weights,
            tokenizer,
            server,
        })
    }
}

impl ChatBackend for EmbeddedBackend {
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
        let mut sampler = Sampler::new(job.sampling).map_err(anyhow::Error::from)?;
        embedded::generate(
            &self.weights,
            &self.server,
            job.encrypted_layers,
            &job.prompt,
            job.max_tokens,
            self.tokenizer.eos_ids(),
            &mut sampler,
            &mut |id| Ok(on_token(id)),
        )?;
        Ok(())
    }
}
