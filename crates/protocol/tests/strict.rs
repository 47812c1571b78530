//! Strict mode end to end on the real model: every per-layer product encrypted, the
//! result checked against the plaintext forward pass.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test helpers may panic")]

mod common;

use std::ops::ControlFlow;
use std::sync::Arc;

use common::greedy;
use selene_linalg::LinalgPreset;
use selene_model::{forward, generate, store, KvCache, Logits, QuantLinear, Tokenizer};
use selene_protocol::{InProcess, ModelServer, PreparedModel, StrictLinear};

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

/// Selective mode with flooded decryptions at `coeff12wide` (the preset selective mode
/// runs on), K = 1 and K = 4: greedy tokens equal the plaintext model's on a prompt whose
/// greedy choice wins by more than 0.1 at every step, and the released prompt's logits
/// stay close. Prints the numbers docs/hardening.md section 3 reports.
#[test]
fn selective_mode_flooded_matches_plaintext_tokens_coeff12wide() {
    use selene_protocol::{generate_selective, PlainTail, SelectiveClient};
    let w = &common::shared().w;
    let tok = &common::shared().tok;
    let params = LinalgPreset::Coeff12Wide.build().unwrap();
    let ids = tok.encode("The patient was diagnosed with").unwrap();
    let max = 8;
    let cap = ids.len() + max;
    let want = common::plain(&ids, max);
    let margin = common::greedy_margin(&ids, &want);
    assert!(margin > 0.1, "greedy margin {margin}");
    let mut cache = KvCache::new(w.config(), ids.len());
    let plain = forward(w, &ids, &mut cache, &mut QuantLinear::new(w), Logits::Last).unwrap();
    let model = Arc::new(PreparedModel::new(&params, w, 4, &mut || {}).unwrap());
    let client_for = |k: usize| {
        let layouts = model.layouts()[..k].to_vec();
        let strict = StrictLinear::new(
            w,
            &params,
            layouts,
            InProcess::new(ModelServer::new(model.clone())),
        )
        .unwrap();
        // No message-space noise: the ring-level flooding is what is measured.
        SelectiveClient::new(w, k, strict, 0.0, cap).unwrap()
    };
    for k in [1, 4] {
        let mut client = client_for(k);
        let f = client.strict().flooding().unwrap().clone();
        let mut server = PlainTail::new(w, k, cap);
        let logits = server.handle(&client.step(&ids).unwrap()).unwrap();
        let err = plain
            .iter()
            .zip(&logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);

        let mut client = client_for(k);
        let mut server = PlainTail::new(w, k, cap);
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
        let log2s = f.sigmas.iter().flatten().map(|s| s.log2());
        eprintln!(
            "K={k}: Q={} released coefficients, sigma 2^{:.1}..2^{:.1}, precision {:.1} bits, \
             max |logit err| {err:.3}, {same}/{max} greedy tokens equal to plain \
             (margin {margin:.2})",
            f.released,
            log2s.clone().fold(f64::INFINITY, f64::min),
            log2s.fold(0.0, f64::max),
            f.precision_bits,
        );
        assert!(f.precision_bits >= selene_protocol::MIN_FLOODED_PRECISION_BITS);
        // The LMSS22 sigma for this cap: sqrt(12 Q) 2^15 B with B ~ 2^8 and Q counting
        // every released coefficient (5184 per row and layer), near 2^33.
        assert!(f.sigmas.iter().flatten().all(|s| s.log2() > 32.0));
        assert_eq!(f.released, cap as u64 * 5184 * k as u64);
        assert_eq!(got, want, "K={k}");
        // One released row per position: the prompt, then each fed-back token.
        assert_eq!(client.releases(), ids.len() + max - 1);
        // Measured 0.02 (K = 1) and 0.09 (K = 4); a broken layout or key gives errors of
        // order 10.
        assert!(err < 0.5, "K={k}: logit error {err}");
    }
    assert!(SelectiveClient::new(
        w,
        1,
        StrictLinear::new(
            w,
            &params,
            model.layouts()[..1].to_vec(),
            InProcess::new(ModelServer::new(model.clone()))
        )
        .unwrap(),
        -1.0,
        4
    )
    .is_err());
}

/// A release cap too large for the wide preset's precision is refused, not silently
/// flooded less: the flooding sigma grows with the square root of the cap.
#[test]
fn selective_mode_refuses_a_cap_the_flooding_cannot_carry_coeff12wide() {
    use selene_protocol::{Error, SelectiveClient, MIN_FLOODED_PRECISION_BITS};
    let w = &common::shared().w;
    let params = LinalgPreset::Coeff12Wide.build().unwrap();
    let k = 1;
    let model = Arc::new(PreparedModel::new(&params, w, k, &mut || {}).unwrap());
    let strict = || {
        StrictLinear::new(
            w,
            &params,
            model.layouts(),
            InProcess::new(ModelServer::new(model.clone())),
        )
        .unwrap()
    };
    // 2^16 rows: 5.3 bits lost to sqrt(Q) over a 2^5-row cap.
    let cap = 1 << 16;
    let err = SelectiveClient::new(w, k, strict(), 0.01, cap).unwrap_err();
    let Error::FloodingTooWide {
        released,
        precision_bits,
        min_bits,
    } = err
    else {
        panic!("expected FloodingTooWide, got {err}");
    };
    // cap rows through layer 0's four products: every output coefficient (576 + 192 +
    // 192, 576, 2 x 1536, 576) counts, not the output ciphertexts.
    assert_eq!(released, cap as u64 * 5184);
    assert!(precision_bits < min_bits && min_bits == MIN_FLOODED_PRECISION_BITS);
    let f = strict().flood_decryptions(cap as u64).unwrap();
    let f = f.flooding().unwrap();
    assert_eq!(f.released, released);
    assert_eq!(f.sigmas.len(), k);
    assert!(SelectiveClient::new(w, k, strict(), 0.01, 32).is_ok());

    // A persisted key reused across sessions floods for every row it may release (the
    // per-key cap), not this session's 32: 64 rows fit, the keystore default of 4096 not.
    let mut c = SelectiveClient::new(w, k, strict(), 0.01, 32).unwrap();
    c.flood_for_key_rows(64).unwrap();
    let f = c.strict().flooding().unwrap();
    assert_eq!((f.releases_cap, f.released), (64, 64 * 5184));
    assert!(matches!(
        c.flood_for_key_rows(4096),
        Err(Error::FloodingTooWide { released, .. }) if released == 4096 * 5184
    ));

    // A public prefix is never decrypted: a session of 400 prefix and 32 private positions
    // floods for the 32 (`new` with the whole capacity would be refused).
    let tokens: Vec<u32> = (0..400).map(|i| 1000 + i).collect();
    let kv = selene_protocol::server::PublicPrefix::run(w, &tokens).unwrap();
    let (head, _) = kv.split_at(k);
    assert!(SelectiveClient::new(w, k, strict(), 0.01, 432).is_err());
    let c = SelectiveClient::with_prefix(w, k, strict(), 0.01, 432, &head).unwrap();
    assert_eq!(c.strict().flooding().unwrap().releases_cap, 32);
}
