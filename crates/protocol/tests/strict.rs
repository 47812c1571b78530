//! Strict mode end to end on the real model: every per-layer product encrypted, the
//! result checked against the plaintext forward pass.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test helpers may panic")]

mod common;

use std::ops::ControlFlow;
use std::sync::Arc;

use common::greedy;
use selene_linalg::LinalgPreset;
use selene_model::{forward, generate, store, KvCache, Logits, QuantLinear, Tokenizer};
use selene_protocol::{InProcess, ModelServer, PreparedModel, StrictLinear, PIPELINE_ROWS};

/// Largest `|a_i - b_i|`.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

#[test]
fn strict_mode_matches_plaintext_tokens_and_logits() {
    let w = store::load(None).expect("model store");
    let tok = Tokenizer::from_gguf(w.gguf()).unwrap();
    let params = LinalgPreset::Coeff12.build().unwrap();
    let layers = w.config().n_layers;
    let model = Arc::new(PreparedModel::new(&params, &w, layers, &mut || {}).unwrap());
    let layouts = model.layouts();
    // Every product is spot-checked in plaintext (and bounded by ||x|| ||w_j||): an
    // honest server passes every check.
    let mut enc = StrictLinear::new(
        &w,
        &params,
        layouts,
        InProcess::new(ModelServer::new(model.clone())),
    )
    .unwrap()
    .with_verify_rate(1.0)
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
        let max_err = max_abs_diff(&plain, &secret);
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

    // A prompt of at least twice PIPELINE_ROWS tokens: each product goes as several
    // requests, each sent before the previous answer is read, one round trip in all;
    // the logits are as close to plaintext as one request's.
    let ids = tok
        .encode("The patient, a 54-year-old teacher, was admitted on 3 March with chest pain")
        .unwrap();
    let requests = ids.len().div_ceil(PIPELINE_ROWS);
    assert!(requests >= 2, "{} tokens", ids.len());
    let c = w.config();
    let plain = forward(
        &w,
        &ids,
        &mut KvCache::new(c, ids.len()),
        &mut QuantLinear::new(&w),
        Logits::Last,
    )
    .unwrap();
    let before = enc.stats();
    let secret = forward(
        &w,
        &ids,
        &mut KvCache::new(c, ids.len()),
        &mut enc,
        Logits::Last,
    )
    .unwrap();
    let after = enc.stats();
    let max_err = max_abs_diff(&plain, &secret);
    eprintln!(
        "{} tokens pipelined: max |logit error| {max_err:.2e}",
        ids.len()
    );
    assert!(max_err < 0.1, "logit error {max_err}");
    assert_eq!(after.products - before.products, requests * 4 * layers);
    assert_eq!(after.round_trips - before.round_trips, 4 * layers as u64);

    let s = enc.stats();
    assert!(s.products > 0 && s.bytes_up > 0 && s.bytes_down > 0);
    assert_eq!(s.verified, s.products);
    eprintln!(
        "spot checks: {} products, largest deviation {:.2e} of ||x|| ||w_j||",
        s.verified, s.verify_max_deviation
    );
    assert!(enc.server_time() > std::time::Duration::ZERO);
}

