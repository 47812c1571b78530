//! Helpers shared by the TLS integration tests: the model loaded once per test binary,
//! a TLS server on a loopback port, sessions, greedy generation over TLS and in plaintext.

#![allow(
    dead_code,
    reason = "each test binary compiles this module and uses a different part of it"
)]

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use selene_linalg::LinalgPreset;
use selene_model::{
    forward, generate, store, KvCache, Logits, QuantLinear, Sampler, SamplingParams, Tokenizer,
    Weights,
};
use selene_protocol::net::{Identity, TlsServer, TlsTransport, Trust};
use selene_protocol::wire::ErrorCode;
use selene_protocol::{
    generate_session, model_fingerprint, ClientSession, Error, InProcess, Limits, Policy,
    PreparedModel, PrivateGenerator, PrivateStats, SelectiveClient, SessionServer, StrictLinear,
};

/// The bearer token every test server accepts.
pub const TOKEN: &[u8] = b"loopback-token";

/// Context positions each test session asks for.
pub const CONTEXT: usize = 64;

/// The model and its tokenizer, loaded once per test binary.
pub struct Shared {
    pub w: Arc<Weights>,
    pub tok: Tokenizer,
}

pub fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let w = Arc::new(store::load(None).unwrap());
        let tok = Tokenizer::from_gguf(w.gguf()).unwrap();
        Shared { w, tok }
    })
}

/// Prepared models by layer count and preset.
type PreparedCache = Mutex<HashMap<(usize, LinalgPreset), Arc<PreparedModel>>>;

/// The model prepared for its first `layers` layers at `preset` (once per pair).
pub fn prepared(layers: usize, preset: LinalgPreset) -> Arc<PreparedModel> {
    static P: OnceLock<PreparedCache> = OnceLock::new();
    let mut map = P.get_or_init(Default::default).lock().unwrap();
    map.entry((layers, preset))
        .or_insert_with(|| {
            let params = preset.build().unwrap();
            Arc::new(PreparedModel::new(&params, &shared().w, layers, &mut || {}).unwrap())
        })
        .clone()
}

/// Layers the test servers prepare at `coeff12wide` for selective sessions.
pub const SELECTIVE_LAYERS: usize = 1;

