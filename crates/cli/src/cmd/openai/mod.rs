//! `selene openai`: a local endpoint that speaks the OpenAI chat completions API, so
//! existing apps and SDKs get Selene's private inference unchanged. See
//! docs/openai.md for the fields, headers and errors.
//!
//! - [`routes`]: axum routes, API key, body limit, timeouts, queue, SSE streaming.
//! - [`api`]: request and response bodies and the 400 checks.
//! - [`completion`]: stop sequences, token counts, finish reasons.
//! - [`backend`]: the [`backend::ChatBackend`] trait behind the HTTP layer and its
//!   implementation over protocol sessions, embedded (in process) or remote (TLS to
//!   `selene serve`, `--server ADDR`), and the [`backend::Catalog`] of models a request's
//!   `model` selects among (embedded: the served one and the store's others, each loaded
//!   on its first request; remote: the server's one).
//!
//! # Security
//! The endpoint itself is plain HTTP: it listens on loopback by default, where the
//! prompt never leaves the machine before it is encrypted. Any other address needs
//! `--allow-remote` and an API key, and should sit behind a TLS proxy.

pub mod api;
pub mod backend;
pub mod completion;
pub mod error;
pub mod routes;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use selene_linalg::LinalgPreset;
use selene_model::store::{self, KnownModel, ModelSource};
use selene_model::{Tokenizer, Weights};

use super::args::{load, load_client, preset_parser, token_from, trust_from, ModelArg};
use super::generation::policy_notice;
use super::serving::session_server;
use backend::{Catalog, ChatBackend, Connector, SessionBackend};
use routes::Settings;
use selene_protocol::Terms;

/// Arguments of `selene openai`.
#[derive(Debug, Args)]
pub struct OpenaiArgs {
    /// Address to listen on. Anything but loopback needs --allow-remote and an API key.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Encrypted layers for requests that do not choose (`"selene": {"encrypted_layers":
    /// K}`); the default, every layer of the model, is strict mode.
    #[arg(long, value_name = "K")]
    encrypted_layers: Option<usize>,
    /// CKKS parameter set of strict requests' products (all 128-bit secure); selective
    /// requests always use coeff12wide, the preset with room for decryption flooding.
    #[arg(long, value_parser = preset_parser(), default_value = "coeff12")]
    preset: LinalgPreset,
    /// Layers the embedded server also prepares at coeff12wide, the most a selective
    /// request may encrypt (at least --encrypted-layers when that is selective).
    #[arg(long, value_name = "K", default_value_t = 4)]
    selective_layers: usize,
    /// Environment variable holding the API key clients must send as a bearer token.
    #[arg(long, value_name = "VAR")]
    api_key_env: Option<String>,
    /// Allow a --listen address other than loopback (requires --api-key-env).
    #[arg(long)]
    allow_remote: bool,
    /// max_tokens of requests that give none (cut to the room left in the context).
    #[arg(long, default_value_t = 256)]
    default_max_tokens: usize,
    /// Seconds a request may wait while another one generates before it gets a 503.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    queue_timeout: u64,
    /// Largest request body in bytes (413 past it).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    body_limit: usize,
    /// A `selene serve` server (`host:port`) to run the encrypted layers on, over TLS,
    /// instead of the embedded one.
    #[arg(long, value_name = "ADDR")]
    server: Option<String>,
    /// With --server: SHA-256 of its certificate (as `selene serve --self-signed` prints).
    #[arg(long, value_name = "HEX", requires = "server", conflicts_with = "ca")]
    fingerprint: Option<String>,
    /// With --server: CA certificate(s) (PEM) its certificate must chain to.
    #[arg(long, value_name = "FILE", requires = "server")]
    ca: Option<PathBuf>,
    /// With --server: environment variable holding the server's bearer token.
    #[arg(
        long,
        value_name = "VAR",
        requires = "server",
        conflicts_with = "token"
    )]
    token_env: Option<String>,
    /// With --server: the server's bearer token itself (prefer --token-env).
    #[arg(long, value_name = "TOKEN", requires = "server")]
    token: Option<String>,
    /// Worker threads for the encrypted products (rayon); default: one per core.
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    model: ModelArg,
}

/// The served model's id: a known model's id (`smollm2-135m-instruct`, ...), else the
/// file name up to the first dot, lower-cased.
fn model_id(model: &ModelArg) -> String {
    ModelSource::from_arg(model.model.as_deref()).map_or_else(|_| "selene-model".into(), |s| s.id())
}

/// How the embedded endpoint prepares a model, kept for the models the store holds,
/// which are loaded on their first request.
#[derive(Debug, Clone, Copy)]
struct Embedding {
    preset: LinalgPreset,
    selective_layers: usize,
    /// `--encrypted-layers`: a loaded model's default, cut to its depth.
    encrypted_layers: Option<usize>,
}

