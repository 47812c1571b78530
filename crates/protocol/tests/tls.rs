//! The session protocol over real TLS on loopback: generation matches plaintext in strict
//! and selective mode, and bad peers get their error without disturbing others.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers may panic"
)]

use std::io::Write;
use std::ops::ControlFlow;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use selene_linalg::{Client, LinalgPreset};
use selene_model::{
    generate, store, LinearStage, QuantLinear, Sampler, SamplingParams, Tokenizer, Weights,
};
use selene_protocol::net::{Identity, TlsServer, TlsTransport, Trust};
use selene_protocol::wire::{self, ErrorCode, Message};
use selene_protocol::{
    generate_session, ClientSession, Error, Limits, Policy, PreparedModel, SelectiveClient,
    SessionServer, StrictLinear,
};

const TOKEN: &[u8] = b"loopback-token";

struct Shared {
    w: Arc<Weights>,
    tok: Tokenizer,
    model: Arc<PreparedModel>,
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let w = Arc::new(store::load(None).unwrap());
        let tok = Tokenizer::from_gguf(w.gguf()).unwrap();
        let params = LinalgPreset::Coeff12.build().unwrap();
        let layers = w.config().n_layers;
        let model = Arc::new(PreparedModel::new(&params, &w, layers, &mut || {}).unwrap());
        Shared { w, tok, model }
    })
}

/// A TLS server on a free loopback port with its own session table.
struct Running {
    addr: String,
    trust: Trust,
    sessions: Arc<SessionServer>,
    _rt: tokio::runtime::Runtime,
}

fn start() -> Running {
    let s = shared();
    let sessions = Arc::new(
        SessionServer::new(s.model.clone(), s.w.clone(), Limits::default()).with_token(TOKEN),
    );
    let id = Identity::self_signed(&["localhost".to_string()]).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt
        .block_on(TlsServer::bind("127.0.0.1:0", &id, sessions.clone()))
        .unwrap();
    let addr = server.local_addr().unwrap().to_string();
    rt.spawn(server.run());
    Running {
        addr,
        trust: Trust::Pinned(id.fingerprint()),
        sessions,
        _rt: rt,
    }
}

fn greedy() -> Sampler {
    Sampler::new(SamplingParams {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
    })
    .unwrap()
}

fn open(
    r: &Running,
    k: usize,
    token: &[u8],
) -> selene_protocol::Result<ClientSession<TlsTransport>> {
    let s = shared();
    let layers = s.w.config().n_layers;
    let t = TlsTransport::connect(&r.addr, &r.trust, token)?;
    ClientSession::open(t, s.model.params(), Policy::selective(layers, k), 64)
}

