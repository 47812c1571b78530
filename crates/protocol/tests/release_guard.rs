//! Release authorization end to end (crates/keys' guard driven by this crate's
//! selective client): a real selective generation in process (SmolLM2, layer 0
//! encrypted under a keystore session key, the rest in plaintext on the server), with
//! the keystore's guard. Releases past the per-session or per-key cap,
//! or outside the signed policy, are refused and never reach the server's tail; every
//! authorized release is in the hash-chained log.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use selene_ckks::Parameters;
use selene_keys::{KdfParams, Keystore, OwnerPolicy, PassphraseRoot, SessionKey, Unlock};
use selene_linalg::{Client, LinalgPreset};
use selene_model::{generate_with, store, Sampler, SamplingParams, Tokenizer, Weights};
use selene_protocol::{
    decode_release, Error, InProcess, ModelServer, PlainTail, PreparedModel, SelectiveClient,
    StrictLinear,
};

const K: usize = 1;
const SIGMA: f64 = 0.05;
const PASS: &[u8] = b"release guard test";

fn keystore(dir: &Path, policy: &OwnerPolicy) -> Keystore {
    let root = PassphraseRoot::create(PASS, KdfParams::INSECURE_TEST, "SELENE_PASSPHRASE").unwrap();
    Keystore::init(dir, "erin", Box::new(root), policy).unwrap()
}

/// Runs a selective generation with `key` and the keystore's guard; returns the outcome
/// and the rows the server's tail received.
fn run(
    w: &Weights,
    params: &Arc<Parameters>,
    model: &Arc<PreparedModel>,
    ks: &Keystore,
    key: &SessionKey,
    prompt: &[u32],
    sigma: f64,
) -> (Result<Vec<u32>, Error>, usize) {
    let strict = StrictLinear::with_client(
        w,
        Client::from_secret_key(key.secret_key(params).unwrap()),
        model.layouts(),
        InProcess::new(ModelServer::new(model.clone())),
    )
    .unwrap();
    let cap = prompt.len() + 16;
    let mut client = SelectiveClient::new(w, K, strict, sigma, cap)
        .unwrap()
        .with_guard(Box::new(ks.guard(key).unwrap()));
    let mut tail = PlainTail::new(w, K, cap);
    let mut received_rows = 0;
    let mut sampler = Sampler::new(SamplingParams {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
    })
    .unwrap();
    let d = w.config().d_model;
    let out = generate_with(
        prompt,
        12,
        &[],
        &mut sampler,
        &mut |ids| {
            let bytes = client.step(ids)?;
            // Everything below is the server's view.
            received_rows += decode_release(&bytes, d)?.len() / d;
            tail.handle(&bytes)
        },
        &mut |_| Ok(ControlFlow::Continue(())),
    );
    (out, received_rows)
}

fn refusal(r: &Result<Vec<u32>, Error>) -> String {
    match r {
        Err(e @ Error::ReleaseRefused { .. }) => {
            let why = std::error::Error::source(e).map(ToString::to_string);
            format!("{e}: {}", why.unwrap_or_default())
        }
        other => panic!("expected a refused release, got {other:?}"),
    }
}

#[test]
fn caps_and_policy_stop_releases_before_the_server_sees_them() {
    let w = store::load(None).unwrap();
    let tok = Tokenizer::from_gguf(w.gguf()).unwrap();
    let prompt = tok.encode("The patient was").unwrap();
    let n = prompt.len();
    assert!(n >= 2);
    let params = LinalgPreset::Coeff12Wide.build().unwrap();
    let model = Arc::new(PreparedModel::new(&params, &w, K, &mut || {}).unwrap());
    let tmp = tempfile::tempdir().unwrap();

    // Per session: the prompt plus two decoded tokens, then refused.
    let per_session = n as u64 + 2;
    let per_key = n as u64 + 4;
    let mut ks = keystore(
        tmp.path(),
        &OwnerPolicy::selective(K, SIGMA, per_session, per_key),
    );
    let key = SessionKey::fresh(&params);
    ks.persist_session(&key).unwrap();
    let (out, rows) = run(&w, &params, &model, &ks, &key, &prompt, SIGMA);
    let why = refusal(&out);
    assert!(why.contains("per session"), "{why}");
    assert_eq!(
        rows as u64, per_session,
        "the server got exactly the capped rows"
    );
    let log = ks.verify_log().unwrap();
    assert_eq!(log.lines, 3, "prefill and two decode releases logged");
    assert_eq!(log.rows_per_key[&key.id_hex()], per_session);

    // Same key, next session (reopened keystore, key unwrapped): the per-key cap, counted
    // from the log, leaves room for the prompt only... not even that: n + 4 - (n + 2) = 2.
    let ks = Keystore::open(tmp.path(), Unlock::Passphrase(PASS)).unwrap();
    let key2 = ks.load_session(&key.id_hex()).unwrap();
    let (out, rows) = run(&w, &params, &model, &ks, &key2, &prompt, SIGMA);
    let why = refusal(&out);
    assert!(why.contains("under session key"), "{why}");
    assert_eq!(rows, 0, "nothing reached the server");
    assert_eq!(ks.verify_log().unwrap().lines, 3);

    // Too little flooding noise: refused, nothing sent.
    let fresh = SessionKey::fresh(&params);
    let (out, rows) = run(&w, &params, &model, &ks, &fresh, &prompt, SIGMA / 2.0);
    assert!(refusal(&out).contains("sigma"));
    assert_eq!(rows, 0);

    // A policy that allows releases only after another layer, and the strict policy.
    for policy in [
        OwnerPolicy::selective(K + 1, SIGMA, 100, 100),
        OwnerPolicy::strict(),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let ks = keystore(dir.path(), &policy);
        let (out, rows) = run(&w, &params, &model, &ks, &fresh, &prompt, SIGMA);
        assert!(refusal(&out).contains("does not allow"));
        assert_eq!(rows, 0);
        assert_eq!(ks.verify_log().unwrap().lines, 0);
    }

    // Within the policy the same generation runs to the end, every release logged.
    let dir = tempfile::tempdir().unwrap();
    let ks = keystore(dir.path(), &OwnerPolicy::selective(K, SIGMA, 100, 100));
    let (out, rows) = run(&w, &params, &model, &ks, &fresh, &prompt, SIGMA);
    let out = out.unwrap();
    assert_eq!(out.len(), 12);
    assert_eq!(rows, n + 11);
    let log = ks.verify_log().unwrap();
    assert_eq!(log.lines, 12);
    assert_eq!(log.rows_per_key[&fresh.id_hex()], (n + 11) as u64);
}
