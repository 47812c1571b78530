//! Fused strict mode end to end on the real model: two round trips per layer (one
//! `Products` request per fused pair), greedy tokens equal to the plaintext model's.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test helpers may panic")]

mod common;

use std::sync::Arc;

use common::greedy_passes;
use selene_linalg::{LinalgPreset, Link};
use selene_model::{
    forward, forward_fused, store, KvCache, Logits, QuantLinear, Tokenizer, Weights,
};
use selene_protocol::{Error, InProcess, ModelServer, PreparedModel, StrictLinear};

/// `steps` greedy tokens of the plaintext model and of `enc`'s fused passes after `ids`,
/// with the round trips of each fused pass (the prompt's first).
fn plain_and_fused(
    w: &Weights,
    enc: &mut StrictLinear<'_, InProcess>,
    ids: &[u32],
    steps: usize,
) -> (Vec<u32>, Vec<u32>, Vec<u64>) {
    let c = w.config();
    let mut cache = KvCache::new(c, ids.len() + steps);
    let mut lin = QuantLinear::new(w);
    let want = greedy_passes(ids, steps, &mut |t| {
        forward(w, t, &mut cache, &mut lin, Logits::Last).unwrap()
    });
    let mut cache = KvCache::new(c, ids.len() + steps);
    let mut trips = Vec::new();
    let got = greedy_passes(ids, steps, &mut |t| {
        let before = enc.session().round_trips();
        let logits = forward_fused(w, t, &mut cache, enc, Logits::Last).unwrap();
        trips.push(enc.session().round_trips() - before);
        logits
    });
    (want, got, trips)
}

#[test]
fn fused_strict_mode_matches_plaintext_greedy_in_two_round_trips_per_layer() {
    let w = store::load(None).expect("model store");
    let tok = Tokenizer::from_gguf(w.gguf()).unwrap();
    let c = w.config();
    let layers = c.n_layers;
    let params = LinalgPreset::Coeff12.build().unwrap();
    let unfused = PreparedModel::new(&params, &w, layers, &mut || {}).unwrap();
    let stage_bytes = unfused.memory_bytes();
    let model = unfused.with_fused(&w, &mut || {}).unwrap();
    // What a server checks against its memory before encoding is what it then holds.
    let estimate = PreparedModel::estimate(&params, c, layers, &Link::LAN, 0, true).unwrap();
    assert_eq!(estimate.stages, stage_bytes);
    assert_eq!(estimate.fused, model.fused_memory_bytes());
    assert_eq!(estimate.total(), model.memory_bytes());
    eprintln!(
        "server memory at coeff12: stages {:.1} MiB, fused matrices {:.1} MiB more",
        stage_bytes as f64 / (1 << 20) as f64,
        model.fused_memory_bytes() as f64 / (1 << 20) as f64
    );
    let model = Arc::new(model);

    // A session that does not ask for fusion is refused a Products request, and the
    // unfused client still works against a server holding fused matrices.
    let mut plain_session = StrictLinear::new(
        &w,
        &params,
        model.layouts(),
        InProcess::new(ModelServer::new(model.clone())),
    )
    .unwrap();
    let mut cache = KvCache::new(c, 4);
    let fused_on_plain = forward_fused(&w, &[504], &mut cache, &mut plain_session, Logits::Last);
    assert!(
        fused_on_plain.is_err(),
        "a session without fused = true fused"
    );

    let mut enc = StrictLinear::new_fused(
        &w,
        &params,
        model.layouts(),
        InProcess::new(ModelServer::new(model.clone())),
    )
    .unwrap();
    let ids = tok.encode("The patient was diagnosed with").unwrap();
    let steps = 6;
    let (want, got, trips) = plain_and_fused(&w, &mut enc, &ids, steps);
    let (prefill, per_token) = (trips[0], &trips[1..]);
    let s = enc.stats();
    eprintln!(
        "fused: prefill of {} tokens {prefill} round trips, decode {per_token:?} per token \
         (unfused: {}); {} products, {} B up, {} B down",
        ids.len(),
        4 * layers,
        s.products,
        s.bytes_up,
        s.bytes_down
    );
    assert_eq!(got, want, "fused greedy tokens differ from plaintext");
    assert_eq!(prefill, 2 * layers as u64 + 1);
    assert!(per_token.iter().all(|&r| r <= 2 * layers as u64 + 2));

    // A server without fused matrices refuses a fused session at Hello.
    let bare = Arc::new(PreparedModel::new(&params, &w, layers, &mut || {}).unwrap());
    let refused = StrictLinear::new_fused(
        &w,
        &params,
        bare.layouts(),
        InProcess::new(ModelServer::new(bare.clone())),
    );
    assert!(matches!(refused, Err(Error::Remote { .. })), "{refused:?}");
}

