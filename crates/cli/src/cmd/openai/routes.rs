//! The HTTP layer: routes, the API key, the body limit and timeouts, the one-at-a-time
//! queue in front of the backend, and streaming as server-sent events.

use std::convert::Infallible;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use selene_model::SamplingParams;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::api::{
    ChatCompletion, ChatRequest, Checked, Choice, Chunk, ChunkChoice, Delta, ModelCard,
    ReplyMessage,
};
use super::backend::{BackendError, BackendInfo, Catalog, ChatBackend, Job};
use super::completion::{Completion, FinishReason, Usage};
use super::error::{with_causes, ApiError};

/// Limits and defaults of the HTTP layer.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The API key clients must send as `Authorization: Bearer KEY`; none: no check.
    pub api_key: Option<String>,
    /// Largest request body, in bytes (413 past it).
    pub body_limit: usize,
    /// Longest wait for a request body (408 past it).
    pub body_timeout: Duration,
    /// Longest wait in the queue while another request generates (503 past it).
    pub queue_timeout: Duration,
    /// `max_tokens` when a request gives none (cut to the room left in the context).
    pub default_max_tokens: usize,
    /// Interval of SSE comment lines while no token comes (a long prefill).
    pub keepalive: Duration,
    /// Accept any `Host` (`--allow-remote`); otherwise only a loopback one, so a web page
    /// that rebinds its DNS name to 127.0.0.1 cannot reach the endpoint.
    pub allow_remote: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            api_key: None,
            body_limit: 1 << 20,
            body_timeout: Duration::from_secs(30),
            queue_timeout: Duration::from_secs(300),
            default_max_tokens: 256,
            keepalive: Duration::from_secs(15),
            allow_remote: false,
        }
    }
}

struct AppState {
    catalog: Arc<Catalog>,
    settings: Settings,
    key_digest: Option<[u8; 32]>,
    /// One generation at a time: generation saturates the CPU and the embedded server
    /// serves one client; requests wait here, up to the queue timeout.
    queue: Arc<Semaphore>,
    started: u64,
}

/// The endpoint's routes over the models of `catalog`.
pub fn router(catalog: Arc<Catalog>, settings: Settings) -> Router {
    let key_digest = settings
        .api_key
        .as_ref()
        .map(|k| Sha256::digest(k.as_bytes()).into());
    let state = Arc::new(AppState {
        catalog,
        settings,
        key_digest,
        queue: Arc::new(Semaphore::new(1)),
        started: unix_now(),
    });
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/chat/completions", post(chat))
        .fallback(|| async { ApiError::not_found("no such route", "unknown_url") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The host part of a `Host` header or an origin's authority: `[::1]:8080` -> `::1`,
/// `localhost:8080` -> `localhost`.
fn host_part(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// `localhost` or a loopback IP address.
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Refuses what a web page could send on the user's behalf. A browser attaches `Origin`
/// to every cross-site POST (and to `fetch` GETs), and sends a rebound DNS name as the
/// `Host`: so the `Host` must be loopback (unless `allow_remote`), and an `Origin`, when
/// present, must be this very endpoint (`http://` or `https://` plus the same `Host`).
/// Clients that are not browsers send no `Origin` and are unaffected.
fn same_site(headers: &HeaderMap, allow_remote: bool) -> Result<(), ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ApiError::forbidden("the request has no Host header"))?;
    if !allow_remote && !is_loopback_host(host_part(host)) {
        return Err(ApiError::forbidden(format!(
            "Host '{host}' is not a loopback name: this endpoint answers only 127.0.0.1, [::1] or localhost (selene openai --allow-remote to change that)"
        )));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if !authority.is_some_and(|a| a.eq_ignore_ascii_case(host)) {
            return Err(ApiError::forbidden(format!(
                "cross-origin request from '{origin}' refused: only this endpoint's own origin may call it"
            )));
        }
    }
    Ok(())
}

/// Requires `Content-Type: application/json` (parameters allowed): a web page can POST
/// `text/plain` cross-site without a preflight, never `application/json`.
fn json_body(headers: &HeaderMap) -> Result<(), ApiError> {
    let found = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"))
        .unwrap_or("");
    let essence = found.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type(found))
    }
}

impl AppState {
    /// The same-site checks ([`same_site`]), then the API key. Compares SHA-256 digests
    /// in constant time, so neither the key's bytes nor its length show in the timing.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        same_site(headers, self.settings.allow_remote)?;
        let Some(want) = &self.key_digest else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::unauthorized(true))?;
        let digest: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        if bool::from(digest.ct_eq(want)) {
            Ok(())
        } else {
            Err(ApiError::unauthorized(false))
        }
    }

    fn card<'a>(&self, id: &'a str) -> ModelCard<'a> {
        ModelCard {
            id,
            object: "model",
            created: self.started,
            owned_by: "selene",
        }
    }
}

