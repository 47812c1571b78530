//! The served port before authentication (issue 20): a flood of idle and stalled
//! connections cannot keep a real client out, a frame before `Hello` is capped at a few
//! KiB, and a refused `Hello` closes its connection and makes its address wait.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers may panic"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    generate_on, open, plain, poll_open, remote_code, selective, shared, start_with, Running,
    CONTEXT, TOKEN,
};
use selene_linalg::Client;
use selene_model::LinearStage;
use selene_protocol::net::{Identity, TlsTransport};
use selene_protocol::wire::{self, ErrorCode, Frame, Hello, Message, WIRE_VERSION};
use selene_protocol::{Error, Limits, Policy};

fn server(limits: Limits) -> Running {
    let id = Identity::self_signed(&["localhost".to_string()]).unwrap();
    start_with(1, limits, &id, "127.0.0.1:0")
}

/// A real TLS ClientHello (from rustls), as the first bytes a TLS client sends.
fn client_hello() -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

/// Opens a session and runs one encrypted product on it.
fn session_with_one_product(r: &Running) -> selene_protocol::Result<()> {
    let mut session = open(r, 1, TOKEN)?;
    let layout = session.layouts()[0][0].clone();
    let mut client = Client::new(r.model.params());
    let x: Vec<f32> = (0..576).map(|i| (i as f32 * 0.3).cos()).collect();
    let (input, _) = client.encode_encrypt(&x, 1, &layout).unwrap();
    session.product(0, LinearStage::Qkv, input.to_bytes(r.model.params()))?;
    session.close()
}

/// A short private generation (selective, K = 1) of `max` tokens after `ids`.
fn private_generation(r: &Running, ids: &[u32], max: usize) -> selene_protocol::Result<Vec<u32>> {
    let session = open(r, 1, TOKEN)?;
    let mut client = selective(r, session, 1, ids.len() + max);
    let out = generate_on(&mut client, ids, max, None)?;
    client.strict_mut().session_mut().close()?;
    Ok(out)
}

#[test]
fn idle_sockets_and_stalled_handshakes_do_not_keep_a_real_client_out() {
    let r = server(Limits {
        max_sessions: 1,
        ..Limits::default()
    });
    let ids = shared().tok.encode("The capital of France is").unwrap();
    let want = plain(&ids, 2);
    // 64 raw TCP connections that never start TLS, then 16 that send a ClientHello and
    // stall there; all stay open while the client tries. On the old server (2 x 1 + 4
    // slots for all connections) the client was dropped at accept until they timed out.
    let mut flood: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(&r.addr).unwrap())
        .collect();
    let hello = client_hello();
    for _ in 0..16 {
        let mut s = TcpStream::connect(&r.addr).unwrap();
        s.write_all(&hello).unwrap();
        flood.push(s);
    }
    let t = Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        match private_generation(&r, &ids, 2) {
            Ok(out) => {
                assert_eq!(out, want);
                break;
            }
            Err(e) => assert!(
                t.elapsed() < Duration::from_secs(5),
                "no session within 5 s ({tries} tries): {e}"
            ),
        }
    }
    let took = t.elapsed();
    eprintln!(
        "private generation (2 tokens) through the flood: {} ms, {tries} tries",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    drop(flood);
    poll_open(&r, 0);
    assert_eq!(r.sessions.counters().sessions_ever, 1);
}

#[test]
fn a_large_frame_before_hello_is_refused_without_reading_it() {
    let r = server(Limits::default());
    let limits = Limits::default();
    // The largest valid Hello: header, protocol, token, policy, fingerprint, context
    // and an empty key list, each length-prefixed field at its bound.
    let largest_hello =
        wire::HEADER_BYTES + 2 + 4 + wire::MAX_TOKEN_BYTES + 4 + wire::MAX_POLICY_BYTES + 8 + 4 + 4;
    assert!(largest_hello <= limits.max_hello_bytes, "{largest_hello}");
    // 1 MiB is far below the session's frame limit but above the pre-session one.
    let mut raw =
        TlsTransport::connect_with(&r.addr, &r.trust, TOKEN, Duration::from_secs(5)).unwrap();
    let t = Instant::now();
    let reply = raw.send_bytes(&(1u32 << 20).to_le_bytes()).unwrap();
    let f = wire::decode(&reply, &limits).unwrap();
    assert!(
        matches!(
            f.message,
            Message::Error {
                code: ErrorCode::MessageTooLarge,
                ..
            }
        ),
        "{f:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(matches!(
        raw.send_bytes(&[0; 4]),
        Err(Error::Closed | Error::Io(_))
    ));
    // Once a session is open, frames up to the session limit are read as before.
    session_with_one_product(&r).unwrap();
}

/// A `Hello` frame presenting `token` for one selective layer.
fn hello_frame(r: &Running, token: &[u8]) -> Vec<u8> {
    wire::encode(&Frame {
        request_id: 1,
        message: Message::Hello(Hello {
            protocol: WIRE_VERSION,
            token: token.to_vec(),
            policy: Policy::selective(shared().w.config().n_layers, 1),
            params_fingerprint: r.model.params().fingerprint(),
            context: CONTEXT as u32,
            eval_keys: Vec::new(),
        }),
    })
    .unwrap()
}

#[test]
fn a_refused_hello_closes_its_connection_and_its_address_backs_off() {
    let r = server(Limits {
        free_refusals: 2,
        refusal_backoff: Duration::from_millis(1500),
        ..Limits::default()
    });
    // A wrong token: refused, then the connection is closed (one guess per connection).
    let mut raw =
        TlsTransport::connect_with(&r.addr, &r.trust, TOKEN, Duration::from_secs(5)).unwrap();
    let f = wire::decode(
        &raw.send_bytes(&hello_frame(&r, b"wrong")).unwrap(),
        &Limits::default(),
    )
    .unwrap();
    assert!(matches!(
        f.message,
        Message::Error {
            code: ErrorCode::Unauthorized,
            ..
        }
    ));
    assert!(
        matches!(
            raw.send_bytes(&hello_frame(&r, b"wrong-again")),
            Err(Error::Closed | Error::Io(_))
        ),
        "a second guess on the same connection"
    );
    // The second refusal is still free; the third makes the address wait, and while it
    // waits even the right token is refused without being checked.
    let e = open(&r, 1, b"wrong").unwrap_err();
    assert_eq!(remote_code(e), ErrorCode::Unauthorized);
    let e = open(&r, 1, b"wrong").unwrap_err();
    assert_eq!(remote_code(e), ErrorCode::Unauthorized);
    let t = Instant::now();
    match open(&r, 1, TOKEN).unwrap_err() {
        Error::Remote { code, message } => {
            assert_eq!(code, ErrorCode::Unauthorized);
            assert!(message.contains("retry in"), "{message}");
        }
        e => panic!("{e}"),
    }
    // After the wait the right token opens a session (and clears the address).
    std::thread::sleep(Duration::from_millis(1600).saturating_sub(t.elapsed()));
    session_with_one_product(&r).unwrap();
    let e = open(&r, 1, b"wrong").unwrap_err();
    match e {
        Error::Remote { message, .. } => assert!(!message.contains("retry"), "{message}"),
        e => panic!("{e}"),
    }
    poll_open(&r, 0);
}

#[test]
fn a_raw_socket_that_never_starts_tls_is_dropped_at_the_start_deadline() {
    let r = server(Limits {
        tls_start_timeout: Duration::from_millis(300),
        ..Limits::default()
    });
    let mut tcp = TcpStream::connect(&r.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let n = tcp.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
}