/// The packed preset fuses too: the stacked matrices are tiled for the link and merged
/// like the stages (their Galois elements join the session's one key upload), so a
/// token costs `2 L + 1` round trips and one packed download per product.
#[test]
fn fused_packed_mode_matches_plaintext_greedy() {
    let w = store::load(None).expect("model store");
    let c = w.config();
    let layers = c.n_layers;
    let params = LinalgPreset::Coeff12Pack.build().unwrap();
    let model = PreparedModel::for_link(&params, &w, layers, &Link::WAN, &mut || {})
        .unwrap()
        .with_fused(&w, &mut || {})
        .unwrap();
    // Packed and hoisted: the folded images pad merge groups; the estimate counts them.
    let estimate = PreparedModel::estimate(&params, c, layers, &Link::WAN, 0, true).unwrap();
    assert_eq!(estimate.fused, model.fused_memory_bytes());
    assert_eq!(estimate.total(), model.memory_bytes());
    let model = Arc::new(model);
    let mut enc = StrictLinear::new_fused(
        &w,
        &params,
        model.layouts(),
        InProcess::new(ModelServer::new(model.clone())),
    )
    .unwrap();
    assert!(
        enc.stats().galois_keys > 0,
        "packed layouts need Galois keys"
    );
    let ids = [504u32, 1617, 436];
    let steps = 3;
    let (want, got, trips) = plain_and_fused(&w, &mut enc, &ids, steps);
    assert!(
        trips.iter().all(|&t| t == 2 * layers as u64 + 1),
        "round trips per pass {trips:?}"
    );
    let s = enc.stats();
    eprintln!(
        "fused packed: {} products, {} B up, {} B down, {} Galois keys ({} B)",
        s.products, s.bytes_up, s.bytes_down, s.galois_keys, s.galois_key_bytes
    );
    assert_eq!(
        got, want,
        "fused packed greedy tokens differ from plaintext"
    );
}

/// Selective mode fuses its encrypted layers: a generated token's pass over K = 2
/// layers at `coeff12widepack` (packed, flooded) takes `2 K + 1` round trips (the
/// server's token ahead stands in for layer 0's q|k|v; the last layer's down product
/// goes alone, then the release) instead of `4 K`, and the greedy tokens equal the
/// plaintext model's, fused or not.
#[test]
fn fused_selective_mode_saves_two_k_minus_one_round_trips_per_token() {
    use std::ops::ControlFlow;

    use selene_model::generate;
    use selene_protocol::{Limits, Policy, SessionServer};

    const K: usize = 2;
    const TOKEN: &[u8] = b"fused-selective-token";
    let w = Arc::new(store::load(None).expect("model store"));
    let tok = Tokenizer::from_gguf(w.gguf()).unwrap();
    let params = LinalgPreset::Coeff12WidePack.build().unwrap();
    let model = PreparedModel::for_link(&params, &w, K, &Link::WAN, &mut || {})
        .unwrap()
        .with_fused(&w, &mut || {})
        .unwrap();
    // 2 K - 1 stacked matrices: the last encrypted layer has no next q|k|v to fuse.
    assert_eq!(model.fused_layouts().len(), 2 * K - 1);
    let estimate = PreparedModel::estimate(&params, w.config(), K, &Link::WAN, 0, true).unwrap();
    assert_eq!(estimate.total(), model.memory_bytes());
    let server = Arc::new(
        SessionServer::new(Arc::new(model), w.clone(), Limits::default()).with_token(TOKEN),
    );
    let ids = tok.encode("The patient was diagnosed with").unwrap();
    let steps = 3;
    let want = generate(
        &w,
        &ids,
        steps,
        &[],
        &mut common::greedy(),
        &mut QuantLinear::new(&w),
        &mut |_| Ok(ControlFlow::Continue(())),
    )
    .unwrap();
    let mut trips = Vec::new();
    for fused in [false, true] {
        let mut policy = Policy::selective(w.config().n_layers, K);
        policy.preset = LinalgPreset::Coeff12WidePack;
        policy.fused = fused;
        let (got, stats) = common::generate_in_process(&w, &server, TOKEN, policy, &ids, steps);
        eprintln!(
            "selective K = {K}, fused {fused}: {got:?}, {} round trips, {} products, {} B up, \
             {} B down",
            stats.traffic.round_trips,
            stats.traffic.products,
            stats.traffic.bytes_up,
            stats.traffic.bytes_down
        );
        assert_eq!(
            got, want,
            "fused {fused}: tokens differ from the plaintext model's"
        );
        assert_eq!(stats.ahead, steps - 1, "fused {fused}");
        trips.push(stats.traffic.round_trips);
    }
    // Each of the steps - 1 tokens fed back saves 4 K - (2 K + 1) = 2 K - 1 round trips.
    assert_eq!(
        trips[0] - trips[1],
        ((steps - 1) * (2 * K - 1)) as u64,
        "{trips:?}"
    );
}