/// A TLS server on a loopback port with its own session table.
pub struct Running {
    pub addr: String,
    pub trust: Trust,
    pub sessions: Arc<SessionServer>,
    /// The selective sessions' model (`coeff12wide`, [`SELECTIVE_LAYERS`] layers).
    pub model: Arc<PreparedModel>,
    /// The strict sessions' model (`coeff12`, every layer), when the server was started
    /// with the model's full depth.
    pub strict_model: Option<Arc<PreparedModel>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Running {
    /// The prepared model a session with `k` encrypted layers uses: the strict model at
    /// the full depth (when served), else the selective one.
    pub fn model_for(&self, k: usize) -> &Arc<PreparedModel> {
        match &self.strict_model {
            Some(m) if k == shared().w.config().n_layers => m,
            _ => &self.model,
        }
    }

    /// Stops the server as a crash or restart would: its tasks and connections are
    /// dropped without a goodbye.
    pub fn stop(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// A server for `layers` prepared layers with default limits on a free port.
pub fn start(layers: usize) -> Running {
    let id = Identity::self_signed(&["localhost".to_string()]).unwrap();
    start_with(layers, Limits::default(), &id, "127.0.0.1:0")
}

/// Layers a full-depth test server prepares at `coeff12wide`, as `selene serve` does by
/// default (`--selective-layers 4`): selective sessions up to K = 4.
pub const FULL_SELECTIVE_LAYERS: usize = 4;

/// A server with `limits` and `id`'s certificate on `addr`, serving selective sessions
/// (the first [`SELECTIVE_LAYERS`] layers at `coeff12wide`) and, when `layers` is the
/// model's depth, strict sessions at `coeff12` and selective ones up to
/// [`FULL_SELECTIVE_LAYERS`].
pub fn start_with(layers: usize, limits: Limits, id: &Identity, addr: &str) -> Running {
    let full = layers == shared().w.config().n_layers;
    let wide_layers = if full {
        FULL_SELECTIVE_LAYERS
    } else {
        SELECTIVE_LAYERS.min(layers)
    };
    let model = prepared(wide_layers, LinalgPreset::Coeff12Wide);
    let strict_model = full.then(|| prepared(layers, LinalgPreset::Coeff12));
    let mut sessions = SessionServer::new(model.clone(), shared().w.clone(), limits);
    if let Some(m) = &strict_model {
        sessions = sessions.with_model(m.clone());
    }
    let mut r = serve(Arc::new(sessions.with_token(TOKEN)), model, id, addr);
    r.strict_model = strict_model;
    r
}

/// A TLS server for `sessions` (whose selective model is `model`) with `id`'s
/// certificate on `addr`.
pub fn serve(
    sessions: Arc<SessionServer>,
    model: Arc<PreparedModel>,
    id: &Identity,
    addr: &str,
) -> Running {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt
        .block_on(TlsServer::bind(addr, id, sessions.clone()))
        .unwrap();
    let addr = server.local_addr().unwrap().to_string();
    rt.spawn(server.run());
    Running {
        addr,
        trust: pinned(id),
        sessions,
        model,
        strict_model: None,
        rt: Some(rt),
    }
}

/// Trust in exactly `id`'s certificate.
pub fn pinned(id: &Identity) -> Trust {
    Trust::Pinned(id.fingerprint())
}

pub fn greedy() -> Sampler {
    Sampler::new(SamplingParams {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
    })
    .unwrap()
}

/// Opens a session with `k` encrypted layers (selective mode below the model's depth).
pub fn open(
    r: &Running,
    k: usize,
    token: &[u8],
) -> selene_protocol::Result<ClientSession<TlsTransport>> {
    let layers = shared().w.config().n_layers;
    let t = TlsTransport::connect(&r.addr, &r.trust, token)?;
    let params = r.model_for(k).params();
    ClientSession::open(t, params, Policy::selective(layers, k), CONTEXT)
}

/// Smallest gap between the best and second-best plaintext logit at any greedy step:
/// encrypted layers perturb the logits slightly, so a prompt whose greedy choice is
/// nearly a tie could differ from plaintext without anything being wrong.
pub fn greedy_margin(ids: &[u32], want: &[u32]) -> f32 {
    let w = &shared().w;
    let seq: Vec<u32> = ids.iter().chain(want).copied().collect();
    let mut cache = KvCache::new(w.config(), seq.len());
    let logits = forward(w, &seq, &mut cache, &mut QuantLinear::new(w), Logits::All).unwrap();
    let v = w.config().vocab_size;
    (ids.len() - 1..seq.len() - 1)
        .map(|p| {
            let row = &logits[p * v..(p + 1) * v];
            let (mut a, mut b) = (f32::MIN, f32::MIN);
            for &x in row {
                if x > a {
                    (a, b) = (x, a);
                } else if x > b {
                    b = x;
                }
            }
            a - b
        })
        .fold(f32::MAX, f32::min)
}

/// Greedy plaintext generation: the reference every encrypted run must match.
pub fn plain(ids: &[u32], max: usize) -> Vec<u32> {
    let w = &shared().w;
    generate(
        w,
        ids,
        max,
        &[],
        &mut greedy(),
        &mut QuantLinear::new(w),
        &mut |_| Ok(ControlFlow::Continue(())),
    )
    .unwrap()
}

/// A selective-mode client (`k` < the model's depth) on an open session, with decryption
/// flooding at `coeff12wide`.
pub fn selective(
    r: &Running,
    session: ClientSession<TlsTransport>,
    k: usize,
    capacity: usize,
) -> SelectiveClient<'static, TlsTransport> {
    let w: &'static Weights = &shared().w;
    let strict =
        StrictLinear::from_session(w, selene_linalg::Client::new(r.model.params()), session)
            .unwrap();
    SelectiveClient::new(w, k, strict, 0.01, capacity).unwrap()
}

/// Greedy selective generation of up to `max` tokens on `client`, stopping after
/// `stop_after` tokens when given (the caller then drops the client mid-session).
pub fn generate_on(
    client: &mut SelectiveClient<'_, TlsTransport>,
    ids: &[u32],
    max: usize,
    stop_after: Option<usize>,
) -> selene_protocol::Result<Vec<u32>> {
    let mut n = 0;
    generate_session(client, ids, max, &[], &mut greedy(), &mut |_| {
        n += 1;
        Ok(if Some(n) == stop_after {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })
}

/// Greedy generation over TLS with `k` encrypted layers (the model's depth: strict mode).
pub fn over_tls(r: &Running, k: usize, ids: &[u32], max: usize) -> Vec<u32> {
    let s = shared();
    let session = open(r, k, TOKEN).unwrap();
    if k == s.w.config().n_layers {
        let mut strict = StrictLinear::from_session(
            &s.w,
            selene_linalg::Client::new(r.model_for(k).params()),
            session,
        )
        .unwrap();
        let out = generate(&s.w, ids, max, &[], &mut greedy(), &mut strict, &mut |_| {
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        strict.session_mut().close().unwrap();
        return out;
    }
    let mut client = selective(r, session, k, ids.len() + max);
    let out = generate_on(&mut client, ids, max, None).unwrap();
    client.strict_mut().session_mut().close().unwrap();
    out
}

/// The server's error code in `e`.
pub fn remote_code(e: Error) -> ErrorCode {
    match e {
        Error::Remote { code, .. } => code,
        e => panic!("expected a server error, got {e}"),
    }
}

/// Waits (at most 20 s) until the server has `want` sessions open.
pub fn poll_open(r: &Running, want: usize) {
    let t = Instant::now();
    while r.sessions.counters().sessions_open != want {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "sessions open: {:?}, want {want}",
            r.sessions.counters()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `steps` greedy tokens of a model pass `run`: the first from `run(prompt)`, each next
/// from `run(&[previous token])` (the caller's pass holds its own cache).
pub fn greedy_passes(
    prompt: &[u32],
    steps: usize,
    run: &mut dyn FnMut(&[u32]) -> Vec<f32>,
) -> Vec<u32> {
    let mut out = vec![selene_model::sampling::argmax(&run(prompt))];
    while out.len() < steps {
        let last = out[out.len() - 1];
        out.push(selene_model::sampling::argmax(&run(&[last])));
    }
    out
}

/// `max` greedy tokens after `ids` from a private session under `policy` with the
/// in-process `server` (token `token`), the client holding `w` (the full model or its
/// bundle) and a fresh key; the tokens and what the generation cost.
pub fn generate_in_process(
    w: &Weights,
    server: &Arc<SessionServer>,
    token: &[u8],
    policy: Policy,
    ids: &[u32],
    max: usize,
) -> (Vec<u32>, PrivateStats) {
    let params = policy.preset.build().unwrap();
    PrivateGenerator::open(
        w,
        &model_fingerprint(w),
        &params,
        policy,
        InProcess::connect(server, token),
        selene_linalg::Client::new(&params),
        None,
    )
    .unwrap()
    .generate(None, ids, max, &[], &mut greedy(), &mut |_| {
        Ok(ControlFlow::Continue(()))
    })
    .unwrap()
}