async fn models(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match st.authorize(&headers) {
        Ok(()) => {
            let data: Vec<ModelCard<'_>> = st.catalog.ids().map(|id| st.card(id)).collect();
            Json(serde_json::json!({"object": "list", "data": data})).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn model(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = st.authorize(&headers) {
        return e.into_response();
    }
    match st.catalog.find(Some(&id)) {
        Ok(m) => Json(st.card(st.catalog.id(m))).into_response(),
        Err(name) => ApiError::model_not_found(name).into_response(),
    }
}

async fn chat(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    match chat_inner(st, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn chat_inner(
    st: Arc<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    st.authorize(&headers)?;
    json_body(&headers)?;
    let bytes = read_body(body, &headers, &st.settings).await?;
    let mut request: ChatRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(None, format!("invalid request body: {e}")))?;
    let model = st
        .catalog
        .find(request.model.take().as_deref())
        .map_err(ApiError::model_not_found)?;
    // A model's first request loads it, in the queue: loading fills the CPU as a
    // generation does, and the permit then carries on to this request's generation.
    let (backend, held) = match st.catalog.ready(model) {
        Some(b) => (b, None),
        None => {
            let permit = queue_permit(&st).await?;
            let catalog = Arc::clone(&st.catalog);
            let backend = tokio::task::spawn_blocking(move || catalog.load(model))
                .await
                .map_err(|e| ApiError::internal(format!("the model loader stopped: {e}")))?
                .map_err(|e| match e {
                    BackendError::Unavailable { .. } => ApiError::unavailable(e.to_string()),
                    BackendError::Failed(e) => ApiError::internal(format!("{e:#}")),
                })?;
            (backend, Some(permit))
        }
    };
    let info = backend.info();
    let checked = request.check(info)?;
    let job = job(backend.as_ref(), &st.settings, &checked)?;
    let policy = policy_headers(info, checked.encrypted_layers)?;

    let permit = match held {
        Some(p) => p,
        None => queue_permit(&st).await?,
    };
    let meta = Meta {
        id: format!("chatcmpl-{:016x}", random_u64()),
        created: unix_now(),
        model: info.model_id.clone(),
    };
    let rx = spawn_generation(Arc::clone(&backend), job, checked.stops, permit);
    let mut response = if checked.stream {
        sse(rx, meta, checked.include_usage, st.settings.keepalive)
    } else {
        collect(rx, &meta).await?
    };
    response.headers_mut().extend(policy);
    Ok(response)
}

/// A place in the one-at-a-time queue, waited for up to the queue timeout.
async fn queue_permit(st: &AppState) -> Result<OwnedSemaphorePermit, ApiError> {
    tokio::time::timeout(
        st.settings.queue_timeout,
        Arc::clone(&st.queue).acquire_owned(),
    )
    .await
    .map_err(|_| {
        ApiError::unavailable(format!(
            "busy: one request generates at a time and another one held the backend for \
             the whole queue timeout of {} s",
            st.settings.queue_timeout.as_secs()
        ))
    })?
    .map_err(|_| ApiError::unavailable("the backend queue is closed"))
}

/// Reads the body up to the limit and the timeout.
async fn read_body(body: Body, headers: &HeaderMap, s: &Settings) -> Result<Vec<u8>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > s.body_limit as u64) {
        return Err(ApiError::too_large(s.body_limit));
    }
    let read = async {
        let mut stream = body.into_data_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::bad_request(None, format!("could not read the request body: {e}"))
            })?;
            if buf.len() + chunk.len() > s.body_limit {
                return Err(ApiError::too_large(s.body_limit));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    };
    tokio::time::timeout(s.body_timeout, read)
        .await
        .map_err(|_| ApiError::body_timeout(s.body_timeout.as_secs()))?
}

/// Templates and tokenizes the conversation and sizes the completion to the context.
fn job(backend: &dyn ChatBackend, settings: &Settings, c: &Checked) -> Result<Job, ApiError> {
    let info = backend.info();
    let template = backend.tokenizer().chat_template();
    let text = template.render(&c.messages, true);
    let prompt = backend.tokenizer().encode(&text).map_err(|e| {
        ApiError::internal(format!(
            "could not tokenize the messages: {}",
            with_causes(&e)
        ))
    })?;
    let room = info.context_length.saturating_sub(prompt.len());
    let max_tokens = c
        .max_tokens
        .unwrap_or_else(|| settings.default_max_tokens.min(room));
    if max_tokens == 0 || max_tokens > room {
        return Err(ApiError::context_exceeded(
            prompt.len(),
            max_tokens,
            info.context_length,
        ));
    }
    // The public context (the system turn) runs in plaintext on the server when its
    // tokens are exactly the prompt's first ones; otherwise everything stays private.
    let public_positions = match c.messages.first() {
        Some(system) if c.public_context => {
            let public = template.render(std::slice::from_ref(system), false);
            let ids = backend.tokenizer().encode(&public).map_err(|e| {
                ApiError::internal(format!(
                    "could not tokenize the public context: {}",
                    with_causes(&e)
                ))
            })?;
            if prompt.starts_with(&ids) {
                ids.len()
            } else {
                0
            }
        }
        _ => 0,
    };
    Ok(Job {
        prompt,
        public_positions,
        max_tokens,
        sampling: SamplingParams {
            temperature: c.temperature,
            top_k: 0,
            top_p: c.top_p,
            seed: c.seed.unwrap_or_else(random_u64),
        },
        encrypted_layers: c.encrypted_layers,
    })
}

/// A random 64-bit value from the standard library's per-process hasher keys.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// The response headers that state the chosen policy and what it leaks, from the
/// audit's measured table, as `selene run` prints it.
fn policy_headers(info: &BackendInfo, k: usize) -> Result<HeaderMap, ApiError> {
    let mut h = HeaderMap::new();
    let strict = k >= info.n_layers;
    let leak = if strict {
        "none released: strict mode, the server sees ciphertexts, their sizes and timing \
         (so the token count)"
            .to_string()
    } else if let Some(audit) = info.audit {
        let row = audit.leak(k, info.flood_sigma).map_err(|e| {
            ApiError::internal(format!("the shipped audit table: {}", with_causes(&e)))
        })?;
        match row {
            Some(r) => format!(
                "token_recovery={:.1}%; field_recovery={}; audit_model={}; audit_k={}; \
                 flood_sigma={}; see docs/audit.md",
                100.0 * r.token_recovery,
                r.field_recovery
                    .map_or("n/a".to_string(), |f| format!("{:.1}%", 100.0 * f)),
                audit.model.name,
                r.k,
                r.flood_sigma
            ),
            None => "not measured".to_string(),
        }
    } else {
        format!(
            "not measured for this model: the leakage audit (docs/audit.md) measured {} \
             only; treat selective mode as not private",
            selene_audit::measured::audited_models().join(" and ")
        )
    };
    let mode = if strict { "strict" } else { "selective" };
    for (name, value) in [
        ("x-selene-mode", mode.to_string()),
        ("x-selene-encrypted-layers", k.to_string()),
        ("x-selene-measured-leakage", leak),
    ] {
        let value = HeaderValue::from_str(&value)
            .map_err(|e| ApiError::internal(format!("header {name}: {e}")))?;
        h.insert(name, value);
    }
    Ok(h)
}

/// What the generation thread reports.
#[derive(Debug)]
enum Event {
    /// Text safe to send.
    Delta(String),
    /// The completion ended.
    Done(FinishReason, Usage),
    /// The backend failed.
    Failed(BackendError),
}

/// Runs the job on a blocking thread (it is CPU-bound) and returns the events. The
/// permit is held until the generation ends; when the receiver is dropped (the client
/// went away) the generation stops at its next token.
fn spawn_generation(
    backend: Arc<dyn ChatBackend>,
    job: Job,
    stops: Vec<String>,
    permit: OwnedSemaphorePermit,
) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel(256);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let tokenizer = backend.tokenizer();
        let mut completion = Completion::new(tokenizer, stops, job.prompt.len(), job.max_tokens);
        let mut failure = None;
        let mut done = false;
        let result = backend.generate(&job, &mut |id| {
            let step = match completion.push(id) {
                Ok(step) => step,
                Err(e) => {
                    failure = Some(BackendError::Failed(e.into()));
                    return ControlFlow::Break(());
                }
            };
            if !step.delta.is_empty() && tx.blocking_send(Event::Delta(step.delta)).is_err() {
                return ControlFlow::Break(());
            }
            match step.finished {
                Some(reason) => {
                    done = true;
                    let _ = tx.blocking_send(Event::Done(reason, completion.usage()));
                    ControlFlow::Break(())
                }
                None => ControlFlow::Continue(()),
            }
        });
        let last = match (result, failure) {
            (Err(e), _) | (Ok(()), Some(e)) => Event::Failed(e),
            (Ok(()), None) if done => return,
            (Ok(()), None) => {
                let step = completion.end_early();
                if !step.delta.is_empty() {
                    let _ = tx.blocking_send(Event::Delta(step.delta));
                }
                Event::Done(FinishReason::Length, completion.usage())
            }
        };
        let _ = tx.blocking_send(last);
    });
    rx
}