impl Embedding {
    /// A backend for `w` with a session server of its own in this process; `k`
    /// encrypted layers by default.
    fn backend(
        &self,
        model_id: String,
        w: Arc<Weights>,
        t: Tokenizer,
        k: usize,
    ) -> anyhow::Result<SessionBackend> {
        let layers = w.config().n_layers;
        // Every layer is prepared, so a request may choose any policy up to strict.
        let params = self.preset.build()?;
        let selective = if k < layers {
            self.selective_layers.max(k)
        } else {
            self.selective_layers
        };
        let server = session_server(
            &params,
            &w,
            layers,
            selective.min(layers - 1),
            &selene_linalg::Link::LAN,
            super::serving::Extras::default(),
            selene_protocol::Limits::default(),
        )?;
        let mut token = vec![0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut token);
        let server = Arc::new(server.with_token(&token));
        // The client side computes with the bundle only (a copy; the server keeps the
        // full model).
        let client = Arc::new(
            w.client_bundle()
                .context("could not extract the client bundle")?,
        );
        SessionBackend::new(
            model_id,
            client,
            t,
            self.preset,
            k,
            Connector::Embedded { server, token },
        )
    }
}

/// Runs `selene openai` until the process is stopped.
pub fn run(args: &OpenaiArgs) -> anyhow::Result<()> {
    super::threads::init(args.threads)?;
    let api_key = match &args.api_key_env {
        Some(var) => {
            let key = std::env::var(var)
                .with_context(|| format!("--api-key-env {var}: the variable is not set"))?;
            anyhow::ensure!(
                !key.trim().is_empty(),
                "--api-key-env {var}: the key is empty"
            );
            Some(key.trim().to_string())
        }
        None => None,
    };
    if !args.listen.ip().is_loopback() {
        anyhow::ensure!(
            args.allow_remote,
            "--listen {} is not a loopback address: prompts would travel in clear to this \
             endpoint; pass --allow-remote (and --api-key-env) to do it anyway",
            args.listen
        );
        anyhow::ensure!(
            api_key.is_some(),
            "--listen {} with --allow-remote requires an API key (--api-key-env VAR)",
            args.listen
        );
        eprintln!(
            "[warning: plain HTTP on {}: put a TLS proxy in front, or prompts cross the \
             network in clear before they are encrypted]",
            args.listen
        );
    }
    // Against a remote server the endpoint is a thin client: only the bundle is read.
    let (w, t) = match &args.server {
        Some(_) => load_client(args.model.model.as_deref())?,
        None => load(args.model.model.as_deref())?,
    };
    let w = Arc::new(w);
    let layers = w.config().n_layers;
    let k = args.encrypted_layers.unwrap_or(layers);
    anyhow::ensure!(
        k <= layers,
        "--encrypted-layers {k} is out of range: the model has {layers} layers (use {layers} \
         for strict mode)"
    );
    let terms = Terms {
        k,
        sigma: selene_audit::view::DEFAULT_FLOOD_SIGMA,
        cap: 0,
        pad_to: 1,
    };
    if let Some(notice) = policy_notice(terms, layers, super::generation::audit_table(&w))? {
        eprintln!("{notice} (default; a request may choose)");
    }
    let source = ModelSource::from_arg(args.model.model.as_deref())?;
    let served_known = match source {
        ModelSource::Known(m) => Some(m),
        ModelSource::File(_) => None,
    };
    let (catalog, computed_by) = match &args.server {
        Some(addr) => {
            let trust = trust_from(args.fingerprint.as_deref(), args.ca.as_deref())?;
            let token = token_from(args.token_env.as_deref(), args.token.as_deref())?;
            let connector = Connector::Remote {
                addr: addr.clone(),
                trust,
                token,
            };
            let backend =
                SessionBackend::new(model_id(&args.model), w, t, args.preset, k, connector)?;
            // One model per `selene serve`: only the server's model is listed and accepted.
            (
                Catalog::single(Arc::new(backend), served_known),
                format!("the Selene server at {addr} (TLS)"),
            )
        }
        None => {
            let embedding = Embedding {
                preset: args.preset,
                selective_layers: args.selective_layers,
                encrypted_layers: args.encrypted_layers,
            };
            let served = embedding.backend(model_id(&args.model), w, t, k)?;
            let loader = move |m: &'static KnownModel| -> anyhow::Result<Arc<dyn ChatBackend>> {
                let start = std::time::Instant::now();
                eprintln!("[selene openai: loading {} for its first request]", m.id);
                let (w, t) = load(Some(m.name))?;
                let layers = w.config().n_layers;
                let k = embedding.encrypted_layers.map_or(layers, |k| k.min(layers));
                let backend = embedding.backend(m.id.to_string(), Arc::new(w), t, k)?;
                eprintln!(
                    "[selene openai: {} ready in {:.1} s; {k} of {layers} layers encrypted by \
                     default]",
                    m.id,
                    start.elapsed().as_secs_f64()
                );
                Ok(Arc::new(backend))
            };
            let stored = ModelSource::stored_in(&store::home());
            (
                Catalog::with_stored(Arc::new(served), served_known, &stored, Box::new(loader)),
                "in process".to_string(),
            )
        }
    };
    let catalog = Arc::new(catalog);
    let settings = Settings {
        api_key,
        body_limit: args.body_limit,
        queue_timeout: Duration::from_secs(args.queue_timeout),
        default_max_tokens: args.default_max_tokens,
        allow_remote: args.allow_remote,
        ..Settings::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("could not listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "[selene openai: http://{addr}/v1 serving {}, computed {computed_by}; {k} encrypted \
             layers by default; one request generates at a time, others queue up to {} s]",
            catalog.ids().collect::<Vec<_>>().join(", "),
            args.queue_timeout
        );
        axum::serve(listener, routes::router(catalog, settings))
            .await
            .context("the HTTP server failed")
    })
}