fn plain(ids: &[u32], max: usize) -> Vec<u32> {
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

/// Greedy generation over TLS with `k` encrypted layers (30: strict mode).
fn over_tls(r: &Running, k: usize, ids: &[u32], max: usize) -> Vec<u32> {
    let s = shared();
    let session = open(r, k, TOKEN).unwrap();
    let mut strict =
        StrictLinear::from_session(&s.w, selene_linalg::Client::new(s.model.params()), session)
            .unwrap();
    let out = if k == s.w.config().n_layers {
        generate(&s.w, ids, max, &[], &mut greedy(), &mut strict, &mut |_| {
            Ok(ControlFlow::Continue(()))
        })
        .unwrap()
    } else {
        let mut client =
            SelectiveClient::new_dangerous(&s.w, k, strict, 0.01, ids.len() + max).unwrap();
        let out = generate_session(&mut client, ids, max, &[], &mut greedy(), &mut |_| {
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        client.strict_mut().session_mut().close().unwrap();
        return out;
    };
    strict.session_mut().close().unwrap();
    out
}

#[test]
fn tls_generation_matches_plaintext_in_strict_and_selective_mode() {
    let r = start();
    let s = shared();
    let prompts = [
        "The patient was diagnosed with",
        "Transfer $4,250 from",
        "Dear Anna,",
    ];
    let t = Instant::now();
    for (i, p) in prompts.iter().enumerate() {
        let ids = s.tok.encode(p).unwrap();
        let want = plain(&ids, 8);
        for k in [1, 4] {
            assert_eq!(over_tls(&r, k, &ids, 8), want, "K = {k}, {p:?}");
        }
        // Strict mode costs about 1 s per token: two prompts.
        if i < 2 {
            assert_eq!(over_tls(&r, 30, &ids, 8), want, "strict, {p:?}");
        }
    }
    eprintln!("tls generation: {:.1} s", t.elapsed().as_secs_f64());
    let c = r.sessions.counters();
    assert_eq!(c.sessions_open, 0);
    assert_eq!(c.sessions_ever, 8);
    assert_eq!(c.errors, 0);
}

fn remote_code(e: Error) -> ErrorCode {
    match e {
        Error::Remote { code, .. } => code,
        e => panic!("expected a server error, got {e}"),
    }
}

#[test]
fn bad_peers_get_errors_and_the_server_keeps_serving() {
    let r = start();
    let s = shared();

    // A wrong token is refused.
    assert_eq!(
        remote_code(open(&r, 1, b"wrong").unwrap_err()),
        ErrorCode::Unauthorized
    );
    // A wrong pin fails the handshake.
    let bad_pin = Trust::Pinned([0; 32]);
    assert!(matches!(
        TlsTransport::connect(&r.addr, &bad_pin, TOKEN),
        Err(Error::Tls(_) | Error::Io(_))
    ));
    // Plain HTTP on the TLS port: dropped.
    let mut tcp = std::net::TcpStream::connect(&r.addr).unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();

    // A tampered ciphertext gets BadPayload; the session goes on.
    let mut session = open(&r, 1, TOKEN).unwrap();
    let layout = session.layouts()[0][0].clone();
    let mut client = Client::new(s.model.params());
    let x: Vec<f32> = (0..576).map(|i| (i as f32 * 0.3).cos()).collect();
    let (input, _) = client.encode_encrypt(&x, 1, &layout).unwrap();
    let ct = input.to_bytes(s.model.params());
    let mut bad = ct.clone();
    bad[5] ^= 0x40; // the ciphertext format's kind byte
    let e = session.product(0, LinearStage::Qkv, bad).unwrap_err();
    assert_eq!(remote_code(e), ErrorCode::BadPayload);
    session.product(0, LinearStage::Qkv, ct.clone()).unwrap();

    // An oversized frame: an error, then that connection (only) is closed.
    let mut raw = TlsTransport::connect(&r.addr, &r.trust, TOKEN).unwrap();
    let too_big = (Limits::default().max_message_bytes as u32 + 1).to_le_bytes();
    let reply = raw.send_bytes(&too_big).unwrap();
    let f = wire::decode(&reply, &Limits::default()).unwrap();
    assert!(matches!(
        f.message,
        Message::Error {
            code: ErrorCode::MessageTooLarge,
            ..
        }
    ));
    assert!(matches!(
        raw.send_bytes(&too_big),
        Err(Error::Closed | Error::Io(_))
    ));

    // The earlier session is unaffected.
    session.product(0, LinearStage::Qkv, ct).unwrap();
    session.close().unwrap();
    assert!(matches!(
        session.product(0, LinearStage::Qkv, vec![]),
        Err(Error::Closed)
    ));
    poll_open(&r, 0);
}

fn poll_open(r: &Running, want: usize) {
    let t = Instant::now();
    while r.sessions.counters().sessions_open != want {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "sessions open: {:?}",
            r.sessions.counters()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_vanished_client_frees_its_session_while_another_completes() {
    let r = start();
    let s = shared();
    let ids = s.tok.encode("The patient was diagnosed with").unwrap();
    let want = plain(&ids, 8);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| over_tls(&r, 4, &ids, 8));
        // This client starts a strict generation and vanishes after two tokens.
        let session = open(&r, 30, TOKEN).unwrap();
        let mut strict =
            StrictLinear::from_session(&s.w, selene_linalg::Client::new(s.model.params()), session)
                .unwrap();
        let mut n = 0;
        let cut = generate(&s.w, &ids, 8, &[], &mut greedy(), &mut strict, &mut |_| {
            n += 1;
            Ok(if n == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })
        .unwrap();
        assert_eq!(cut, want[..2]);
        assert!(r.sessions.counters().sessions_open >= 1);
        drop(strict); // no Close: the TCP connection just ends
        assert_eq!(other.join().unwrap(), want);
    });
    poll_open(&r, 0);
    assert_eq!(r.sessions.counters().sessions_ever, 2);
}
