//! The thin client: private generation whose client holds only the client bundle
//! (`selene_model::store::load_client`, no layer matrix read) against a session server
//! holding the full model. Tokens equal the plaintext model's in strict mode, strict
//! with padding, and selective mode (K = 1, LM head on the client and on the server,
//! every generated token's layer-0 q|k|v taken from the server's answer ahead).

#![allow(clippy::unwrap_used, clippy::panic, reason = "test helpers may panic")]

mod common;

use std::ops::ControlFlow;
use std::sync::Arc;

use selene_linalg::LinalgPreset;
use selene_model::{generate, store, QuantLinear, Tokenizer};

use common::greedy;
use selene_protocol::policy::HeadSide;
use selene_protocol::{model_fingerprint, Limits, Policy, PreparedModel, SessionServer};

const TOKEN: &[u8] = b"bundle-test-token";

#[test]
fn bundle_client_generates_the_plaintext_tokens() {
    let full = Arc::new(store::load(None).unwrap());
    let bundle = store::load_client(None).unwrap();
    assert!(!bundle.has_layer_matrices());
    // The thin client's column norms (which pin the server's decoding scales) come from
    // one streaming pass over its model file.
    let norms = bundle
        .stream_column_norms(&store::model_path(None).unwrap())
        .unwrap();
    let bundle = bundle.with_column_norms(norms).unwrap();
    let tok = Tokenizer::from_gguf(bundle.gguf()).unwrap();
    let layers = full.config().n_layers;

    let strict_params = LinalgPreset::Coeff12.build().unwrap();
    let wide_params = LinalgPreset::Coeff12Wide.build().unwrap();
    let strict_model =
        Arc::new(PreparedModel::new(&strict_params, &full, layers, &mut || {}).unwrap());
    let wide_model = Arc::new(PreparedModel::new(&wide_params, &full, 1, &mut || {}).unwrap());
    let server = Arc::new(
        SessionServer::new(strict_model, full.clone(), Limits::default())
            .with_model(wide_model)
            .with_token(TOKEN),
    );

    let ids = tok.encode("The patient was diagnosed with").unwrap();
    let max = 3;
    let want = generate(
        &full,
        &ids,
        max,
        &[],
        &mut greedy(),
        &mut QuantLinear::new(&full),
        &mut |_| Ok(ControlFlow::Continue(())),
    )
    .unwrap();

    // The server's fingerprint (from the full model) equals the bundle's: a mismatch
    // would fail `open` with ModelMismatch.
    let fingerprint = model_fingerprint(&bundle);
    assert_eq!(fingerprint, model_fingerprint(&full));

    let mut padded = Policy::strict(layers);
    padded.pad_to = Some(8);
    let mut head_on_server = Policy::selective(layers, 1);
    head_on_server.lm_head = HeadSide::Server;
    assert_eq!(Policy::selective(layers, 1).lm_head, HeadSide::Client);
    let cases = [
        ("strict", Policy::strict(layers)),
        ("strict, padded to 8", padded),
        ("selective K = 1, head on the server", head_on_server),
        ("selective K = 1", Policy::selective(layers, 1)),
    ];
    for (what, policy) in cases {
        let (got, stats) = common::generate_in_process(&bundle, &server, TOKEN, policy, &ids, max);
        eprintln!("{what}: {got:?} ({} products)", stats.traffic.products);
        assert_eq!(
            got, want,
            "{what}: tokens differ from the plaintext model's"
        );
        if what.starts_with("selective") {
            // Greedy tokens are the server's own: every token fed back takes layer 0's
            // q|k|v ahead, so its pass runs 3 of the layer's 4 products.
            assert_eq!(stats.ahead, max - 1, "{what}");
            assert_eq!(stats.traffic.products, 4 + 3 * (max - 1), "{what}");
        }
    }
}
