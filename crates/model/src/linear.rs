//! The five weight products of the model as swappable stages.
//!
//! Everything in the forward pass without a weight matrix runs in [`mod@crate::forward`];
//! the products go through a [`Linear`], so a caller (the encrypted protocol) can
//! replace any of them. [`QuantLinear`] is the plaintext implementation over the
//! quantized weights. [`ColumnNorms`] holds the public column norms of the encrypted
//! stages.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::matmul::matmul;
use crate::weights::Weights;

/// A linear stage of a layer (or of the head).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinearStage {
    /// `[Wq; Wk; Wv]`: normed input (`d_model`) to `q | k | v` (`d_model + 2 kv_dim`).
    Qkv,
    /// `Wo`: attention output (`d_model`) to the residual update (`d_model`).
    AttnOut,
    /// `[Wgate; Wup]`: normed input (`d_model`) to `gate | up` (`2 d_ff`).
    GateUp,
    /// `Wdown`: `silu(gate) * up` (`d_ff`) to the residual update (`d_model`).
    Down,
    /// The LM head (tied to the embedding): final normed state to `vocab_size` logits.
    LmHead,
}

impl LinearStage {
    /// The five stages in execution order.
    pub const ALL: [LinearStage; 5] = [
        LinearStage::Qkv,
        LinearStage::AttnOut,
        LinearStage::GateUp,
        LinearStage::Down,
        LinearStage::LmHead,
    ];

    /// `(d_in, d_out)` of the stage.
    pub fn dims(self, c: &Config) -> (usize, usize) {
        match self {
            LinearStage::Qkv => (c.d_model, c.qkv_dim()),
            LinearStage::AttnOut => (c.d_model, c.d_model),
            LinearStage::GateUp => (c.d_model, 2 * c.d_ff),
            LinearStage::Down => (c.d_ff, c.d_model),
            LinearStage::LmHead => (c.d_model, c.vocab_size),
        }
    }

    /// Checks that `x` is `n x d_in` and `out` is `n x d_out` for some `n`.
    ///
    /// # Errors
    /// [`Error::Shape`] naming the mismatched argument.
    pub fn check(self, c: &Config, x: &[f32], out: &[f32]) -> Result<usize> {
        let (d_in, d_out) = self.dims(c);
        if !x.len().is_multiple_of(d_in) {
            return Err(Error::Shape {
                what: "linear stage input (n x d_in)",
                found: x.len(),
                expected: x.len().next_multiple_of(d_in),
            });
        }
        let n = x.len() / d_in;
        if out.len() != n * d_out {
            return Err(Error::Shape {
                what: "linear stage output (n x d_out)",
                found: out.len(),
                expected: n * d_out,
            });
        }
        Ok(n)
    }
}

/// Which weight product: a layer and one of its stages (`layer` is ignored for
/// `LmHead`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProductAt {
    /// The layer.
    pub layer: usize,
    /// The stage within it.
    pub stage: LinearStage,
}

impl ProductAt {
    /// The product of `layer`'s `stage`.
    pub fn new(layer: usize, stage: LinearStage) -> Self {
        Self { layer, stage }
    }
}

/// An implementation of the model's weight products.
///
/// `apply` gets `x` as `n x d_in` row-major (one token per row) and writes `n x d_out`
/// into `out` (see [`LinearStage::dims`]).
pub trait Linear {
    /// Computes `out = x * W^T` for the stage's weight matrix.
    ///
    /// # Errors
    /// Whatever the implementation fails with; shape errors for mis-sized slices.
    fn apply(&mut self, at: ProductAt, x: &[f32], out: &mut [f32]) -> Result<()>;

    /// True when this implementation multiplies with gain-folded matrices
    /// ([`Weights::stage_weight_folded`]): the forward pass then hands `Qkv`, `GateUp`
    /// and `LmHead` the RMS-normalized input *without* the gain.
    fn gains_folded(&self) -> bool {
        false
    }
}

/// The plaintext products over the quantized weights (fast kernels, f32 arithmetic).
#[derive(Debug, Clone, Copy)]
pub struct QuantLinear<'w> {
    weights: &'w Weights,
}

impl<'w> QuantLinear<'w> {
    /// Products with `weights`' own matrices.
    pub fn new(weights: &'w Weights) -> Self {
        QuantLinear { weights }
    }
}

impl Linear for QuantLinear<'_> {
    fn apply(&mut self, at: ProductAt, x: &[f32], out: &mut [f32]) -> Result<()> {
        let ProductAt { layer, stage } = at;
        stage.check(self.weights.config(), x, out)?;
        let mats = self.weights.stage_matrices(layer, stage)?;
        matmul(&mats, x, out)
    }
}

/// The encrypted stages in table order.
pub const NORM_STAGES: [LinearStage; 4] = [
    LinearStage::Qkv,
    LinearStage::AttnOut,
    LinearStage::GateUp,
    LinearStage::Down,
];

/// Column norms of every layer's four encrypted stages, in [`NORM_STAGES`] order.
///
/// Per-output-column Euclidean norms of the layer matrices as the server multiplies
/// with them (the RMSNorm gain folded in, [`crate::Weights::stage_weight_folded`]).
///
/// They are public: a coefficient- or slot-method layout carries the column scales
/// `s_j = 2^w_bits / ||w_j||`, and a client in client-aided mode learns them from its
/// outputs anyway. The client keeps its own copy to pin the scales a server sends
/// (an active server that chose them could steer the decoded values) and to bound every
/// decrypted output `y_tj` by `||x_t|| ||w_j||` (Cauchy-Schwarz). The table is `O(L d)`
/// numbers (SmolLM2: 155,520 f64, 1.2 MB), never `O(d^2)`.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnNorms {
    layers: Vec<[Vec<f64>; 4]>,
}

impl ColumnNorms {
    /// A table from per-layer norms in [`NORM_STAGES`] order.
    pub fn new(layers: Vec<[Vec<f64>; 4]>) -> Self {
        Self { layers }
    }

    /// Layers in the table.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// The norms of `layer`'s `stage` (one per output column).
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`]; [`Error::NotLoaded`] for the LM head (not in the table).
    pub fn get(&self, layer: usize, stage: LinearStage) -> Result<&[f64]> {
        let l = self.layers.get(layer).ok_or(Error::LayerOutOfRange {
            layer,
            n_layers: self.layers.len(),
        })?;
        let at = NORM_STAGES
            .iter()
            .position(|s| *s == stage)
            .ok_or_else(|| Error::NotLoaded {
                name: "column norms of the LM head".to_string(),
            })?;
        Ok(&l[at])
    }
}

/// Euclidean norm of one row, accumulated in f64 exactly as the server's encoder does.
pub fn row_norm(row: &[f32]) -> f64 {
    row.iter()
        .map(|&w| f64::from(w).powi(2))
        .sum::<f64>()
        .sqrt()
}