/// Strict mode at `coeff12pack` (outputs packed by the server with the session's Galois
/// keys), tilings chosen for the `wan` link: greedy tokens equal the
/// plaintext model's, the keys went up once, and far fewer bytes come down per product
/// than the unpacked plan sends.
#[test]
fn strict_mode_with_packed_outputs_matches_plaintext_tokens() {
    use selene_linalg::Link;
    let w = &common::shared().w;
    let tok = &common::shared().tok;
    let params = LinalgPreset::Coeff12Pack.build().unwrap();
    let ids = tok.encode("The patient was diagnosed with").unwrap();
    let want = common::plain(&ids, 4);
    let layers = w.config().n_layers;
    // One link keeps the test's time down; `crates/linalg/tests/packed.rs` covers the
    // plans of the others product by product.
    #[allow(clippy::single_element_loop, reason = "more links fit here")]
    for link in [Link::WAN] {
        let model =
            Arc::new(PreparedModel::for_link(&params, w, layers, &link, &mut || {}).unwrap());
        let mut enc = StrictLinear::new(
            w,
            &params,
            model.layouts(),
            InProcess::new(ModelServer::new(model.clone())),
        )
        .unwrap()
        .with_verify_rate(1.0)
        .unwrap();
        let got = generate(w, &ids, 4, &[], &mut greedy(), &mut enc, &mut |_| {
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        assert_eq!(got, want, "{link}: greedy tokens differ");
        let s = enc.stats();
        assert_eq!(s.verified, s.products);
        eprintln!(
            "{link}: spot checks, largest deviation {:.2e}",
            s.verify_max_deviation
        );
        // One upload: the images' elements and one per merge level left (a few dozen
        // keys of about 55 KB).
        assert!(
            (1..=128).contains(&s.galois_keys)
                && s.galois_key_bytes < 64 * 55_000 * 2
                && s.galois_key_bytes > 0,
            "{s:?}"
        );
        // 9 positions pass through 30 layers' 4 products; packed, each product's
        // download is at most a few ciphertexts of 2 x 4096 24-bit coefficients.
        let per_product = s.bytes_down as f64 / s.products as f64;
        eprintln!(
            "{link}: {} keys ({:.2} MB, generated in {:?}), {:.1} KB up and {:.1} KB down per \
             product",
            s.galois_keys,
            s.galois_key_bytes as f64 / 1e6,
            s.galois_keygen,
            s.bytes_up as f64 / s.products as f64 / 1e3,
            per_product / 1e3
        );
        assert!(
            per_product < 100e3,
            "{link}: {per_product} bytes down per product"
        );
        if link == Link::WAN {
            upload_rules_hold(&model, &params);
        }
    }
}

/// A key upload holds exactly the elements the packed layouts need, once per session.
fn upload_rules_hold(model: &Arc<PreparedModel>, params: &Arc<selene_ckks::Parameters>) {
    use selene_protocol::codec::keys::encode_galois_keys;
    use selene_protocol::{ClientSession, Error, Policy};
    let layers = model.layers();
    let open = || {
        let policy = Policy {
            preset: LinalgPreset::Coeff12Pack,
            ..Policy::strict(layers)
        };
        let t = InProcess::new(ModelServer::new(model.clone()));
        ClientSession::open(t, params, policy, 64).unwrap()
    };
    let client = selene_linalg::Client::new(params);
    let layouts = model.layouts();
    let refs: Vec<_> = layouts.iter().flatten().collect();
    let keys = client.galois_keys(&refs);
    // A key for an element no layout needs (conjugation) is refused, as is a set that
    // lacks one.
    let mut extra = client.galois_keys(&refs);
    extra.insert(selene_ckks::GaloisKey::new(
        &selene_ckks::SecretKey::generate(params),
        2 * params.n() as u64 - 1,
    ));
    let mut s = open();
    let e = s
        .upload_galois_keys(encode_galois_keys(&extra))
        .unwrap_err();
    assert!(matches!(e, Error::Remote { .. }), "{e}");
    let mut s = open();
    let mut fewer = selene_ckks::GaloisKeys::default();
    let first = keys.elements().next().unwrap();
    fewer.insert(keys.get(first).unwrap().as_ref().clone());
    assert!(s.upload_galois_keys(encode_galois_keys(&fewer)).is_err());
    // The right set goes in once; a second upload is refused.
    let mut s = open();
    s.upload_galois_keys(encode_galois_keys(&keys)).unwrap();
    assert!(s.upload_galois_keys(encode_galois_keys(&keys)).is_err());
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
        // K = 1 keeps 11.7 bits: every step agrees (smallest plaintext top-2 gap 0.22).
        // K = 4 keeps 10.7 bits and moves logits by up to about 0.5: the steps before the
        // first gap under 1.0 must agree (the first four here).
        let sure = if k == 1 {
            max
        } else {
            (1..=max)
                .take_while(|&j| common::greedy_margin(&ids, &want[..j]) > 1.0)
                .count()
        };
        assert!(sure >= 1, "K={k}: no step with a clear plaintext choice");
        assert_eq!(got[..sure], want[..sure], "K={k}");
        // One released row per position: the prompt, then each fed-back token.
        assert_eq!(client.releases(), ids.len() + max - 1);
        // The flooding noise is fresh every run: over seven runs (2026-12-04) the largest
        // logit error was 0.07-0.10 at K = 1 and 0.22-0.56 at K = 4, so the former bound
        // of 0.5 failed about every other run at K = 4. A broken layout or key gives
        // errors of order 10.
        assert!(err < 1.5, "K={k}: logit error {err}");
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

/// Strict mode with prompt-lookup drafts: each pass runs `k + 1` rows through the
/// encrypted products, and the accepted tokens equal plain greedy generation's
/// (issue 18's "drafted generation equals greedy plain generation").
#[test]
fn strict_mode_with_drafts_matches_plain_greedy() {
    use selene_model::draft::PromptLookup;
    use selene_protocol::generate_after_prefix_drafted;
    let w = &common::shared().w;
    let tok = &common::shared().tok;
    // Outputs that quote the input let the drafts be accepted.
    let ids = tok
        .encode("Patient: Maria Lopez, 54. Diagnosis: type 2 diabetes.\nPatient: Maria Lopez, 54. Diagnosis:")
        .unwrap();
    let tokens = 8;
    let want = common::plain(&ids, tokens);
    let model = common::prepared(w.config().n_layers, LinalgPreset::Coeff12);
    let params = LinalgPreset::Coeff12.build().unwrap();
    let mut enc = StrictLinear::new(
        w,
        &params,
        model.layouts(),
        InProcess::new(ModelServer::new(model.clone())),
    )
    .unwrap();
    let lookup = PromptLookup::new(4).unwrap();
    let (got, stats) = generate_after_prefix_drafted(
        w,
        None,
        &ids,
        tokens,
        &[],
        &mut greedy(),
        &mut enc,
        Some(&lookup),
        &mut |_| Ok(ControlFlow::Continue(())),
    )
    .unwrap();
    eprintln!("{stats:?}");
    assert_eq!(got, want, "drafted tokens differ from plain greedy");
    // The repeated line is drafted from the prompt: fewer passes than tokens.
    assert!(stats.accepted > 0 && stats.passes < tokens, "{stats:?}");
}
