//! An active server (docs/hardening.md, "An active server"): answers that are not the
//! product are caught by the client's checks before anything derived from them is
//! released. One layer of SmolLM2 at `coeff12wide` (selective mode, flooded), in
//! process, behind a transport that plays the dishonest server: forged decoding scales
//! in `Welcome`, a key-recovery ciphertext `c0 = 0, c1 = c X^0` (which decrypts to
//! `c s`), an encryption of zero. Honest sessions pass every check, spot checks on.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use selene_ckks::Parameters;
use selene_linalg::{Client, EncryptedOutput, LinalgPreset};
use selene_model::{store, LinearStage, Tokenizer, Weights};
use selene_protocol::wire::{self, Message};
use selene_protocol::{
    ClientSession, Error, InProcess, Limits, ModelServer, PlainTail, Policy, PreparedModel,
    SelectiveClient, SessionServer, StrictLinear, Transport,
};

const K: usize = 1;
const SIGMA: f64 = 0.01;
const CONTEXT: usize = 64;

struct Fixture {
    w: Weights,
    tok: Tokenizer,
    params: Arc<Parameters>,
    model: Arc<PreparedModel>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let w = store::load(None).unwrap();
        let tok = Tokenizer::from_gguf(w.gguf()).unwrap();
        let params = LinalgPreset::Coeff12Wide.build().unwrap();
        let model = Arc::new(PreparedModel::new(&params, &w, K, &mut || {}).unwrap());
        Fixture {
            w,
            tok,
            params,
            model,
        }
    })
}

/// What the dishonest server does.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Forge {
    /// Nothing: an honest server.
    Honest,
    /// Doubles one column scale of layer 0's `AttnOut` layout in `Welcome`.
    Scales,
    /// Answers the next product with `c0 = 0, c1 = value` (the constant polynomial, so
    /// the client decrypts `value * s`, its secret key, at every used position).
    KeyProbe(u64),
    /// Multiplies the next token's q|k|v sent ahead with a release's answer by this.
    Ahead(f32),
}

/// A transport that forges the server's answers once, as a network peer could.
struct Dishonest {
    inner: InProcess,
    params: Arc<Parameters>,
    forge: Forge,
    /// Products answered so far, forged ones included.
    forged: Arc<Mutex<usize>>,
}

impl Transport for Dishonest {
    fn send(&mut self, request: &[u8]) -> selene_protocol::Result<()> {
        self.inner.send(request)
    }

    fn receive(&mut self) -> selene_protocol::Result<Vec<u8>> {
        let reply = self.inner.receive()?;
        let mut frame = wire::decode(&reply, &Limits::default())?;
        match (&mut frame.message, self.forge) {
            (Message::Welcome(w), Forge::Scales) => {
                // Layer 0's AttnOut layout: the column scales are its last 8 d_out bytes.
                let b = &mut w.layouts[1];
                let at = b.len() - 8;
                let s = f64::from_le_bytes(b[at..].try_into().unwrap());
                b[at..].copy_from_slice(&(2.0 * s).to_le_bytes());
            }
            (Message::ProductResult { ciphertext }, Forge::KeyProbe(value)) => {
                let mut out = EncryptedOutput::from_bytes(ciphertext, &self.params)?;
                for i in 0..out.ciphertexts() {
                    let (c0, c1) = out.switched_mut(i).unwrap();
                    c0.fill(0);
                    c1.fill(0);
                    c1[0] = value;
                }
                *ciphertext = out.to_bytes();
                *self.forged.lock().unwrap() += 1;
                self.forge = Forge::Honest;
            }
            (
                Message::LogitsAhead { ahead, .. } | Message::HiddenAhead { ahead, .. },
                Forge::Ahead(factor),
            ) => {
                for v in &mut ahead.qkv {
                    *v *= factor;
                }
                *self.forged.lock().unwrap() += 1;
                self.forge = Forge::Honest;
            }
            _ => return Ok(reply),
        }
        wire::encode(&frame)
    }

    fn token(&self) -> &[u8] {
        self.inner.token()
    }

    fn server_time(&self) -> Duration {
        self.inner.server_time()
    }
}

fn session(forge: Forge) -> (ClientSession<Dishonest>, Arc<Mutex<usize>>) {
    let f = fixture();
    let forged = Arc::new(Mutex::new(0));
    let t = Dishonest {
        inner: InProcess::new(ModelServer::new(f.model.clone())),
        params: f.params.clone(),
        forge,
        forged: forged.clone(),
    };
    let policy = Policy::selective(f.w.config().n_layers, K);
    (
        ClientSession::open(t, &f.params, policy, CONTEXT).unwrap(),
        forged,
    )
}

