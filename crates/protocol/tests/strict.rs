//! Strict mode end to end on the real model: every per-layer product encrypted, the
//! result checked against the plaintext forward pass.

#![allow(clippy::unwrap_used, reason = "test helpers may panic")]

use std::ops::ControlFlow;
use std::sync::Arc;

use selene_linalg::LinalgPreset;
use selene_model::{
    forward, generate, store, KvCache, Logits, QuantLinear, Sampler, SamplingParams, Tokenizer,
};
use selene_protocol::{InProcess, ModelServer, PreparedModel, StrictLinear};

fn greedy() -> Sampler {
    Sampler::new(SamplingParams {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
    })
    .unwrap()
}

#[test]
fn strict_mode_matches_plaintext_tokens_and_logits() {
    let w = store::load(None).expect("model store");
    let tok = Tokenizer::from_gguf(w.gguf()).unwrap();
    let params = LinalgPreset::Coeff12.build().unwrap();
    let layers = w.config().n_layers;
    let model = Arc::new(PreparedModel::new(&params, &w, layers, &mut || {}).unwrap());
    let layouts = model.layouts();
    let mut enc = StrictLinear::new(
        &w,
        &params,
        layouts,
        InProcess::new(ModelServer::new(model.clone())),
    )
    .unwrap();

    for prompt in [
        "The patient was diagnosed with",
        "Account 4417-2290 was charged $",
    ] {
        let ids = tok.encode(prompt).unwrap();
        // Logits of the whole prompt (prefill: several tokens per encrypted product).
        let c = w.config();
        let mut cache = KvCache::new(c, ids.len());
        let plain = forward(
            &w,
            &ids,
            &mut cache,
            &mut QuantLinear::new(&w),
            Logits::Last,
        )
        .unwrap();
        let mut cache = KvCache::new(c, ids.len());
        let secret = forward(&w, &ids, &mut cache, &mut enc, Logits::Last).unwrap();
        let max_err = plain
            .iter()
            .zip(&secret)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let spread = plain.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        eprintln!("{prompt:?}: max |logit error| {max_err:.2e} (max |logit| {spread:.1})");
        // CKKS noise at the Coeff12 preset (about 15 bits per product) keeps the logits
        // within a few hundredths; a broken layout or key would give errors of order 10.
        assert!(max_err < 0.1, "logit error {max_err}");

        let run = |linear: &mut dyn selene_model::Linear| {
            generate(&w, &ids, 8, &[], &mut greedy(), linear, &mut |_| {
                Ok(ControlFlow::Continue(()))
            })
            .unwrap()
        };
        let want = run(&mut QuantLinear::new(&w));
        let got = run(&mut enc);
        assert_eq!(got, want, "greedy tokens differ for {prompt:?}");
    }
    let s = enc.stats();
    assert!(s.products > 0 && s.bytes_up > 0 && s.bytes_down > 0);
    assert!(enc.server_time() > std::time::Duration::ZERO);
}

#[test]
fn selective_mode_k4_matches_plaintext_tokens() {
    use selene_protocol::{generate_selective, PlainTail, SelectiveClient};
    let w = store::load(None).expect("model store");
    let tok = Tokenizer::from_gguf(w.gguf()).unwrap();
    let params = LinalgPreset::Coeff12.build().unwrap();
    let k = 4;
    let model = Arc::new(PreparedModel::new(&params, &w, k, &mut || {}).unwrap());
    let strict = StrictLinear::new(
        &w,
        &params,
        model.layouts(),
        InProcess::new(ModelServer::new(model.clone())),
    )
    .unwrap();
    let ids = tok.encode("Transfer $4,250.00 from account").unwrap();
    let max = 8;
    // The protocol's default release flooding (the audit's DEFAULT_FLOOD_SIGMA), without
    // decryption flooding: Coeff12 cannot carry it (see the flooding tests below).
    let mut client = SelectiveClient::new_dangerous(&w, k, strict, 0.01, ids.len() + max).unwrap();
    let mut server = PlainTail::new(&w, k, ids.len() + max);
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
    let want = generate(
        &w,
        &ids,
        max,
        &[],
        &mut greedy(),
        &mut QuantLinear::new(&w),
        &mut |_| Ok(ControlFlow::Continue(())),
    )
    .unwrap();
    assert_eq!(got, want);
    // One released row per position: the prompt, then each fed-back token.
    assert_eq!(client.releases(), ids.len() + max - 1);
    assert!(SelectiveClient::new_dangerous(
        &w,
        k,
        StrictLinear::new(
            &w,
            &params,
            model.layouts(),
            InProcess::new(ModelServer::new(model.clone()))
        )
        .unwrap(),
        -1.0,
        4
    )
    .is_err());
}

