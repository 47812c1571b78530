//! Private generation on Qwen2.5-Coder-0.5B-Instruct (qwen2: Q/K/V biases added by the
//! client, NEOX RoPE, an untied LM head, head size 64 with 2 key-value heads): strict
//! mode (also after a public prefix the server ran in plaintext) and selective K = 1,
//! every private product encrypted, greedy tokens against the plaintext model.
//!
//! The model (491 MB) comes from the store. Outside CI a machine without it skips with
//! a printed reason rather than downloading it; with `CI` set it is fetched (and cached
//! in `$SELENE_HOME`), as in `crates/model/tests/qwen_fixtures.rs`.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test helpers may panic")]

mod common;

use std::ops::ControlFlow;
use std::sync::Arc;

use common::greedy;
use selene_linalg::LinalgPreset;
use selene_model::store::{self, ModelSource, QWEN_CODER_05B};
use selene_model::{generate, QuantLinear, Tokenizer, Weights};
use selene_protocol::server::PublicPrefix;
use selene_protocol::{generate_after_prefix, generate_selective, InProcess, ModelServer};
use selene_protocol::{PlainTail, PrefixKv, PrefixLimits, PreparedModel};
use selene_protocol::{SelectiveClient, StrictLinear};

/// The 0.5B model, or `None` (reason printed) when it is not stored and this is not CI.
fn weights() -> Option<Weights> {
    let stored = store::home().join(QWEN_CODER_05B.file).exists();
    if !stored && std::env::var_os("CI").is_none() {
        eprintln!(
            "skipped: {} is not in {} and CI is not set",
            QWEN_CODER_05B.file,
            store::home().display()
        );
        return None;
    }
    Some(store::load_source(&ModelSource::Known(&QWEN_CODER_05B)).unwrap())
}

#[test]
fn qwen_strict_and_selective_match_plaintext_tokens() {
    let Some(w) = weights() else { return };
    let tok = Tokenizer::from_gguf(w.gguf()).unwrap();
    let ids = tok.encode("def fibonacci(n):").unwrap();
    let max = 3;
    let plain = |linear: &mut dyn selene_model::Linear| {
        generate(&w, &ids, max, &[], &mut greedy(), linear, &mut |_| {
            Ok(ControlFlow::Continue(()))
        })
        .unwrap()
    };
    let want = plain(&mut QuantLinear::new(&w));

    // Strict: all 24 layers' products encrypted (coeff12).
    let params = LinalgPreset::Coeff12.build().unwrap();
    let layers = w.config().n_layers;
    assert_eq!(layers, 24);
    let model = Arc::new(PreparedModel::new(&params, &w, layers, &mut || {}).unwrap());
    let mut enc = StrictLinear::new(
        &w,
        &params,
        model.layouts(),
        InProcess::new(ModelServer::new(model.clone())),
    )
    .unwrap();
    assert_eq!(plain(&mut enc), want, "strict: greedy tokens differ");

    // Public prefix: the server runs a public text in plaintext, its rows reach the
    // client as bytes, and the private prompt follows in strict mode at the positions
    // after it: the same tokens as the plaintext model on the concatenation.
    let public = tok
        .encode("# Billing service helpers (public repository header).\n")
        .unwrap();
    let c = w.config();
    let kv = PublicPrefix::run(&w, &public).unwrap();
    let kv = PrefixKv::from_bytes(&kv.to_bytes(), c, &PrefixLimits::for_config(c)).unwrap();
    let all = [public.clone(), ids.clone()].concat();
    let want_pp = generate(
        &w,
        &all,
        max,
        &[],
        &mut greedy(),
        &mut QuantLinear::new(&w),
        &mut |_| Ok(ControlFlow::Continue(())),
    )
    .unwrap();
    let products_before = enc.stats().products;
    let got_pp = generate_after_prefix(
        &w,
        Some(&kv),
        &ids,
        max,
        &[],
        &mut greedy(),
        &mut enc,
        &mut |_| Ok(ControlFlow::Continue(())),
    )
    .unwrap();
    assert_eq!(
        got_pp, want_pp,
        "strict after a public prefix: greedy tokens differ"
    );
    // Only the private rows crossed encrypted: the prompt once, then one per step.
    assert_eq!(enc.stats().products - products_before, 4 * layers * max);
    drop((enc, model));

    // Selective K = 1 on coeff12wide with flooded releases.
    let params = LinalgPreset::Coeff12Wide.build().unwrap();
    let model = Arc::new(PreparedModel::new(&params, &w, 1, &mut || {}).unwrap());
    let cap = ids.len() + max;
    let strict = StrictLinear::new(
        &w,
        &params,
        model.layouts(),
        InProcess::new(ModelServer::new(model.clone())),
    )
    .unwrap();
    let mut client = SelectiveClient::new(&w, 1, strict, 0.0, cap).unwrap();
    let precision = client.strict().flooding().unwrap().precision_bits;
    let mut server = PlainTail::new(&w, 1, cap);
    let got = generate_selective(
        &mut client,
        &mut server,
        &ids,
        max,
        &[],
        &mut greedy(),
        &mut |_| Ok(ControlFlow::Continue(())),
    )
    .unwrap();
    eprintln!("qwen K=1: {precision:.1} bits after flooding; {got:?} vs plain {want:?}");
    assert!(precision >= selene_protocol::MIN_FLOODED_PRECISION_BITS);
    assert_eq!(got, want, "K=1: greedy tokens differ");
}