/// Identity of one response.
struct Meta {
    id: String,
    created: u64,
    model: String,
}

fn backend_error(e: BackendError) -> ApiError {
    match e {
        BackendError::Unavailable { .. } => ApiError::unavailable(e.to_string()),
        BackendError::Failed(e) => ApiError::internal(format!("generation failed: {e:#}")),
    }
}

fn vanished() -> ApiError {
    ApiError::unavailable("the backend stopped before the completion ended")
}

/// Waits for the whole completion and answers with one JSON body.
async fn collect(mut rx: mpsc::Receiver<Event>, meta: &Meta) -> Result<Response, ApiError> {
    let mut content = String::new();
    loop {
        match rx.recv().await {
            Some(Event::Delta(d)) => content.push_str(&d),
            Some(Event::Done(finish_reason, usage)) => {
                let body = ChatCompletion {
                    id: &meta.id,
                    object: "chat.completion",
                    created: meta.created,
                    model: &meta.model,
                    choices: [Choice {
                        index: 0,
                        message: ReplyMessage {
                            role: "assistant",
                            content,
                        },
                        logprobs: None,
                        finish_reason,
                    }],
                    usage,
                };
                return Ok(Json(body).into_response());
            }
            Some(Event::Failed(e)) => return Err(backend_error(e)),
            None => return Err(vanished()),
        }
    }
}

