//! Fused strict mode end to end on the real model: two round trips per layer (one
//! `Products` request per fused pair), greedy tokens equal to the plaintext model's.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test helpers may panic")]

use std::sync::Arc;

use selene_linalg::{LinalgPreset, Link};
use selene_model::{forward, forward_fused, store, KvCache, Logits, QuantLinear, Tokenizer};
use selene_protocol::{Error, InProcess, ModelServer, PreparedModel, StrictLinear};

fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &x)| if x > b.1 { (i, x) } else { b },
        )
        .0 as u32
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
    let mut cache = KvCache::new(c, ids.len() + steps);
    let mut lin = QuantLinear::new(&w);
    let mut want = vec![argmax(
        &forward(&w, &ids, &mut cache, &mut lin, Logits::Last).unwrap(),
    )];
    while want.len() < steps {
        let last = *want.last().unwrap();
        want.push(argmax(
            &forward(&w, &[last], &mut cache, &mut lin, Logits::Last).unwrap(),
        ));
    }

    let mut cache = KvCache::new(c, ids.len() + steps);
    let before = enc.session().round_trips();
    let mut got = vec![argmax(
        &forward_fused(&w, &ids, &mut cache, &mut enc, Logits::Last).unwrap(),
    )];
    let prefill = enc.session().round_trips() - before;
    let mut per_token = Vec::new();
    while got.len() < steps {
        let last = *got.last().unwrap();
        let before = enc.session().round_trips();
        got.push(argmax(
            &forward_fused(&w, &[last], &mut cache, &mut enc, Logits::Last).unwrap(),
        ));
        per_token.push(enc.session().round_trips() - before);
    }
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
    let mut lin = QuantLinear::new(&w);
    let mut lin_cache = KvCache::new(c, ids.len() + steps);
    let mut want = vec![argmax(
        &forward(&w, &ids, &mut lin_cache, &mut lin, Logits::Last).unwrap(),
    )];
    let mut cache = KvCache::new(c, ids.len() + steps);
    let mut got = vec![argmax(
        &forward_fused(&w, &ids, &mut cache, &mut enc, Logits::Last).unwrap(),
    )];
    while got.len() < steps {
        let before = enc.session().round_trips();
        let last = *got.last().unwrap();
        got.push(argmax(
            &forward_fused(&w, &[last], &mut cache, &mut enc, Logits::Last).unwrap(),
        ));
        assert_eq!(enc.session().round_trips() - before, 2 * layers as u64 + 1);
        let last = *want.last().unwrap();
        want.push(argmax(
            &forward(&w, &[last], &mut lin_cache, &mut lin, Logits::Last).unwrap(),
        ));
    }
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
