//! End-to-end checks on the real model (fetched through the store on first use).

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use selene_model::forward::{head, rms_norm};
use selene_model::*;

fn weights() -> &'static Weights {
    static W: OnceLock<Weights> = OnceLock::new();
    W.get_or_init(|| store::load(None).expect("model through the store"))
}

fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_gguf(weights().gguf()).unwrap())
}

fn greedy(prompt: &str, n: usize) -> Vec<u32> {
    let w = weights();
    let ids = tokenizer().encode(prompt).unwrap();
    let mut s = Sampler::new(SamplingParams::default()).unwrap();
    generate(
        w,
        &ids,
        n,
        &[],
        &mut s,
        &mut QuantLinear::new(w),
        &mut |_| Ok(std::ops::ControlFlow::Continue(())),
    )
    .unwrap()
}

#[test]
fn patient_prompt_continues_as_the_reference() {
    let out = greedy("The patient was diagnosed with", 10);
    assert_eq!(
        tokenizer().decode(&out).unwrap(),
        " a rare genetic disorder that affects the immune system."
    );
}

#[test]
fn config_is_smollm2_135m() {
    let c = weights().config();
    assert_eq!(
        (
            c.n_layers,
            c.d_model,
            c.n_heads,
            c.n_kv_heads,
            c.d_ff,
            c.vocab_size
        ),
        (30, 576, 9, 3, 1536, 49152)
    );
    assert_eq!((c.rope_theta, c.rms_eps), (100_000.0, 1e-5));
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn prefill_and_token_by_token_decode_agree() {
    let w = weights();
    let ids = tokenizer()
        .encode("Paris is the capital of France, and")
        .unwrap();
    let mut lin = QuantLinear::new(w);
    let mut cache = KvCache::new(w.config(), 64);
    let all = forward(w, &ids, &mut cache, &mut lin, Logits::All).unwrap();
    let mut cache = KvCache::new(w.config(), 64);
    let v = w.config().vocab_size;
    for (t, &id) in ids.iter().enumerate() {
        let one = forward(w, &[id], &mut cache, &mut lin, Logits::Last).unwrap();
        let d = max_abs_diff(&one, &all[t * v..(t + 1) * v]);
        assert!(d < 1e-3, "position {t}: max diff {d}");
    }
    assert_eq!(cache.len(), ids.len());
}

/// Products with gain-folded f32 matrices (what the server does in client-aided mode).
struct Folded<'w> {
    w: &'w Weights,
    cache: std::collections::HashMap<(usize, LinearStage), Vec<f32>>,
}

impl Linear for Folded<'_> {
    fn apply(&mut self, at: ProductAt, x: &[f32], out: &mut [f32]) -> Result<()> {
        let ProductAt { layer, stage } = at;
        let (d_in, d_out) = stage.dims(self.w.config());
        let w = self
            .cache
            .entry((layer, stage))
            .or_insert_with(|| self.w.stage_weight_folded(layer, stage).unwrap());
        for (xr, or) in x.chunks_exact(d_in).zip(out.chunks_exact_mut(d_out)) {
            for (o, wr) in or.iter_mut().zip(w.chunks_exact(d_in)) {
                *o = xr
                    .iter()
                    .zip(wr)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum::<f64>() as f32;
            }
        }
        Ok(())
    }

    fn gains_folded(&self) -> bool {
        true
    }
}

#[test]
fn folded_gains_and_substituted_stages_reproduce_the_logits() {
    let w = weights();
    let ids = tokenizer()
        .encode("The patient was diagnosed with")
        .unwrap();
    let mut cache = KvCache::new(w.config(), 16);
    let reference = forward(w, &ids, &mut cache, &mut QuantLinear::new(w), Logits::Last).unwrap();
    let mut folded = Folded {
        w,
        cache: Default::default(),
    };
    let mut cache = KvCache::new(w.config(), 16);
    let got = forward(w, &ids, &mut cache, &mut folded, Logits::Last).unwrap();
    let d = max_abs_diff(&got, &reference);
    assert!(
        d < 2e-3,
        "folded f64 products vs quantized kernels: max diff {d}"
    );
}