/// Where a streamed response is.
enum Phase {
    Start,
    Running,
    Ended,
}

struct SseState {
    rx: mpsc::Receiver<Event>,
    meta: Meta,
    include_usage: bool,
    keepalive: Duration,
    phase: Phase,
}

impl SseState {
    fn chunk(&self, delta: Delta<'_>, finish: Option<FinishReason>) -> String {
        let chunk = Chunk {
            id: &self.meta.id,
            object: "chat.completion.chunk",
            created: self.meta.created,
            model: &self.meta.model,
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason: finish,
            }],
            usage: None,
        };
        event(&chunk)
    }

    fn finish(&self, reason: FinishReason, usage: Usage) -> String {
        let mut out = self.chunk(Delta::default(), Some(reason));
        if self.include_usage {
            let chunk = Chunk {
                id: &self.meta.id,
                object: "chat.completion.chunk",
                created: self.meta.created,
                model: &self.meta.model,
                choices: Vec::new(),
                usage: Some(usage),
            };
            out.push_str(&event(&chunk));
        }
        out.push_str("data: [DONE]\n\n");
        out
    }

    /// The next piece of the event stream, or `None` at its end.
    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        let text = match self.phase {
            Phase::Ended => return None,
            Phase::Start => {
                self.phase = Phase::Running;
                let role = Delta {
                    role: Some("assistant"),
                    content: Some(""),
                };
                self.chunk(role, None)
            }
            Phase::Running => match tokio::time::timeout(self.keepalive, self.rx.recv()).await {
                // An SSE comment: keeps proxies and clients from timing out in a long prefill.
                Err(_) => ": keep-alive\n\n".to_string(),
                Ok(Some(Event::Delta(d))) => self.chunk(
                    Delta {
                        role: None,
                        content: Some(&d),
                    },
                    None,
                ),
                Ok(Some(Event::Done(reason, usage))) => {
                    self.phase = Phase::Ended;
                    self.finish(reason, usage)
                }
                // After the 200 status an error can only travel as an event; the API's
                // clients raise it.
                Ok(Some(Event::Failed(e))) => {
                    self.phase = Phase::Ended;
                    event(&backend_error(e).body())
                }
                Ok(None) => {
                    self.phase = Phase::Ended;
                    event(&vanished().body())
                }
            },
        };
        Some((Ok(Bytes::from(text)), self))
    }
}

/// One SSE event carrying `data` as JSON (our types always serialize).
fn event(data: &impl serde::Serialize) -> String {
    serde_json::to_string(data).map_or(String::new(), |s| format!("data: {s}\n\n"))
}

/// Streams the completion as server-sent events in the API's chunk format, ending with
/// `data: [DONE]`.
fn sse(
    rx: mpsc::Receiver<Event>,
    meta: Meta,
    include_usage: bool,
    keepalive: Duration,
) -> Response {
    let state = SseState {
        rx,
        meta,
        include_usage,
        keepalive,
        phase: Phase::Start,
    };
    let stream = futures_util::stream::unfold(state, SseState::next);
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