#[test]
fn selective_mode_refuses_decryption_flooding_coeff12_cannot_carry() {
    use selene_protocol::{Error, SelectiveClient, MIN_FLOODED_PRECISION_BITS};
    let w = store::load(None).expect("model store");
    let params = LinalgPreset::Coeff12.build().unwrap();
    let k = 1;
    let model = Arc::new(PreparedModel::new(&params, &w, k, &mut || {}).unwrap());
    let strict = || {
        StrictLinear::new(
            &w,
            &params,
            model.layouts(),
            InProcess::new(ModelServer::new(model.clone())),
        )
        .unwrap()
    };
    let err = SelectiveClient::new(&w, k, strict(), 0.01, 16).unwrap_err();
    let Error::FloodingTooWide {
        decryptions,
        precision_bits,
        min_bits,
    } = err
    else {
        panic!("expected FloodingTooWide, got {err}");
    };
    // 16 rows through layer 0's four products, each product several output ciphertexts.
    assert!(
        decryptions > 16 * 4 && decryptions % 16 == 0,
        "{decryptions}"
    );
    assert!(precision_bits < 0.0 && min_bits == MIN_FLOODED_PRECISION_BITS);
    let flooded = strict().flood_decryptions(16).unwrap();
    let f = flooded.flooding().unwrap();
    assert_eq!(f.decryptions, decryptions);
    assert_eq!(f.sigmas.len(), k);
    // sigma = sqrt(12 Q) 2^15 B with B ~ 2^8: above the 2^24 download modulus.
    assert!(
        f.sigmas[0].iter().all(|&s| s.log2() > 24.0),
        "{:?}",
        f.sigmas
    );
}

/// The precision cost of decryption flooding at Coeff12, for the report in
/// docs/hardening.md: greedy generation with K = 1 and K = 4, flooded decryptions sized
/// for the run's positions, against the plaintext model. Slow (two extra generations).
#[test]
#[ignore = "measurement for docs/hardening.md (about a minute)"]
fn selective_mode_flooded_decryption_precision_cost_coeff12() {
    use selene_protocol::{generate_selective, PlainTail, SelectiveClient};
    let w = store::load(None).expect("model store");
    let tok = Tokenizer::from_gguf(w.gguf()).unwrap();
    let params = LinalgPreset::Coeff12.build().unwrap();
    let ids = tok.encode("Transfer $4,250.00 from account").unwrap();
    let max = 8;
    let cap = ids.len() + max;
    let want = generate(
        &w,
        &ids,
        max,
        &[],
        &mut greedy(),
        &mut QuantLinear::new(&w),
        &mut |_| Ok(ControlFlow::Continue(())),
    )
    .unwrap();
    let mut cache = KvCache::new(w.config(), ids.len());
    let plain = forward(
        &w,
        &ids,
        &mut cache,
        &mut QuantLinear::new(&w),
        Logits::Last,
    )
    .unwrap();
    for k in [1, 4] {
        let model = Arc::new(PreparedModel::new(&params, &w, k, &mut || {}).unwrap());
        let strict = StrictLinear::new(
            &w,
            &params,
            model.layouts(),
            InProcess::new(ModelServer::new(model.clone())),
        )
        .unwrap()
        .flood_decryptions(cap as u64)
        .unwrap();
        let f = strict.flooding().unwrap().clone();
        let mut client = SelectiveClient::new_dangerous(&w, k, strict, 0.0, cap).unwrap();
        let mut server = PlainTail::new(&w, k, cap);
        let logits = server.handle(&client.step(&ids).unwrap()).unwrap();
        let err = plain
            .iter()
            .zip(&logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);

        let model2 = Arc::new(PreparedModel::new(&params, &w, k, &mut || {}).unwrap());
        let strict = StrictLinear::new(
            &w,
            &params,
            model2.layouts(),
            InProcess::new(ModelServer::new(model2.clone())),
        )
        .unwrap()
        .flood_decryptions(cap as u64)
        .unwrap();
        let mut client = SelectiveClient::new_dangerous(&w, k, strict, 0.0, cap).unwrap();
        let mut server = PlainTail::new(&w, k, cap);
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
        let same = got.iter().zip(&want).filter(|(a, b)| a == b).count();
        eprintln!(
            "K={k}: Q={} decryptions, sigma 2^{:.1}..2^{:.1}, precision {:.1} bits, \
             max |logit err| {err:.2e}, {same}/{max} greedy tokens equal to plain",
            f.decryptions,
            f.sigmas
                .iter()
                .flatten()
                .map(|s| s.log2())
                .fold(f64::INFINITY, f64::min),
            f.sigmas
                .iter()
                .flatten()
                .map(|s| s.log2())
                .fold(0.0, f64::max),
            f.precision_bits,
        );
        // The flooding exceeds the download modulus: the products are noise, and the
        // logits move by far more than the 0.1 the unflooded products keep.
        assert!(err.is_finite() && err > 0.1, "K={k}: {err}");
    }
}
