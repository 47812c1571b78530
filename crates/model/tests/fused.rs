//! The fused forward pass (two product requests per layer) against the unfused one on
//! the real SmolLM2.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use selene_model::fused::{fused_weight, stack_rows, stacked_weight};
use selene_model::*;

fn weights() -> &'static Weights {
    static W: OnceLock<Weights> = OnceLock::new();
    W.get_or_init(|| store::load(None).expect("model through the store"))
}

fn fused() -> &'static FusedMatrices {
    static F: OnceLock<FusedMatrices> = OnceLock::new();
    F.get_or_init(|| FusedMatrices::build(weights()).unwrap())
}

fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_gguf(weights().gguf()).unwrap())
}

fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &x)| if x > b.1 { (i, x) } else { b },
        )
        .0 as u32
}

/// Largest logit difference tolerated between the fused and the unfused pass, relative to
/// the logits' largest magnitude. The regrouped products round differently in f32 and
/// the fused matrices are f32 products themselves; over 30 layers that measured about
/// 1.3e-6 of it on these prompts (printed), so 1e-4 leaves a factor of 75.
const LOGIT_TOLERANCE: f32 = 1e-4;

/// The largest `|got - want|` and the largest `|want|`.
fn deviation(got: &[f32], want: &[f32]) -> (f32, f32) {
    let range = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    (diff, range)
}

#[test]
fn fused_logits_equal_unfused_on_several_prompts() {
    let w = weights();
    let f = fused();
    for prompt in [
        "The patient was diagnosed with",
        "Paris is the capital of France, and",
        "Revenue grew 12% year over year while operating costs",
    ] {
        let ids = tokenizer().encode(prompt).unwrap();
        let mut cache = KvCache::new(w.config(), 64);
        let want = forward(w, &ids, &mut cache, &mut QuantLinear::new(w), Logits::All).unwrap();
        let mut cache = KvCache::new(w.config(), 64);
        let mut lin = FusedQuantLinear::new(w, f);
        let got = forward_fused(w, &ids, &mut cache, &mut lin, Logits::All).unwrap();
        let (diff, range) = deviation(&got, &want);
        println!(
            "{prompt:?}: max |fused - unfused| {diff:.2e}, max |logit| {range:.1}, relative {:.2e}",
            diff / range
        );
        assert!(
            diff <= LOGIT_TOLERANCE * range,
            "{prompt:?}: {diff} > {LOGIT_TOLERANCE} * {range}"
        );
    }
}

#[test]
fn fused_greedy_decoding_gives_the_same_tokens() {
    let w = weights();
    let ids = tokenizer()
        .encode("The patient was diagnosed with")
        .unwrap();
    let steps = 12;
    let run = |fuse: bool| -> Vec<u32> {
        let mut cache = KvCache::new(w.config(), 64);
        let mut lin = FusedQuantLinear::new(w, fused());
        let mut plain = QuantLinear::new(w);
        let mut step = |toks: &[u32], cache: &mut KvCache| {
            if fuse {
                forward_fused(w, toks, cache, &mut lin, Logits::Last).unwrap()
            } else {
                forward(w, toks, cache, &mut plain, Logits::Last).unwrap()
            }
        };
        let mut out = vec![argmax(&step(&ids, &mut cache))];
        while out.len() < steps {
            let last = *out.last().unwrap();
            out.push(argmax(&step(&[last], &mut cache)));
        }
        out
    };
    let unfused = run(false);
    assert_eq!(run(true), unfused);
    assert_eq!(
        tokenizer().decode(&unfused[..10]).unwrap(),
        " a rare genetic disorder that affects the immune system."
    );
}

#[test]
fn fused_matrix_is_the_product_of_its_stages() {
    let w = weights();
    let c = w.config();
    // One column of W' Wo through the two stages: e_j Wo^T then W'.
    for (layer, pair) in [(3, FusedPair::AttnGate), (7, FusedPair::DownQkv)] {
        let (d_in, d_out) = pair.dims(c);
        let f = fused_weight(w, layer, pair).unwrap();
        assert_eq!(f.len(), d_in * d_out);
        let (inner, outer) = pair.stages();
        let outer_layer = if pair == FusedPair::DownQkv {
            layer + 1
        } else {
            layer
        };
        let inner_w = w.stage_weight_f32(layer, inner).unwrap();
        let outer_w = w.stage_weight_folded(outer_layer, outer).unwrap();
        for j in [0, 5, d_in - 1] {
            let mid: Vec<f64> = inner_w
                .chunks_exact(d_in)
                .map(|r| f64::from(r[j]))
                .collect();
            for i in [0, 17, d_out - 1] {
                let want: f64 = outer_w[i * c.d_model..(i + 1) * c.d_model]
                    .iter()
                    .zip(&mid)
                    .map(|(a, b)| f64::from(*a) * b)
                    .sum();
                let got = f64::from(f[i * d_in + j]);
                assert!(
                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{got} vs {want}"
                );
            }
        }
    }
    assert!(fused_weight(w, c.n_layers - 1, FusedPair::DownQkv).is_err());
    assert!(fused_weight(w, c.n_layers, FusedPair::AttnGate).is_err());
}