fn selective(
    forge: Forge,
    verify_rate: f64,
) -> (SelectiveClient<'static, Dishonest>, Arc<Mutex<usize>>) {
    let f = fixture();
    let (s, forged) = session(forge);
    let strict = StrictLinear::from_session(&f.w, Client::new(&f.params), s)
        .unwrap()
        .with_verify_rate(verify_rate)
        .unwrap();
    (
        SelectiveClient::new(&f.w, K, strict, SIGMA, 32).unwrap(),
        forged,
    )
}

/// The protocol error somewhere in `e`'s source chain (the model's forward pass wraps
/// a product's error).
fn cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Error> {
    let mut at = Some(e);
    while let Some(e) = at {
        if let Some(p) = e.downcast_ref::<Error>() {
            if !matches!(p, Error::Model(_)) {
                return Some(p);
            }
        }
        at = e.source();
    }
    None
}

fn prompt() -> Vec<u32> {
    fixture()
        .tok
        .encode("The patient was diagnosed with")
        .unwrap()
}

#[test]
fn forged_decoding_scales_are_refused() {
    let f = fixture();
    let (s, _) = session(Forge::Scales);
    match StrictLinear::from_session(&f.w, Client::new(&f.params), s) {
        Err(Error::ScaleMismatch { layer, stage, .. }) => {
            assert_eq!((layer, stage), (0, LinearStage::AttnOut));
        }
        other => panic!("forged scales accepted: {other:?}"),
    }
    // The honest server's scales are the model's.
    let (s, _) = session(Forge::Honest);
    StrictLinear::from_session(&f.w, Client::new(&f.params), s).unwrap();
}

#[test]
fn an_answer_above_its_bound_aborts_the_step_and_every_later_release() {
    // 3 * 2^44 sits above the largest honest output at coeff12wide (about 2^44.x in
    // units of the 2^47 download modulus): the output bound alone catches it.
    let (mut client, forged) = selective(Forge::KeyProbe(3 << 44), 0.0);
    let ids = prompt();
    let e = client.step(&ids).unwrap_err();
    match cause(&e) {
        Some(Error::ProductCheck {
            layer: 0,
            source: selene_linalg::Error::OutputOutOfBound { .. },
            ..
        }) => {}
        other => panic!("expected the output bound to fail, got {other:?} ({e})"),
    }
    assert_eq!(*forged.lock().unwrap(), 1);
    assert_eq!(client.releases(), 0, "nothing was released");
    // The server answers honestly from now on; the session still releases nothing.
    let e = client.step(&ids[..1]).unwrap_err();
    assert!(matches!(e, Error::FailedCheckEarlier), "{e}");
    assert_eq!(client.releases(), 0);
}

#[test]
fn spot_checks_catch_answers_within_the_bound() {
    let ids = prompt();
    // The key-recovery ciphertext at 2^44 and an encryption of zero both pass the
    // output bound: without spot checks the step releases (what remains possible).
    for value in [1u64 << 44, 0] {
        let (mut client, forged) = selective(Forge::KeyProbe(value), 0.0);
        client.step(&ids).unwrap();
        assert_eq!(*forged.lock().unwrap(), 1);
        assert_eq!(client.releases(), ids.len());
    }
    // With every product spot-checked, both are caught before the release.
    for value in [1u64 << 44, 0] {
        let (mut client, _) = selective(Forge::KeyProbe(value), 1.0);
        let e = client.step(&ids).unwrap_err();
        match cause(&e) {
            Some(Error::SpotCheckFailed {
                layer: 0,
                deviation,
                tolerance,
                ..
            }) => {
                eprintln!("forged c1 = {value}: deviation {deviation:.3} (tolerance {tolerance})");
                assert!(*deviation > 2.0 * tolerance);
            }
            other => panic!("expected a failed spot check, got {other:?} ({e})"),
        }
        assert_eq!(client.releases(), 0);
        assert!(matches!(
            client.step(&ids[..1]),
            Err(Error::FailedCheckEarlier)
        ));
    }
}

#[test]
fn honest_sessions_pass_every_check() {
    let f = fixture();
    let ids = prompt();
    let (mut client, _) = selective(Forge::Honest, 1.0);
    let mut tail = PlainTail::new(&f.w, K, 32);
    let mut next = ids.clone();
    for _ in 0..4 {
        let logits = tail.handle(&client.step(&next).unwrap()).unwrap();
        let best = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap();
        next = vec![best as u32];
    }
    let stats = client.strict().stats();
    eprintln!(
        "honest K = 1 (flooded): {} products spot-checked, largest deviation {:.2e}",
        stats.verified, stats.verify_max_deviation
    );
    assert_eq!(stats.verified, stats.products, "every product spot-checked");
    assert_eq!(stats.products, 4 * 4);
}

