//! A server holding the stages tiled for several rows per ciphertext
//! (`PreparedModel::with_batched`): a prompt's pass takes them, with the plaintext
//! model's greedy tokens and fewer bytes than row by row; single rows keep the stages'
//! own tiling.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test helpers may panic")]

use std::sync::Arc;

use selene_linalg::{LinalgPreset, Link};
mod common;

use common::greedy_passes;
use selene_model::{forward, store, KvCache, Logits, QuantLinear};
use selene_protocol::{InProcess, ModelServer, PreparedModel, StrictLinear};

#[test]
fn a_batched_prompt_pass_gives_the_plaintext_tokens_in_fewer_bytes() {
    let w = store::load(None).expect("model store");
    let c = w.config();
    let layers = c.n_layers;
    let params = LinalgPreset::Coeff12Pack.build().unwrap();
    let rows = 2;
    let single = PreparedModel::for_link(&params, &w, layers, &Link::WAN, &mut || {}).unwrap();
    let single = Arc::new(single);
    let batched = PreparedModel::for_link(&params, &w, layers, &Link::WAN, &mut || {})
        .unwrap()
        .with_batched(&w, rows, &mut || {})
        .unwrap();
    let estimate = PreparedModel::estimate(&params, c, layers, &Link::WAN, rows, false).unwrap();
    assert_eq!(estimate.stages, single.memory_bytes());
    assert_eq!(estimate.total(), batched.memory_bytes());
    assert!(estimate.batched > estimate.stages, "{estimate:?}");
    for (l, four) in batched.batched_layouts().iter().enumerate() {
        for layout in four {
            assert_eq!(layout.tokens_per_ct(), rows, "layer {l}");
        }
    }
    let batched = Arc::new(batched);
    let ids = [504u32, 1617, 436, 12364, 314, 260];
    let steps = 3;

    let mut lin = QuantLinear::new(&w);
    let mut cache = KvCache::new(c, ids.len() + steps);
    let want = greedy_passes(&ids, steps, &mut |t| {
        forward(&w, t, &mut cache, &mut lin, Logits::Last).unwrap()
    });

    // (bytes up and down of the prompt's pass, tokens)
    let run = |model: &Arc<PreparedModel>| {
        let mut enc = StrictLinear::new(
            &w,
            &params,
            model.layouts(),
            InProcess::new(ModelServer::new(model.clone())),
        )
        .unwrap();
        let mut cache = KvCache::new(c, ids.len() + steps);
        let mut prompt_bytes = None;
        let got = greedy_passes(&ids, steps, &mut |t| {
            let logits = forward(&w, t, &mut cache, &mut enc, Logits::Last).unwrap();
            let s = enc.stats();
            prompt_bytes.get_or_insert((s.bytes_up, s.bytes_down));
            logits
        });
        let prompt_bytes = prompt_bytes.unwrap();
        let s = enc.stats();
        let token_bytes = (s.bytes_up - prompt_bytes.0, s.bytes_down - prompt_bytes.1);
        (prompt_bytes, token_bytes, got)
    };
    let (row_prompt, row_token, row_tokens) = run(&single);
    let (batch_prompt, batch_token, batch_tokens) = run(&batched);
    eprintln!(
        "{}-token prompt: row by row {row_prompt:?} B up/down, {rows} rows per ciphertext \
         {batch_prompt:?}; the generated tokens {row_token:?} and {batch_token:?}",
        ids.len()
    );
    assert_eq!(row_tokens, want, "row by row");
    assert_eq!(batch_tokens, want, "batched");
    assert!(
        batch_prompt.0 < row_prompt.0,
        "the batched pass uploads less: {batch_prompt:?} vs {row_prompt:?}"
    );
    // Single rows keep the stages' tiling: the same bytes per generated token.
    assert_eq!(batch_token, row_token);
}
