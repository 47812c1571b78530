//! The HTTP layer against a scripted backend: shapes, statuses, streaming, stop
//! sequences, the queue and the API key, without running the model.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use futures_util::StreamExt;
use selene_model::{apply_chat_template, Message, Role, Tokenizer};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::backend::{BackendError, BackendInfo, Catalog, ChatBackend, Job};
use super::routes::{router, Settings};

const REPLY: &str = "Hello there, friend.";

#[derive(Clone, Copy)]
enum Mode {
    Reply,
    Unavailable,
    Slow(Duration),
    SlowTokens(Duration),
}

/// Replies with [`REPLY`] and an end-of-sequence id, whatever the prompt.
struct Scripted {
    info: BackendInfo,
    tokenizer: Tokenizer,
    mode: Mode,
    jobs: Mutex<Vec<Job>>,
    produced: AtomicUsize,
}

impl ChatBackend for Scripted {
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
        self.jobs.lock().unwrap().push(job.clone());
        match self.mode {
            Mode::Unavailable => {
                return Err(BackendError::Unavailable {
                    reason: "connection refused".into(),
                })
            }
            Mode::Slow(d) => std::thread::sleep(d),
            Mode::Reply | Mode::SlowTokens(_) => {}
        }
        let mut ids = self.tokenizer.encode(REPLY).unwrap();
        ids.push(self.tokenizer.eos_ids()[0]);
        for id in ids.into_iter().take(job.max_tokens) {
            if let Mode::SlowTokens(d) = self.mode {
                std::thread::sleep(d);
            }
            self.produced.fetch_add(1, Ordering::SeqCst);
            if on_token(id).is_break() {
                break;
            }
        }
        Ok(())
    }
}

fn scripted(mode: Mode) -> Arc<Scripted> {
    scripted_as("smollm2-test", mode)
}

/// A scripted backend answering as `id`.
fn scripted_as(id: &str, mode: Mode) -> Arc<Scripted> {
    let (_, tokenizer) = crate::cmd::args::load(None).unwrap();
    Arc::new(Scripted {
        info: BackendInfo {
            model_id: id.into(),
            context_length: 64,
            n_layers: 30,
            default_encrypted_layers: 30,
            max_encrypted_layers: 30,
            flood_sigma: 0.01,
            audit: (id == "smollm2-test").then_some(&selene_audit::measured::TABLES[0]),
        },
        tokenizer,
        mode,
        jobs: Mutex::new(Vec::new()),
        produced: AtomicUsize::new(0),
    })
}

/// The endpoint over `backend` alone, as with `--server`.
fn app(backend: &Arc<Scripted>, settings: Settings) -> Router {
    let served = Arc::clone(backend) as Arc<dyn ChatBackend>;
    router(Arc::new(Catalog::single(served, None)), settings)
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }

    /// Asserts the API's error shape and returns the error object.
    fn error(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{}", self.body);
        let e = self.json()["error"].clone();
        for key in ["message", "type", "param", "code"] {
            assert!(e.get(key).is_some(), "{key} missing in {e}");
        }
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        e
    }
}

async fn send(app: &Router, mut req: Request<Body>) -> Reply {
    // As a client on loopback sends it (the endpoint refuses other hosts).
    if !req.headers().contains_key(axum::http::header::HOST) {
        req.headers_mut().insert(
            axum::http::header::HOST,
            axum::http::HeaderValue::from_static("127.0.0.1:8080"),
        );
    }
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

fn post(body: impl Into<Body>) -> Request<Body> {
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("host", "127.0.0.1:8080")
        .body(body.into())
        .unwrap()
}

fn chat(extra: Value) -> Request<Body> {
    let mut req = json!({"model": "smollm2-test", "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0});
    for (k, v) in extra.as_object().unwrap() {
        req[k] = v.clone();
    }
    post(req.to_string())
}

#[tokio::test]
async fn non_streamed_reply_has_the_api_shape_usage_and_policy_headers() {
    let b = scripted(Mode::Reply);
    let app = app(&b, Settings::default());
    let r = send(&app, chat(json!({"max_tokens": 20, "seed": 7}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "smollm2-test");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], REPLY);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    let prompt = b
        .tokenizer
        .encode(&apply_chat_template(
            &[Message::new(Role::User, "Hi")],
            true,
        ))
        .unwrap();
    let completion = b.tokenizer.encode(REPLY).unwrap().len() + 1;
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": prompt.len(), "completion_tokens": completion,
            "total_tokens": prompt.len() + completion})
    );
    let job = b.jobs.lock().unwrap()[0].clone();
    assert_eq!(
        job.prompt, prompt,
        "the messages go through the chat template"
    );
    assert_eq!((job.max_tokens, job.encrypted_layers), (20, 30));
    assert_eq!((job.sampling.temperature, job.sampling.seed), (0.0, 7));
    assert_eq!(r.headers["x-selene-mode"], "strict");
    assert_eq!(r.headers["x-selene-encrypted-layers"], "30");
    assert!(r.headers["x-selene-measured-leakage"]
        .to_str()
        .unwrap()
        .starts_with("none released"));

    // Selective mode states what the audit measured for it.
    let r = send(&app, chat(json!({"selene": {"encrypted_layers": 4}}))).await;
    assert_eq!(r.headers["x-selene-mode"], "selective");
    let leak = r.headers["x-selene-measured-leakage"].to_str().unwrap();
    assert!(leak.starts_with("token_recovery=99.5%"), "{leak}");
    assert!(leak.contains("audit_k=4"), "{leak}");
}

