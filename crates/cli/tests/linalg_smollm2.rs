//! selene-linalg on SmolLM2-135M's four projections with real weights and real
//! activations (recorded from the plaintext forward pass, residual-stream outliers
//! included) against f64. Lives in the CLI crate because `linalg` may not depend on
//! `model`, not even for tests (scripts/check_deps.py).

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../linalg/tests/common/mod.rs"]
mod common;

use std::sync::OnceLock;

use common::{max_rel_error, round_trip};
use selene_linalg::{LinalgPreset, MatrixShape, Method};
use selene_model::{
    forward, store, KvCache, Linear, LinearStage, Logits, ProductAt, QuantLinear, Weights,
};

const STAGES: [LinearStage; 4] = [
    LinearStage::Qkv,
    LinearStage::AttnOut,
    LinearStage::GateUp,
    LinearStage::Down,
];
/// A middle layer (large activations) and the last one.
const LAYERS: [usize; 2] = [14, 29];
const TOKENS: usize = 4;

fn weights() -> &'static Weights {
    static W: OnceLock<Weights> = OnceLock::new();
    W.get_or_init(|| store::load(None).expect("model through the store"))
}

/// Records the input of every linear stage of `LAYERS` while running the plain model.
struct Recorder<'w> {
    inner: QuantLinear<'w>,
    seen: Vec<(usize, LinearStage, Vec<f32>)>,
}

impl Linear for Recorder<'_> {
    fn apply(&mut self, at: ProductAt, x: &[f32], out: &mut [f32]) -> selene_model::Result<()> {
        let ProductAt { layer, stage } = at;
        if LAYERS.contains(&layer) && stage != LinearStage::LmHead {
            self.seen.push((layer, stage, x.to_vec()));
        }
        self.inner.apply(ProductAt::new(layer, stage), x, out)
    }
}

fn activations() -> &'static Vec<(usize, LinearStage, Vec<f32>)> {
    static A: OnceLock<Vec<(usize, LinearStage, Vec<f32>)>> = OnceLock::new();
    A.get_or_init(|| {
        let w = weights();
        let mut rec = Recorder {
            inner: QuantLinear::new(w),
            seen: Vec::new(),
        };
        // Token ids of an ordinary English prompt (any in-vocabulary ids will do).
        let tokens = [504u32, 1617, 436, 12364];
        let mut cache = KvCache::new(w.config(), TOKENS);
        forward(w, &tokens, &mut cache, &mut rec, Logits::Last).unwrap();
        rec.seen
    })
}

fn check(preset: LinalgPreset, method: Method, n: usize) {
    let params = preset.build().unwrap();
    let w = weights();
    let mut worst_bits = f64::INFINITY;
    for (layer, stage, x) in activations() {
        if !STAGES.contains(stage) {
            continue;
        }
        let (d_in, d_out) = stage.dims(w.config());
        let shape = MatrixShape::new(d_in, d_out);
        let w_rows = w.stage_weight_f32(*layer, *stage).unwrap();
        let x = &x[..n * d_in];
        let max_abs = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let rms = (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt();
        let (y, up, down) = round_trip(&params, &w_rows, shape, method, x, n);
        let err = max_rel_error(x, &w_rows, shape, &y);
        let bits = -err.log2();
        println!(
            "{preset:?} {} layer {layer} {stage:?} {d_in}->{d_out} n={n}: {bits:.1} bits \
             (max|x|/rms {:.0}), up {up} B, down {down} B",
            method.name(),
            max_abs / rms
        );
        assert!(
            err <= 2f64.powi(-12),
            "{preset:?} {stage:?} layer {layer}: {bits:.2} bits"
        );
        worst_bits = worst_bits.min(bits);
    }
    println!(
        "{preset:?} {}: worst {worst_bits:.1} bits of precision",
        method.name()
    );
}

#[test]
fn coefficient_method_n12_on_smollm2_projections() {
    check(LinalgPreset::Coeff12, Method::Coefficients, TOKENS);
}

#[test]
fn coefficient_method_n11_on_smollm2_projections() {
    check(LinalgPreset::Coeff11, Method::Coefficients, TOKENS);
}

#[test]
fn slot_method_on_smollm2_projections() {
    check(LinalgPreset::Slots13, Method::Slots, 1);
}
