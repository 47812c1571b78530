//! The network client against a fake server (issue 20, item 10): a server that goes
//! silent fails the client's request at its timeout instead of hanging it, and a reply
//! longer than the request can legitimately get is refused before it is read.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers may panic"
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use selene_linalg::LinalgPreset;
use selene_model::LinearStage;
use selene_protocol::net::{Identity, TlsTransport, Trust};
use selene_protocol::wire::{self, Frame, Message, ModelFacts, SessionLimits, Welcome};
use selene_protocol::{ClientSession, Error, Policy, PRODUCT_REPLY_FACTOR};

type ServerStream = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

/// A one-connection TLS server on a loopback port that runs `script` on its connection.
fn fake_server(script: impl FnOnce(ServerStream) + Send + 'static) -> (String, Trust) {
    let id = Identity::self_signed(&["localhost".to_string()]).unwrap();
    let config = id.server_config().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        let conn = rustls::ServerConnection::new(config).unwrap();
        script(rustls::StreamOwned::new(conn, sock));
    });
    (addr, Trust::Pinned(id.fingerprint()))
}

/// Reads one frame (length prefix included).
fn read_frame(s: &mut ServerStream) -> Vec<u8> {
    let mut prefix = [0u8; 4];
    s.read_exact(&mut prefix).unwrap();
    let mut frame = prefix.to_vec();
    frame.resize(4 + u32::from_le_bytes(prefix) as usize, 0);
    s.read_exact(&mut frame[4..]).unwrap();
    frame
}

/// Runs `f` on a thread and fails the test if it does not finish within `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .expect("the client hung past its timeout")
}

#[test]
fn a_silent_server_fails_the_request_at_the_client_timeout() {
    // The handshake completes, the request is read, then nothing.
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (addr, trust) = fake_server(move |mut s| {
        let _ = read_frame(&mut s);
        let _ = done_rx.recv_timeout(Duration::from_secs(30));
    });
    let took = within(Duration::from_secs(10), move || {
        let t = Instant::now();
        let transport =
            TlsTransport::connect_with(&addr, &trust, b"token", Duration::from_millis(500))
                .unwrap();
        let params = LinalgPreset::Coeff12Wide.build().unwrap();
        let e = ClientSession::open(transport, &params, Policy::selective(30, 1), 64).unwrap_err();
        assert!(matches!(e, Error::Io(_)), "{e}");
        t.elapsed()
    });
    drop(done_tx);
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn a_server_that_never_finishes_tls_fails_the_connect_at_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (_sock, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(30));
    });
    let trust = Trust::Pinned([0; 32]);
    let took = within(Duration::from_secs(10), move || {
        let t = Instant::now();
        let e = TlsTransport::connect_with(&addr, &trust, b"t", Duration::from_millis(500))
            .unwrap_err();
        assert!(matches!(e, Error::Io(_)), "{e}");
        t.elapsed()
    });
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn a_product_reply_beyond_the_bound_is_refused_before_it_is_read() {
    let (addr, trust) = fake_server(|mut s| {
        // Welcome with no layouts (the session encrypts no layer), then a product reply
        // that announces 64 MiB and sends only its prefix.
        let _ = read_frame(&mut s);
        let welcome = wire::encode(&Frame {
            request_id: 1,
            message: Message::Welcome(Welcome {
                session_id: 1,
                model: ModelFacts {
                    layers: 30,
                    d_model: 576,
                    vocab: 49152,
                    fingerprint: [0; 32],
                },
                limits: SessionLimits {
                    max_message_bytes: 64 << 20,
                    max_requests: 10,
                    idle_timeout_ms: 60_000,
                    lifetime_ms: 60_000,
                },
                layouts: Vec::new(),
            }),
        })
        .unwrap();
        s.write_all(&welcome).unwrap();
        s.flush().unwrap();
        let _ = read_frame(&mut s);
        s.write_all(&(64u32 << 20).to_le_bytes()).unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_secs(10));
    });
    let e = within(Duration::from_secs(10), move || {
        let transport = TlsTransport::connect(&addr, &trust, b"token").unwrap();
        let params = LinalgPreset::Coeff12Wide.build().unwrap();
        let mut session =
            ClientSession::open(transport, &params, Policy::selective(30, 0), 64).unwrap();
        session
            .product(0, LinearStage::Qkv, vec![0; 1000])
            .unwrap_err()
    });
    match e {
        Error::FrameTooLarge { len, max } => {
            assert_eq!(len, 64 << 20);
            assert!(max <= 1000 * PRODUCT_REPLY_FACTOR + (64 << 10), "{max}");
        }
        e => panic!("{e}"),
    }
}