#[tokio::test]
async fn max_tokens_and_stop_sequences_end_the_text() {
    let b = scripted(Mode::Reply);
    let app = app(&b, Settings::default());
    let ids = b.tokenizer.encode(REPLY).unwrap();
    let r = send(&app, chat(json!({"max_tokens": 2}))).await.json();
    assert_eq!(r["choices"][0]["finish_reason"], "length");
    assert_eq!(
        r["choices"][0]["message"]["content"],
        b.tokenizer.decode(&ids[..2]).unwrap()
    );
    assert_eq!(r["usage"]["completion_tokens"], 2);
    let r = send(&app, chat(json!({"stop": [" friend", "xyz"]})))
        .await
        .json();
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    assert_eq!(r["choices"][0]["message"]["content"], "Hello there,");
    // Without max_tokens: the default, cut to the room left in the 64-token context.
    let job = b.jobs.lock().unwrap()[1].clone();
    assert_eq!(job.max_tokens, 64 - job.prompt.len());
}

/// The `data:` payloads of an SSE body, checking the framing.
fn events(body: &str) -> Vec<String> {
    assert!(body.ends_with("\n\n"), "{body}");
    body.split("\n\n")
        .filter(|e| !e.is_empty() && !e.starts_with(':'))
        .map(|e| e.strip_prefix("data: ").unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn streamed_reply_is_sse_chunks_ending_in_done() {
    let b = scripted(Mode::Reply);
    let app = app(&b, Settings::default());
    let r = send(
        &app,
        chat(json!({"stream": true, "stream_options": {"include_usage": true}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "text/event-stream");
    assert_eq!(r.headers["x-selene-mode"], "strict");
    let events = events(&r.body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"
        && c["id"] == chunks[0]["id"]
        && c["model"] == "smollm2-test"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, REPLY);
    let n = chunks.len();
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[n - 1]["choices"], json!([]));
    assert_eq!(
        chunks[n - 1]["usage"]["completion_tokens"],
        b.tokenizer.encode(REPLY).unwrap().len() + 1
    );
    // Text chunks one per token: streaming really streams.
    assert!(n >= 5, "{n} chunks");
}

#[tokio::test]
async fn bad_requests_get_the_documented_status_and_shape() {
    let b = scripted(Mode::Reply);
    let app = app(
        &b,
        Settings {
            body_limit: 2000,
            ..Settings::default()
        },
    );
    let e = send(&app, post("{\"messages\": ["))
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(e["type"], "invalid_request_error");
    let e = send(&app, post("{\"model\": \"x\"}"))
        .await
        .error(StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap().contains("messages"), "{e}");
    let unknown_role = json!({"messages": [{"role": "wizard", "content": "x"}]});
    let e = send(&app, post(unknown_role.to_string()))
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(e["param"], "messages[0].role");
    for (extra, param, code) in [
        (json!({"max_tokens": 0}), "max_tokens", Value::Null),
        (
            json!({"max_tokens": 64}),
            "max_tokens",
            json!("context_length_exceeded"),
        ),
        (json!({"temperature": 2.5}), "temperature", Value::Null),
        (json!({"temperature": -1}), "temperature", Value::Null),
    ] {
        let e = send(&app, chat(extra.clone()))
            .await
            .error(StatusCode::BAD_REQUEST);
        assert_eq!((&e["param"], &e["code"]), (&json!(param), &code), "{extra}");
    }
    // Oversized: by Content-Length, and streamed without one.
    let big = json!({"messages": [{"role": "user", "content": "x".repeat(3000)}]}).to_string();
    let e = send(&app, post(big.clone()))
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(e["code"], "request_too_large");
    let chunks = futures_util::stream::iter(
        big.into_bytes()
            .chunks(500)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    send(&app, post(Body::from_stream(chunks)))
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE);
    let unknown = Request::get("/v1/completions").body(Body::empty()).unwrap();
    send(&app, unknown).await.error(StatusCode::NOT_FOUND);
    let wrong_method = Request::get("/v1/chat/completions")
        .body(Body::empty())
        .unwrap();
    send(&app, wrong_method)
        .await
        .error(StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        b.jobs.lock().unwrap().is_empty(),
        "nothing reached the backend"
    );
}

#[tokio::test]
async fn the_api_key_guards_every_route() {
    let b = scripted(Mode::Reply);
    let app = app(
        &b,
        Settings {
            api_key: Some("sk-local".into()),
            ..Settings::default()
        },
    );
    let models = |key: Option<&str>| {
        let mut req = Request::get("/v1/models");
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        req.body(Body::empty()).unwrap()
    };
    let e = send(&app, models(None))
        .await
        .error(StatusCode::UNAUTHORIZED);
    assert_eq!(e["code"], "invalid_api_key");
    send(&app, models(Some("sk-locaL")))
        .await
        .error(StatusCode::UNAUTHORIZED);
    send(&app, chat(json!({})))
        .await
        .error(StatusCode::UNAUTHORIZED);
    let r = send(&app, models(Some("sk-local"))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({"object": "list", "data": [{"id": "smollm2-test", "object": "model",
            "created": r.json()["data"][0]["created"], "owned_by": "selene"}]})
    );
    let one = Request::get("/v1/models/smollm2-test")
        .header("authorization", "Bearer sk-local")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, one).await.json()["id"], "smollm2-test");
    let other = Request::get("/v1/models/gpt-4")
        .header("authorization", "Bearer sk-local")
        .body(Body::empty())
        .unwrap();
    let e = send(&app, other).await.error(StatusCode::NOT_FOUND);
    assert_eq!(e["code"], "model_not_found");
    assert!(b.jobs.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_unreachable_backend_is_503_or_an_error_event() {
    let b = scripted(Mode::Unavailable);
    let app = app(&b, Settings::default());
    let e = send(&app, chat(json!({})))
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(e["code"], "backend_unavailable");
    let r = send(&app, chat(json!({"stream": true}))).await;
    assert_eq!(r.status, StatusCode::OK);
    let events = events(&r.body);
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "backend_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_queued_past_the_timeout_gets_503() {
    let b = scripted(Mode::Slow(Duration::from_millis(1500)));
    let app = app(
        &b,
        Settings {
            queue_timeout: Duration::from_millis(200),
            ..Settings::default()
        },
    );
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, chat(json!({}))).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = send(&app, chat(json!({})))
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(e["message"].as_str().unwrap().contains("busy"), "{e}");
    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    // Once the first is done the queue is free again.
    assert_eq!(send(&app, chat(json!({}))).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_stops_the_generation_and_frees_the_queue() {
    let b = scripted(Mode::SlowTokens(Duration::from_millis(150)));
    let total = b.tokenizer.encode(REPLY).unwrap().len() + 1;
    let app = app(
        &b,
        Settings {
            queue_timeout: Duration::from_millis(500),
            ..Settings::default()
        },
    );
    let resp = app
        .clone()
        .oneshot(chat(json!({"stream": true})))
        .await
        .unwrap();
    let mut body = resp.into_body().into_data_stream();
    // The role chunk, then the first text: the generation runs.
    for _ in 0..2 {
        body.next().await.unwrap().unwrap();
    }
    drop(body);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let produced = b.produced.load(Ordering::SeqCst);
    assert!(
        produced < total,
        "{produced} of {total} tokens made for nobody"
    );
    // The permit went with the generation: the next request is served.
    let r = send(&app, chat(json!({}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// The same-site checks: a text/plain POST (a cross-site form or `fetch` without a
/// preflight) is 415; a foreign `Origin` or a non-loopback `Host` is 403 unless the
/// endpoint allows remote hosts; the endpoint's own origin and IPv6 loopback pass.
#[tokio::test]
async fn cross_site_requests_are_refused() {
    let b = scripted(Mode::Reply);
    let app = app(&b, Settings::default());
    let body = json!({"model": "smollm2-test", "messages": [{"role": "user", "content": "Hi"}]})
        .to_string();
    let with = |headers: &[(&'static str, &str)], content_type: &str| {
        let mut r = Request::post("/v1/chat/completions").header("content-type", content_type);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(Body::from(body.clone())).unwrap()
    };
    let e = send(&app, with(&[], "text/plain")).await;
    assert_eq!(
        e.error(StatusCode::UNSUPPORTED_MEDIA_TYPE)["code"],
        "unsupported_media_type"
    );
    let e = send(
        &app,
        with(&[("origin", "http://evil.example")], "application/json"),
    )
    .await;
    assert_eq!(e.error(StatusCode::FORBIDDEN)["code"], "cross_site_request");
    // A look-alike of the endpoint's origin on another port is foreign too.
    let e = send(
        &app,
        with(&[("origin", "http://127.0.0.1:9999")], "application/json"),
    )
    .await;
    e.error(StatusCode::FORBIDDEN);
    let e = send(&app, with(&[("host", "evil.example")], "application/json")).await;
    assert_eq!(e.error(StatusCode::FORBIDDEN)["code"], "cross_site_request");
    let e = send(
        &app,
        with(
            &[("host", "127.0.0.1.evil.example:8080")],
            "application/json",
        ),
    )
    .await;
    e.error(StatusCode::FORBIDDEN);
    let models = |host: &str| {
        Request::get("/v1/models")
            .header("host", host)
            .body(Body::empty())
            .unwrap()
    };
    send(&app, models("attacker.example"))
        .await
        .error(StatusCode::FORBIDDEN);
    // Allowed: same origin, IPv6 loopback, localhost, parameters on the media type.
    let ok = send(
        &app,
        with(
            &[("origin", "http://127.0.0.1:8080")],
            "application/json; charset=utf-8",
        ),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    for host in ["[::1]:8080", "localhost:8080", "localhost"] {
        assert_eq!(
            send(&app, models(host)).await.status,
            StatusCode::OK,
            "{host}"
        );
    }
    let remote = app_with_remote(&b);
    assert_eq!(
        send(&remote, models("selene.example.org")).await.status,
        StatusCode::OK
    );
    let e = send(
        &remote,
        Request::get("/v1/models")
            .header("host", "selene.example.org")
            .header("origin", "http://evil.example")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    e.error(StatusCode::FORBIDDEN);
}

fn app_with_remote(b: &Arc<Scripted>) -> Router {
    app(
        b,
        Settings {
            allow_remote: true,
            ..Settings::default()
        },
    )
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn listed(r: &Reply) -> Vec<String> {
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "list");
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(
                (&m["object"], &m["owned_by"]),
                (&json!("model"), &json!("selene"))
            );
            assert!(
                m["created"].as_u64().is_some_and(|t| t > 1_700_000_000),
                "{m}"
            );
            m["id"].as_str().unwrap().to_string()
        })
        .collect()
}

/// A `model` the endpoint does not answer with gets the API's 404 body, word for word,
/// before any work; an absent `model` is the served one.
#[tokio::test]
async fn an_unknown_model_is_404_model_not_found_exactly() {
    let b = scripted(Mode::Reply);
    let app = app(&b, Settings::default());
    for name in ["gpt-4", "qwen2.5-coder-0.5b", ""] {
        let r = send(&app, chat(json!({"model": name}))).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
        assert_eq!(
            r.json(),
            json!({"error": {
                "message": format!("The model `{name}` does not exist or you do not have access to it."),
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found"}}),
            "{name}"
        );
    }
    let r = send(&app, get("/v1/models/gpt-4")).await;
    assert_eq!(r.error(StatusCode::NOT_FOUND)["code"], "model_not_found");
    assert!(
        b.jobs.lock().unwrap().is_empty(),
        "nothing reached the backend"
    );
    // No `model` at all: the served model answers, as before.
    let mut req = json!({"messages": [{"role": "user", "content": "Hi"}]});
    let r = send(&app, post(req.to_string())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["model"], "smollm2-test");
    req["model"] = json!("SMOLLM2-TEST");
    assert_eq!(
        send(&app, post(req.to_string())).await.status,
        StatusCode::OK
    );
    // With one served model (as against `selene serve`), the list is that model.
    assert_eq!(
        listed(&send(&app, get("/v1/models")).await),
        ["smollm2-test"]
    );
}

/// The embedded endpoint lists the served model first, then the other models of the
/// store; a request naming one (by id or store name, any case) gets it, made by the
/// loader once and kept; a failed load is a 500 and is tried again next time.
#[tokio::test]
async fn the_model_field_selects_among_listed_models_each_loaded_once() {
    use selene_model::store::{KnownModel, QWEN_CODER_05B, QWEN_CODER_15B, SMOLLM2};
    let served = scripted(Mode::Reply);
    let loads = Arc::new(Mutex::new(Vec::<&str>::new()));
    let made: Arc<Mutex<Vec<Arc<Scripted>>>> = Arc::default();
    let loader = {
        let (loads, made) = (Arc::clone(&loads), Arc::clone(&made));
        move |m: &'static KnownModel| -> anyhow::Result<Arc<dyn ChatBackend>> {
            loads.lock().unwrap().push(m.name);
            anyhow::ensure!(m.name != QWEN_CODER_15B.name, "out of memory");
            let b = scripted_as(m.id, Mode::Reply);
            made.lock().unwrap().push(Arc::clone(&b));
            Ok(b)
        }
    };
    // SmolLM2 is served under another id here: listed once, by the served id.
    let catalog = Catalog::with_stored(
        Arc::clone(&served) as Arc<dyn ChatBackend>,
        Some(&SMOLLM2),
        &[&SMOLLM2, &QWEN_CODER_05B, &QWEN_CODER_15B],
        Box::new(loader),
    );
    let app = router(Arc::new(catalog), Settings::default());
    assert_eq!(
        listed(&send(&app, get("/v1/models")).await),
        [
            "smollm2-test",
            "qwen2.5-coder-0.5b-instruct",
            "qwen2.5-coder-1.5b-instruct"
        ]
    );
    assert!(loads.lock().unwrap().is_empty(), "listing loads nothing");
    let r = send(&app, get("/v1/models/qwen2.5-coder-0.5b")).await;
    assert_eq!(r.json()["id"], "qwen2.5-coder-0.5b-instruct");

    let r = send(&app, chat(json!({"model": "smollm2"}))).await;
    assert_eq!(r.json()["model"], "smollm2-test", "{}", r.body);
    for name in ["qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct"] {
        let r = send(&app, chat(json!({"model": name}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.json()["model"], "qwen2.5-coder-0.5b-instruct");
        assert_eq!(r.json()["choices"][0]["message"]["content"], REPLY);
    }
    // The shipped audit measured SmolLM2 only: no figure is claimed for another model.
    let r = send(
        &app,
        chat(json!({"model": "qwen2.5-coder-0.5b", "selene": {"encrypted_layers": 4}})),
    )
    .await;
    assert_eq!(r.headers["x-selene-mode"], "selective");
    let leak = r.headers["x-selene-measured-leakage"].to_str().unwrap();
    assert!(leak.starts_with("not measured for this model"), "{leak}");
    assert_eq!(*loads.lock().unwrap(), [QWEN_CODER_05B.name]);
    assert_eq!(made.lock().unwrap()[0].jobs.lock().unwrap().len(), 3);
    assert_eq!(served.jobs.lock().unwrap().len(), 1);

    for _ in 0..2 {
        let r = send(&app, chat(json!({"model": "qwen2.5-coder-1.5b"}))).await;
        let e = r.error(StatusCode::INTERNAL_SERVER_ERROR);
        let message = e["message"].as_str().unwrap();
        assert!(message.contains("qwen2.5-coder-1.5b-instruct"), "{message}");
        assert!(message.contains("out of memory"), "{message}");
    }
    assert_eq!(
        loads.lock().unwrap().len(),
        3,
        "a failed load is tried again"
    );
    let e = send(&app, chat(json!({"model": "gpt-4"})))
        .await
        .error(StatusCode::NOT_FOUND);
    assert_eq!(e["code"], "model_not_found");
}