/// `[s | alpha x] [W | F / alpha]^T = s W^T + x F^T` row by row, in f64 against the
/// halves; `alpha` is a power of two (so the scaling is exact), and rows of unequal
/// counts are refused.
#[test]
fn stacked_product_is_the_outer_plus_the_fused_product() {
    let w = weights();
    let c = w.config();
    let d = c.d_model;
    for (layer, pair) in [(2, FusedPair::AttnGate), (11, FusedPair::DownQkv)] {
        let (d_in, d_out) = pair.dims(c);
        let (s_in, s_out) = pair.stacked_dims(c);
        assert_eq!((s_in, s_out), (d + d_in, d_out));
        let stacked = stacked_weight(w, layer, pair).unwrap();
        assert_eq!(stacked.rows.len(), s_in * s_out);
        let a = stacked.alpha;
        assert!(a > 0.0 && a.log2().fract() == 0.0, "alpha {a}");
        let fused = fused_weight(w, layer, pair).unwrap();
        let outer_layer = pair.outer_layer(layer);
        let outer = w.stage_weight_folded(outer_layer, pair.stages().1).unwrap();
        // Two rows of made-up activations with unequal scales.
        let s: Vec<f32> = (0..2 * d)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 3.0)
            .collect();
        let x: Vec<f32> = (0..2 * d_in)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
            .collect();
        let sx = stack_rows(&s, d, &x, d_in, a).unwrap();
        let dot = |u: &[f32], v: &[f32]| -> f64 {
            u.iter()
                .zip(v)
                .map(|(p, q)| f64::from(*p) * f64::from(*q))
                .sum()
        };
        for t in 0..2 {
            for j in [0, 9, d_out - 1] {
                let got = dot(
                    &sx[t * s_in..(t + 1) * s_in],
                    &stacked.rows[j * s_in..][..s_in],
                );
                let want = dot(&s[t * d..][..d], &outer[j * d..][..d])
                    + dot(&x[t * d_in..][..d_in], &fused[j * d_in..][..d_in]);
                assert!(
                    (got - want).abs() <= 1e-9 * (1.0 + want.abs()),
                    "{pair:?} row {t} column {j}: {got} vs {want}"
                );
            }
        }
    }
    assert!(stack_rows(&[1.0; 4], 2, &[1.0; 3], 1, 1.0).is_none());
}

/// The first `k` layers fused (selective mode's encrypted part: the last layer in the
/// range runs its down product alone) leave the residual stream the unfused layers leave,
/// and the cache with the same keys and values.
#[test]
fn fused_layers_of_a_prefix_of_the_model_equal_the_unfused_ones() {
    let w = weights();
    let d = w.config().d_model;
    let ids = tokenizer()
        .encode("Paris is the capital of France, and")
        .unwrap();
    for k in [1, 4] {
        let mut want = vec![0.0; ids.len() * d];
        w.embed(&ids, &mut want).unwrap();
        let mut got = want.clone();
        let mut cache_want = KvCache::new(w.config(), 64);
        forward::forward_layers(
            w,
            0..k,
            &mut want,
            &mut cache_want,
            &mut QuantLinear::new(w),
            &mut |_, _| {},
        )
        .unwrap();
        let mut cache_got = KvCache::new(w.config(), 64);
        let mut lin = FusedQuantLinear::new(w, fused());
        fused::forward_layers_fused(w, 0..k, &mut got, &mut cache_got, &mut lin).unwrap();
        let (diff, range) = deviation(&got, &want);
        println!("K = {k}: max |fused - unfused| {diff:.2e} of {range:.1}");
        assert!(
            diff <= LOGIT_TOLERANCE * range,
            "K = {k}: {diff} of {range}"
        );
        for l in 0..k {
            assert_eq!(cache_got.layer_len(l), ids.len());
        }
        assert_eq!(cache_got.layer_len(k), 0, "layer {k} is not run");
    }
    // A range past the model is refused.
    let mut x = vec![0.0; d];
    let mut cache = KvCache::new(w.config(), 4);
    let n = w.config().n_layers;
    let mut lin = FusedQuantLinear::new(w, fused());
    assert!(fused::forward_layers_fused(w, 0..n + 1, &mut x, &mut cache, &mut lin).is_err());
}