#[test]
fn split_layers_observer_and_head_match_the_full_pass() {
    let w = weights();
    let c = w.config();
    let ids = tokenizer().encode("Hello world").unwrap();
    let mut lin = QuantLinear::new(w);
    let mut seen = Vec::new();
    let mut cache = KvCache::new(c, 8);
    let full = forward_observed(w, &ids, &mut cache, &mut lin, Logits::Last, &mut |l, x| {
        seen.push((l, x.to_vec()))
    })
    .unwrap();
    assert_eq!(seen.len(), 30);
    // Layers 0..12 here, 12..30 "elsewhere", with separate calls on one cache.
    let mut x = vec![0.0; ids.len() * c.d_model];
    w.embed(&ids, &mut x).unwrap();
    let mut cache = KvCache::new(c, 8);
    forward_layers(w, 0..12, &mut x, &mut cache, &mut lin, &mut |_, _| {}).unwrap();
    assert_eq!(x, seen[11].1);
    forward_layers(w, 12..30, &mut x, &mut cache, &mut lin, &mut |_, _| {}).unwrap();
    let mut logits = vec![0.0; c.vocab_size];
    head(w, &x[x.len() - c.d_model..], &mut lin, &mut logits).unwrap();
    assert_eq!(logits, full);
    // The un-gained norm times the gain is the gained norm.
    let mut n = vec![0.0; c.d_model];
    rms_norm(&x[..c.d_model], c.d_model, c.rms_eps, &mut n);
    let ms = n.iter().map(|v| v * v).sum::<f32>() / c.d_model as f32;
    assert!((ms - 1.0).abs() < 1e-3);
}

#[test]
fn stage_matrices_are_the_dequantized_tensors() {
    let w = weights();
    let c = w.config();
    for stage in LinearStage::ALL {
        let (d_in, d_out) = stage.dims(c);
        let m = w.stage_weight_f32(3, stage).unwrap();
        assert_eq!(m.len(), d_in * d_out, "{stage:?}");
        // Product of the f32 matrix with a basis vector picks a column.
        let mut x = vec![0.0; d_in];
        x[5] = 1.0;
        let mut out = vec![0.0; d_out];
        QuantLinear::new(w)
            .apply(ProductAt::new(3, stage), &x, &mut out)
            .unwrap();
        for (o, row) in out.iter().zip(m.chunks_exact(d_in)).take(200) {
            assert!((o - row[5]).abs() < 1e-6);
        }
    }
    assert!(w.stage_weight_f32(30, LinearStage::Qkv).is_err());
}

#[test]
fn tokenizer_handles_specials_digits_and_round_trips() {
    let t = tokenizer();
    let ids = t.encode("<|im_start|>user\nHi 2024!<|im_end|>").unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(*ids.last().unwrap(), 2);
    // Digits are split one by one.
    let digits = t.encode("2024").unwrap();
    assert_eq!(digits.len(), 4);
    for s in [
        "  leading spaces\tand tabs",
        "naïve café 東京 🦀",
        "a\n\nb",
        "",
    ] {
        let ids = t.encode(s).unwrap();
        assert_eq!(t.decode(&ids).unwrap(), s);
        // Streaming decode gives the same text, never a broken character.
        let mut dec = StreamDecoder::new();
        let mut out = String::new();
        for &id in &ids {
            let piece = dec.push(t, id).unwrap();
            assert!(!piece.contains('\u{fffd}'));
            out.push_str(&piece);
        }
        out.push_str(&dec.finish());
        assert_eq!(out, s);
    }
    assert!(t.eos_ids().contains(&2) && t.eos_ids().contains(&0));
}

#[test]
fn perplexity_of_plain_english_is_low_and_of_noise_high() {
    let w = weights();
    let t = tokenizer();
    let text = "The quick brown fox jumps over the lazy dog. The dog did not move.";
    let p = perplexity(w, &t.encode(text).unwrap(), 64, &mut QuantLinear::new(w)).unwrap();
    let noise = "zq xv 81 ;; kk!! plmo Qz vvv #@ 0x";
    let q = perplexity(w, &t.encode(noise).unwrap(), 64, &mut QuantLinear::new(w)).unwrap();
    assert!(p.perplexity > 1.0 && p.perplexity < 40.0, "{p:?}");
    assert!(q.perplexity > 3.0 * p.perplexity, "{q:?} vs {p:?}");
}
