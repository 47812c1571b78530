//! Faults against the real TLS server on loopback: a half-sent frame, a trickling peer,
//! replayed and reordered request ids, a ciphertext moved between sessions, a server
//! restart, garbage on the port. In each case the server answers or drops that peer
//! only, a control session still generates correctly, and no session stays allocated.
//! (A client vanishing mid-generation is in `tls.rs` and, at K = 1 under load, `load.rs`.)

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

use common::{open, over_tls, plain, poll_open, shared, start_with, Running, TOKEN};
use selene_linalg::{Client, EncryptedOutput, Layout, TokenScales};
use selene_model::LinearStage;
use selene_protocol::net::{Identity, TlsTransport};
use selene_protocol::wire::{self, ErrorCode, Frame, Message};
use selene_protocol::{ClientSession, Error, Limits};

/// Short timeouts so the stalled-peer cases end quickly.
fn short() -> Limits {
    Limits {
        frame_timeout: Duration::from_secs(1),
        handshake_timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

fn server(limits: Limits) -> Running {
    let id = Identity::self_signed(&["localhost".to_string()]).unwrap();
    start_with(1, limits, &id, "127.0.0.1:0")
}

/// A control session: greedy generation over `r` matches plaintext.
fn control(r: &Running) {
    let ids = shared().tok.encode("Dear Anna,").unwrap();
    assert_eq!(over_tls(r, 1, &ids, 4), plain(&ids, 4));
}

/// A fixed input row for layer 0's QKV product.
fn input() -> Vec<f32> {
    (0..576).map(|i| (i as f32 * 0.37).sin()).collect()
}

/// `x` encrypted under `client`'s key for `layout`, as wire bytes.
fn encrypt(client: &mut Client, layout: &Layout, x: &[f32]) -> (Vec<u8>, TokenScales) {
    let (ct, scales) = client.encode_encrypt(x, 1, layout).unwrap();
    (ct.to_bytes(client.params()), scales)
}

/// A product answer decrypted by `client`.
fn decrypt(client: &Client, answer: &[u8], scales: &TokenScales, layout: &Layout) -> Vec<f64> {
    let out = EncryptedOutput::from_bytes(answer, client.params()).unwrap();
    client.decrypt_decode(&out, scales, layout).unwrap()
}

/// Largest absolute difference, relative to the largest magnitude of `want`.
fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

fn product_frame(id: u64, ciphertext: Vec<u8>) -> Vec<u8> {
    wire::encode(&Frame {
        request_id: id,
        message: Message::Product {
            layer: 0,
            stage: LinearStage::Qkv,
            ciphertext,
        },
    })
    .unwrap()
}

fn error_code(f: &Frame) -> Option<ErrorCode> {
    match &f.message {
        Message::Error { code, .. } => Some(*code),
        _ => None,
    }
}

/// Waits until `r` has `want` sessions open; returns how long that took.
fn time_to_open(r: &Running, want: usize, within: Duration) -> Duration {
    let t = Instant::now();
    while r.sessions.counters().sessions_open != want {
        assert!(t.elapsed() < within, "{:?}", r.sessions.counters());
        std::thread::sleep(Duration::from_millis(10));
    }
    t.elapsed()
}

#[test]
fn a_half_sent_frame_holds_only_its_own_session_until_the_peer_closes() {
    let r = server(Limits::default()); // frame_timeout 30 s: the close must free it
    let mut a = open(&r, 1, TOKEN).unwrap();
    let mut half = 1000u32.to_le_bytes().to_vec();
    half.extend_from_slice(&[7; 10]);
    a.transport_mut().write_raw(&half).unwrap();
    // Silence from A: the server waits for the rest of A's frame and serves others.
    control(&r);
    assert_eq!(r.sessions.counters().sessions_open, 1);
    drop(a); // A closes its socket mid-frame
    let freed = time_to_open(&r, 0, Duration::from_secs(5));
    eprintln!(
        "half-sent frame: session freed {} ms after close",
        freed.as_millis()
    );
    control(&r);
    poll_open(&r, 0);
}

#[test]
fn a_trickling_peer_is_dropped_at_the_frame_timeout_while_others_are_served() {
    let r = server(short());
    let mut a = open(&r, 1, TOKEN).unwrap();
    let layout = a.layouts()[0][0].clone();
    let mut client = Client::new(r.model.params());
    let frame = product_frame(2, encrypt(&mut client, &layout, &input()).0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        // A sends its frame a byte per 100 ms (the whole frame would take hours).
        let trickler = scope.spawn(move || {
            for b in &frame {
                if let Err(e) = a.transport_mut().write_raw(std::slice::from_ref(b)) {
                    return (start.elapsed(), Some(e));
                }
                if start.elapsed() > Duration::from_secs(10) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (start.elapsed(), None)
        });
        control(&r); // while A trickles
        let (stopped, err) = trickler.join().unwrap();
        eprintln!(
            "trickling peer: dropped; its writes failed after {} ms ({err:?})",
            stopped.as_millis()
        );
        // The prefix takes 0.4 s, then the body has `frame_timeout` (1 s); a write
        // fails a write or two after the server closed.
        assert!(matches!(err, Some(Error::Closed | Error::Io(_))), "{err:?}");
        assert!(stopped >= Duration::from_millis(1300), "{stopped:?}");
        assert!(stopped < Duration::from_secs(5), "{stopped:?}");
    });
    control(&r);
    poll_open(&r, 0);
}

#[test]
fn replayed_and_reordered_request_ids_are_refused_over_tls() {
    let r = server(Limits::default());
    let mut session = open(&r, 1, TOKEN).unwrap();
    let layout = session.layouts()[0][0].clone();
    let mut client = Client::new(r.model.params());
    let (ct, scales) = encrypt(&mut client, &layout, &input());
    let first = session.product(0, LinearStage::Qkv, ct.clone()).unwrap();
    let want = decrypt(&client, &first, &scales, &layout);

    // Replay: the same product frame, same id, again.
    let replay = session.send_raw(&product_frame(2, ct.clone())).unwrap();
    assert_eq!(error_code(&replay), Some(ErrorCode::BadRequestId));
    // Reorder: id n + 1 arrives before id n; n + 1 is answered, n then refused.
    let n = session.next_request_id();
    let ahead = session.send_raw(&product_frame(n + 1, ct.clone())).unwrap();
    let Message::ProductResult { ciphertext } = ahead.message else {
        panic!("{:?}", ahead.message.kind());
    };
    assert!(rel_err(&decrypt(&client, &ciphertext, &scales, &layout), &want) < 1e-6);
    let late = session.send_raw(&product_frame(n, ct)).unwrap();
    assert_eq!(error_code(&late), Some(ErrorCode::BadRequestId));
    // The session goes on past the refusals and closes normally.
    let close = wire::encode(&Frame {
        request_id: n + 2,
        message: Message::Close,
    })
    .unwrap();
    assert!(matches!(
        session.send_raw(&close).unwrap().message,
        Message::Close
    ));
    poll_open(&r, 0);
    assert_eq!(r.sessions.counters().errors, 2);
    control(&r);
}

#[test]
fn a_ciphertext_from_another_session_is_answered_but_only_its_own_key_decrypts_it() {
    let r = server(Limits::default());
    let mut a = open(&r, 1, TOKEN).unwrap();
    let mut b = open(&r, 1, TOKEN).unwrap();
    let layout = a.layouts()[0][0].clone();
    assert_eq!(layout.to_bytes(), b.layouts()[0][0].to_bytes());
    let (mut ka, mut kb) = (Client::new(r.model.params()), Client::new(r.model.params()));
    let x = input();
    let (ct_a, scales_a) = encrypt(&mut ka, &layout, &x);
    let (_, scales_b) = encrypt(&mut kb, &layout, &x);
    let want = decrypt(
        &ka,
        &a.product(0, LinearStage::Qkv, ct_a.clone()).unwrap(),
        &scales_a,
        &layout,
    );

    // B sends A's ciphertext: the server cannot tell keys apart and answers.
    let moved = b.product(0, LinearStage::Qkv, ct_a).unwrap();
    // Under A's key the answer is A's product; under B's key it is noise.
    assert!(rel_err(&decrypt(&ka, &moved, &scales_a, &layout), &want) < 1e-6);
    // B's decryption is noise far above the output bound `||x|| ||w_j||`, which B's
    // check refuses; were it under the bound, it would still be far from A's product.
    let out = EncryptedOutput::from_bytes(&moved, kb.params()).unwrap();
    match kb.decrypt_decode(&out, &scales_b, &layout) {
        Err(selene_linalg::Error::OutputOutOfBound { value, bound, .. }) => {
            eprintln!("another session's ciphertext: B refuses {value:e} above {bound:e}");
        }
        Ok(got) => {
            let garbage = rel_err(&got, &want);
            eprintln!("another session's ciphertext: B decrypts with relative error {garbage:.3e}");
            assert!(garbage > 1.0, "{garbage}");
        }
        Err(e) => panic!("unexpected error {e}"),
    }
    a.close().unwrap();
    b.close().unwrap();
    poll_open(&r, 0);
    assert_eq!(r.sessions.counters().errors, 0);
    control(&r);
}

#[test]
fn a_restarted_server_gives_a_clear_error_and_a_fresh_session_works() {
    let id = Identity::self_signed(&["localhost".to_string()]).unwrap();
    let first = start_with(1, Limits::default(), &id, "127.0.0.1:0");
    let addr = first.addr.clone();
    let old: Arc<_> = first.sessions.clone();
    let mut session: ClientSession<TlsTransport> = open(&first, 1, TOKEN).unwrap();
    let layout = session.layouts()[0][0].clone();
    let mut client = Client::new(first.model.params());
    let (ct, _) = encrypt(&mut client, &layout, &input());
    session.product(0, LinearStage::Qkv, ct.clone()).unwrap();

    first.stop(); // mid-session
    assert_eq!(old.counters().sessions_open, 0);
    let t = Instant::now();
    let e = session
        .product(0, LinearStage::Qkv, ct.clone())
        .unwrap_err();
    assert!(matches!(e, Error::Closed | Error::Io(_)), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(matches!(
        session.product(0, LinearStage::Qkv, ct),
        Err(Error::Closed)
    ));
    // While it is down: connection refused.
    let e = TlsTransport::connect(&addr, &common::pinned(&id), TOKEN).unwrap_err();
    assert!(
        matches!(&e, Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused),
        "{e}"
    );

    // The restarted server (same address and certificate) serves a fresh session.
    let second = start_with(1, Limits::default(), &id, &addr);
    control(&second);
    poll_open(&second, 0);
    assert_eq!(second.sessions.counters().sessions_ever, 1);
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

/// Sends `bytes` on a fresh TCP connection and returns how long the server took to
/// drop it (end of stream or reset); fails if it stays open for 5 s.
fn dropped_after(r: &Running, bytes: &[u8]) -> Duration {
    let mut tcp = TcpStream::connect(&r.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    tcp.write_all(bytes).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return t.elapsed(),
            Ok(_) => {} // a TLS alert before the close
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return t.elapsed(),
            Err(e) => panic!("connection still open after {:?}: {e}", t.elapsed()),
        }
    }
}

#[test]
fn garbage_on_the_port_is_dropped_and_the_server_goes_on() {
    let r = server(short());
    // Random bytes (xorshift, fixed seed), not starting like a TLS record.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut random: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    random[0] = 0x47;
    let hello = client_hello();
    assert_eq!(hello[0], 0x16, "a TLS handshake record");
    let truncated = &hello[..hello.len() / 2];
    let cases: [(&str, &[u8]); 3] = [
        ("random bytes", &random),
        ("plain HTTP", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("truncated ClientHello", truncated),
    ];
    for (what, bytes) in cases {
        let took = dropped_after(&r, bytes);
        eprintln!("{what}: dropped after {} ms", took.as_millis());
        if what == "truncated ClientHello" {
            // It waits for the rest of the hello, then the handshake timeout (1 s) ends it.
            assert!(took >= Duration::from_millis(900), "{what}: {took:?}");
        }
    }
    // A truncated hello followed by a close: nothing to wait for.
    let mut tcp = TcpStream::connect(&r.addr).unwrap();
    tcp.write_all(truncated).unwrap();
    drop(tcp);
    control(&r);
    poll_open(&r, 0);
    let c = r.sessions.counters();
    assert_eq!((c.sessions_ever, c.errors), (1, 0));
}