#[test]
fn spot_checks_need_the_layer_matrices_and_bundles_carry_the_norms() {
    let f = fixture();
    // The bundle the embedded client uses carries the full model's norms.
    let bundle = f.w.client_bundle().unwrap();
    assert_eq!(bundle.column_norms().unwrap(), f.w.column_norms().unwrap());
    let (s, _) = session(Forge::Honest);
    let strict = StrictLinear::from_session(&bundle, Client::new(&f.params), s).unwrap();
    assert!(matches!(
        strict.with_verify_rate(0.5),
        Err(Error::VerifyNeedsWeights)
    ));
    let (s, _) = session(Forge::Honest);
    let strict = StrictLinear::from_session(&f.w, Client::new(&f.params), s).unwrap();
    assert!(matches!(
        strict.with_verify_rate(1.5),
        Err(Error::InvalidVerifyRate { .. })
    ));

    // A bundle read from the file has none until it streams them from that file.
    let thin = store::load_client(None).unwrap();
    let (s, _) = session(Forge::Honest);
    assert!(matches!(
        StrictLinear::from_session(&thin, Client::new(&f.params), s),
        Err(Error::NoColumnNorms(_))
    ));
    let path = store::model_path(None).unwrap();
    let start = std::time::Instant::now();
    let streamed = thin.stream_column_norms(&path).unwrap();
    eprintln!(
        "column norms streamed from the model file in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(&streamed, f.w.column_norms().unwrap(), "bit-identical");
    let thin = thin.with_column_norms(streamed).unwrap();
    let (s, _) = session(Forge::Honest);
    StrictLinear::from_session(&thin, Client::new(&f.params), s).unwrap();
}

/// A selective client against a session server (the plaintext tail answers releases,
/// with the next token ahead) behind the forging transport.
fn with_tail(forge: Forge) -> (SelectiveClient<'static, Dishonest>, Arc<Mutex<usize>>) {
    static SERVER: OnceLock<Arc<SessionServer>> = OnceLock::new();
    let f = fixture();
    let server = SERVER.get_or_init(|| {
        let w = Arc::new(store::load(None).unwrap());
        Arc::new(SessionServer::new(f.model.clone(), w, Limits::default()).with_token(b"t"))
    });
    let forged = Arc::new(Mutex::new(0));
    let t = Dishonest {
        inner: InProcess::connect(server, b"t"),
        params: f.params.clone(),
        forge,
        forged: forged.clone(),
    };
    let policy = Policy::selective(f.w.config().n_layers, K);
    let s = ClientSession::open(t, &f.params, policy, CONTEXT).unwrap();
    let strict = StrictLinear::from_session(&f.w, Client::new(&f.params), s).unwrap();
    (
        SelectiveClient::new(&f.w, K, strict, SIGMA, 32).unwrap(),
        forged,
    )
}

#[test]
fn a_next_token_q_k_v_within_its_bound_is_recomputed_by_a_full_client() {
    // Half the server's values pass the output bound; this client holds the layer
    // matrices and recomputes them.
    let ids = prompt();
    let (mut client, forged) = with_tail(Forge::Ahead(0.5));
    let logits = client.next_logits(&ids).unwrap();
    assert_eq!(*forged.lock().unwrap(), 1);
    let next = [selene_model::sampling::argmax(&logits)];
    let e = client.next_logits(&next).unwrap_err();
    match cause(&e) {
        Some(Error::SpotCheckFailed {
            layer: 0,
            stage: LinearStage::Qkv,
            deviation,
            tolerance,
        }) => assert!(deviation > tolerance, "{deviation} {tolerance}"),
        other => panic!("expected the recomputation to fail, got {other:?} ({e})"),
    }
    assert_eq!(client.releases(), ids.len(), "nothing more was released");
    assert!(matches!(
        client.next_logits(&next),
        Err(Error::FailedCheckEarlier)
    ));
}

#[test]
fn a_next_token_q_k_v_above_its_bound_fails_the_session() {
    let ids = prompt();
    for (factor, honest) in [(1.0, true), (1e3, false)] {
        let (mut client, forged) = with_tail(Forge::Ahead(factor));
        let logits = client.next_logits(&ids).unwrap();
        assert_eq!(*forged.lock().unwrap(), 1);
        let next = [selene_model::sampling::argmax(&logits)];
        match client.next_logits(&next) {
            Ok(_) => {
                assert!(honest, "a q|k|v 1000 times the server's was used");
                assert_eq!(client.ahead_used(), 1);
                assert_eq!(client.releases(), ids.len() + 1);
            }
            Err(e) => {
                assert!(!honest, "the honest q|k|v was refused: {e}");
                match cause(&e) {
                    Some(Error::ProductCheck {
                        layer: 0,
                        stage: LinearStage::Qkv,
                        source: selene_linalg::Error::OutputOutOfBound { .. },
                    }) => {}
                    other => panic!("expected the bound to fail, got {other:?} ({e})"),
                }
                assert_eq!(client.releases(), ids.len(), "nothing more was released");
                assert!(matches!(
                    client.next_logits(&next),
                    Err(Error::FailedCheckEarlier)
                ));
            }
        }
    }
}
