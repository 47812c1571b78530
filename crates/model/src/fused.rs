//! Two weight-product requests per layer instead of four: fused stage pairs.
//!
//! RMSNorm scales a whole row by one scalar, and a scalar commutes with the product that
//! follows. With `h = x + a Wo^T` (`x` the layer input, `a` the attention output) and the
//! gain-folded `W' = W_gate|up diag(g2)` ([`Weights::stage_weight_folded`]),
//! ```text
//! gate|up = rms_norm(h) W'^T = (x W'^T + a (W' Wo)^T) / rms(h)
//! ```
//! and with `x' = h + m Wdown^T` (`m = silu(gate) * up`) and the next layer's
//! `W'' = W_qkv diag(g1)`,
//! ```text
//! qkv' = rms_norm(x') W''^T = (h W''^T + m (W'' Wdown)^T) / rms(x')
//! ```
//! So one request ([`FusedPair::AttnGate`]) takes `a` and `x` and returns `a Wo^T` and
//! the unscaled `gate|up`; the client then knows `h`, divides by `rms(h)` and runs the
//! SwiGLU; the next ([`FusedPair::DownQkv`]) takes `m` and `h` and returns `m Wdown^T`
//! and the next layer's unscaled `q|k|v`. A token costs `2 L + 1` requests (the first
//! layer's `Qkv` alone) instead of `4 L`, for the fused matrices' extra multiply-adds
//! (SmolLM2: `2 d_ff d + qkv_dim d_ff` per layer and token, about 1.9x).
//!
//! [`forward_fused`] runs the model this way over a [`FusedLinear`]; [`FusedQuantLinear`]
//! is the plaintext implementation, and [`fused_weight`] builds the fused matrices.

use rayon::prelude::*;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::forward::{add_into, attention, head, rms_norm, rope_for, silu_mul, Logits};
use crate::kv_cache::KvCache;
use crate::linear::{Linear, LinearStage, ProductAt, QuantLinear};
use crate::simd::{dot, gemm_nt};
use crate::weights::Weights;

/// The two fused requests of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FusedPair {
    /// `a -> a Wo^T` and `x, a -> x W'^T + a (W' Wo)^T` (`W'` the folded `GateUp`).
    AttnGate,
    /// `m -> m Wdown^T` and `h, m -> h W''^T + m (W'' Wdown)^T` (`W''` the next layer's
    /// folded `Qkv`).
    DownQkv,
}

impl FusedPair {
    /// Both pairs in execution order.
    pub const ALL: [FusedPair; 2] = [FusedPair::AttnGate, FusedPair::DownQkv];

    /// `(d_in, d_out)` of the pair's fused matrix: `AttnGate` `d_model -> 2 d_ff`
    /// (`W' Wo`), `DownQkv` `d_ff -> qkv_dim` (`W'' Wdown`).
    pub fn dims(self, c: &Config) -> (usize, usize) {
        match self {
            FusedPair::AttnGate => (c.d_model, 2 * c.d_ff),
            FusedPair::DownQkv => (c.d_ff, c.qkv_dim()),
        }
    }

    /// `(d_in, d_out)` of the pair's stacked matrix ([`stacked_weight`]): the outer
    /// stage's input (`d_model`, the stream) then the inner stage's (`d_model` or `d_ff`).
    pub fn stacked_dims(self, c: &Config) -> (usize, usize) {
        let (d_in, d_out) = self.dims(c);
        (c.d_model + d_in, d_out)
    }

    /// The layer of the pair's outer stage: `layer` for `AttnGate`, the next one for
    /// `DownQkv` (whose outer stage is the next layer's `Qkv`).
    pub fn outer_layer(self, layer: usize) -> usize {
        match self {
            FusedPair::AttnGate => layer,
            FusedPair::DownQkv => layer + 1,
        }
    }

    /// The stages whose matrices multiply into the fused one: `(inner, outer)`, the
    /// fused matrix being `outer_folded(next layer for DownQkv) * inner`.
    pub fn stages(self) -> (LinearStage, LinearStage) {
        match self {
            FusedPair::AttnGate => (LinearStage::AttnOut, LinearStage::GateUp),
            FusedPair::DownQkv => (LinearStage::Down, LinearStage::Qkv),
        }
    }
}

/// The fused matrices of a model of `layers` layers in the order a server holds and
/// sends them: layer 0's `AttnGate`, layer 0's `DownQkv`, layer 1's, ..., the last
/// layer's `AttnGate` (`2 layers - 1` in all; the last layer has no next `Qkv`). The
/// position of `(layer, pair)` is `2 layer + (pair == DownQkv)`.
pub fn fused_order(layers: usize) -> impl Iterator<Item = (usize, FusedPair)> {
    (0..layers)
        .flat_map(|l| FusedPair::ALL.map(|p| (l, p)))
        .filter(move |(l, p)| *p == FusedPair::AttnGate || l + 1 < layers)
}

/// The fused matrix of `layer`'s `pair` (`d_out x d_in` row-major, see
/// [`FusedPair::dims`]), from exactly the dequantized weights with the gains folded:
/// `W' Wo` for `AttnGate`, `W''_{layer+1} Wdown_layer` for `DownQkv`. Each entry is one
/// f32 dot product of length `d_model` (FMA accumulation), far below the `2^-15` of an
/// encrypted product.
///
/// # Errors
/// [`Error::LayerOutOfRange`] (for `DownQkv`, also the last layer: it has no next
/// `Qkv`); [`Error::NotLoaded`] on a client bundle.
pub fn fused_weight(w: &Weights, layer: usize, pair: FusedPair) -> Result<Vec<f32>> {
    let c = w.config();
    let (inner_stage, outer_stage) = pair.stages();
    let outer_layer = pair.outer_layer(layer);
    if outer_layer >= c.n_layers {
        return Err(Error::LayerOutOfRange {
            layer: outer_layer,
            n_layers: c.n_layers,
        });
    }
    let (d_in, d_out) = pair.dims(c);
    let k = c.d_model;
    // outer: d_out x k; inner: k x d_in, transposed here to d_in x k so that every
    // entry is a row-by-row dot product.
    let outer = w.stage_weight_folded(outer_layer, outer_stage)?;
    let inner = w.stage_weight_f32(layer, inner_stage)?;
    let mut inner_t = vec![0.0f32; d_in * k];
    for (r, row) in inner.chunks_exact(d_in).enumerate() {
        for (i, &v) in row.iter().enumerate() {
            inner_t[i * k + r] = v;
        }
    }
    // gemm_nt writes the tile transposed: block of `rows` outer rows -> d_in x rows.
    const ROWS: usize = 64;
    let mut fused = vec![0.0f32; d_out * d_in];
    fused
        .par_chunks_mut(ROWS * d_in)
        .zip(outer.par_chunks(ROWS * k))
        .for_each(|(f, o)| {
            let rows = o.len() / k;
            let mut t = vec![0.0f32; d_in * rows];
            gemm_nt(o, rows, &inner_t, d_in, k, &mut t);
            for (i, f_row) in f.chunks_exact_mut(d_in).enumerate() {
                for (j, v) in f_row.iter_mut().enumerate() {
                    *v = t[j * rows + i];
                }
            }
        });
    Ok(fused)
}

/// A pair's stacked matrix ([`stacked_weight`]) and the power of two its inner input is
/// multiplied by.
#[derive(Debug, Clone, PartialEq)]
pub struct Stacked {
    /// `d_out x (d_model + d_in)` row-major (see [`FusedPair::stacked_dims`]).
    pub rows: Vec<f32>,
    /// The balance `alpha`: the fused half of every row is divided by it and the inner
    /// input multiplied by it ([`stack_rows`]), which leaves the product unchanged.
    pub alpha: f32,
}

/// The stacked matrix of `layer`'s `pair`: row `j` is the folded outer stage's row `j`
/// followed by the fused matrix's row `j` divided by `alpha`, so that one product of
/// `[stream | alpha inner_x]` ([`stack_rows`]) is the pair's unscaled outer output
/// `stream W^T + inner_x (W Winner)^T`. One encrypted product (one input ciphertext, one
/// packed output) then carries what two would.
///
/// Why `alpha`: a coefficient-encoded product's error is about
/// `2^-b ||input|| ||column||` (CKKS rounding at one scale per row and per column), so
/// stacking halves of unequal size costs bits: on SmolLM2 `||W' Wo||` is several times
/// `||W'||` and the stacked product kept 2.5 bits fewer than two products summed. With
/// `alpha = ||W Winner||_F / ||W||_F` (rounded to a power of two, so scaling is exact)
/// both halves of a column weigh alike, and by Cauchy-Schwarz the error
/// `sqrt(||s||^2 + alpha^2 ||x||^2) sqrt(2) ||w_j||` is within `sqrt(2)` of the two
/// products' `(||s|| + alpha ||x||) ||w_j||`, whatever the activations.
///
/// # Errors
/// As [`fused_weight`].
pub fn stacked_weight(w: &Weights, layer: usize, pair: FusedPair) -> Result<Stacked> {
    let c = w.config();
    let (d_in, d_out) = pair.dims(c);
    let outer_layer = pair.outer_layer(layer);
    let fused = fused_weight(w, layer, pair)?;
    let outer = w.stage_weight_folded(outer_layer, pair.stages().1)?;
    let frob = |m: &[f32]| m.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
    let ratio = frob(&fused) / frob(&outer);
    let alpha = if ratio.is_finite() && ratio > 0.0 {
        2f64.powi(ratio.log2().round().clamp(-30.0, 30.0) as i32) as f32
    } else {
        1.0
    };
    let d = c.d_model;
    let mut rows = Vec::with_capacity(d_out * (d + d_in));
    for (o, f) in outer.chunks_exact(d).zip(fused.chunks_exact(d_in)) {
        rows.extend_from_slice(o);
        rows.extend(f.iter().map(|&v| v / alpha));
    }
    Ok(Stacked { rows, alpha })
}

/// The row-wise concatenation `[a_t | alpha b_t]` of `a` (rows of `da`) and `b` (rows of
/// `db`), the input of a stacked product ([`stacked_weight`]); `None` when the row
/// counts differ.
pub fn stack_rows(a: &[f32], da: usize, b: &[f32], db: usize, alpha: f32) -> Option<Vec<f32>> {
    if da == 0
        || db == 0
        || !a.len().is_multiple_of(da)
        || !b.len().is_multiple_of(db)
        || a.len() / da != b.len() / db
    {
        return None;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    for (ra, rb) in a.chunks_exact(da).zip(b.chunks_exact(db)) {
        out.extend_from_slice(ra);
        out.extend(rb.iter().map(|&v| v * alpha));
    }
    Some(out)
}

/// The products of the fused stage pairs (see the module docs). Implementations
/// multiply with gain-folded matrices; [`forward_fused`] uses
/// [`Linear::apply`] only for the first layer's `Qkv` and the LM head.
pub trait FusedLinear: Linear {
    /// Layer `layer`'s [`FusedPair::AttnGate`]: from the attention output `a` and the
    /// layer input `x` (both `n x d_model`) writes `o = a Wo^T` (`n x d_model`) and the
    /// unscaled `gu = x W'^T + a (W' Wo)^T` (`n x 2 d_ff`).
    ///
    /// # Errors
    /// Shape errors and whatever the implementation fails with.
    fn attn_gate(
        &mut self,
        layer: usize,
        a: &[f32],
        x: &[f32],
        o: &mut [f32],
        gu: &mut [f32],
    ) -> Result<()>;

    /// Layer `layer`'s [`FusedPair::DownQkv`]: from `m` (`n x d_ff`) and `h`
    /// (`n x d_model`) writes `down = m Wdown^T` (`n x d_model`) and, when `qkv` is
    /// given (every layer but the last), the next layer's unscaled
    /// `qkv = h W''^T + m (W'' Wdown)^T` (`n x qkv_dim`).
    ///
    /// # Errors
    /// Shape errors and whatever the implementation fails with.
    fn down_qkv(
        &mut self,
        layer: usize,
        m: &[f32],
        h: &[f32],
        down: &mut [f32],
        qkv: Option<&mut [f32]>,
    ) -> Result<()>;
}

/// Every layer's fused matrices, in f32 (SmolLM2: 12.98 MB per layer, 383 MB for the
/// 29 `DownQkv` and 30 `AttnGate` matrices).
#[derive(Debug, Clone)]
pub struct FusedMatrices {
    attn_gate: Vec<Vec<f32>>,
    down_qkv: Vec<Vec<f32>>,
}

impl FusedMatrices {
    /// Builds them from `w` ([`fused_weight`], every layer).
    ///
    /// # Errors
    /// As [`fused_weight`].
    pub fn build(w: &Weights) -> Result<Self> {
        let layers = w.config().n_layers;
        let attn_gate = (0..layers)
            .map(|l| fused_weight(w, l, FusedPair::AttnGate))
            .collect::<Result<_>>()?;
        let down_qkv = (0..layers.saturating_sub(1))
            .map(|l| fused_weight(w, l, FusedPair::DownQkv))
            .collect::<Result<_>>()?;
        Ok(Self {
            attn_gate,
            down_qkv,
        })
    }

    /// `layer`'s fused matrix of `pair` (`None` past the model, and for the last layer's
    /// `DownQkv`).
    pub fn get(&self, layer: usize, pair: FusedPair) -> Option<&[f32]> {
        match pair {
            FusedPair::AttnGate => self.attn_gate.get(layer),
            FusedPair::DownQkv => self.down_qkv.get(layer),
        }
        .map(Vec::as_slice)
    }

    /// Bytes the matrices take (f32).
    pub fn memory_bytes(&self) -> usize {
        self.attn_gate
            .iter()
            .chain(&self.down_qkv)
            .map(|m| m.len() * 4)
            .sum()
    }
}

/// `out += x W^T` for `W` given as rows of length `d_in` (f32 dot products).
fn accumulate_product(w: &[f32], d_in: usize, x: &[f32], out: &mut [f32]) {
    let d_out = w.len() / d_in.max(1);
    for (xr, or) in x.chunks_exact(d_in).zip(out.chunks_exact_mut(d_out)) {
        or.par_iter_mut()
            .zip(w.par_chunks_exact(d_in))
            .for_each(|(o, wr)| *o += dot(xr, wr));
    }
}

/// Plaintext fused products: the unfused halves over the quantized weights
/// ([`QuantLinear`]), the fused matrices in f32.
#[derive(Debug, Clone)]
pub struct FusedQuantLinear<'w> {
    weights: &'w Weights,
    fused: &'w FusedMatrices,
}

impl<'w> FusedQuantLinear<'w> {
    /// Products with `weights`' matrices and their fused ones.
    pub fn new(weights: &'w Weights, fused: &'w FusedMatrices) -> Self {
        Self { weights, fused }
    }

    /// `out = (x ⊙ gain) W^T` with the quantized kernels: the folded stage's product.
    fn folded(&self, at: ProductAt, x: &[f32], out: &mut [f32]) -> Result<()> {
        let mut gained = x.to_vec();
        if let Some(g) = self.weights.stage_gain(at.layer, at.stage)? {
            crate::forward::apply_gain(&mut gained, g);
        }
        QuantLinear::new(self.weights).apply(at, &gained, out)
    }

    fn matrix(&self, layer: usize, pair: FusedPair) -> Result<&[f32]> {
        self.fused.get(layer, pair).ok_or(Error::LayerOutOfRange {
            layer,
            n_layers: self.weights.config().n_layers,
        })
    }
}

impl Linear for FusedQuantLinear<'_> {
    fn apply(&mut self, at: ProductAt, x: &[f32], out: &mut [f32]) -> Result<()> {
        self.folded(at, x, out)
    }

    fn gains_folded(&self) -> bool {
        true
    }
}

impl FusedLinear for FusedQuantLinear<'_> {
    fn attn_gate(
        &mut self,
        layer: usize,
        a: &[f32],
        x: &[f32],
        o: &mut [f32],
        gu: &mut [f32],
    ) -> Result<()> {
        let d = self.weights.config().d_model;
        self.folded(ProductAt::new(layer, LinearStage::AttnOut), a, o)?;
        self.folded(ProductAt::new(layer, LinearStage::GateUp), x, gu)?;
        accumulate_product(self.matrix(layer, FusedPair::AttnGate)?, d, a, gu);
        Ok(())
    }

    fn down_qkv(
        &mut self,
        layer: usize,
        m: &[f32],
        h: &[f32],
        down: &mut [f32],
        qkv: Option<&mut [f32]>,
    ) -> Result<()> {
        let d_ff = self.weights.config().d_ff;
        self.folded(ProductAt::new(layer, LinearStage::Down), m, down)?;
        if let Some(qkv) = qkv {
            self.folded(ProductAt::new(layer + 1, LinearStage::Qkv), h, qkv)?;
            accumulate_product(self.matrix(layer, FusedPair::DownQkv)?, d_ff, m, qkv);
        }
        Ok(())
    }
}

/// Divides every row (width `d`) of `y` by the RMS of the matching row of `x` (width
/// `d_model`), as [`rms_norm`] computes it: the deferred normalization.
pub fn scale_rows_by_inverse_rms(c: &Config, x: &[f32], y: &mut [f32]) {
    let d = c.d_model;
    if d == 0 || x.is_empty() {
        return;
    }
    let width = y.len() / (x.len() / d).max(1);
    if width == 0 {
        return;
    }
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(width)) {
        let ms = xr.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let inv = 1.0 / (ms + c.rms_eps).sqrt();
        for v in yr {
            *v *= inv;
        }
    }
}

/// [`crate::forward`] with two fused requests per layer: runs `tokens` through every
/// layer after what `cache` holds and returns logits. Computes the same function as
/// [`crate::forward()`] up to rounding (the products are regrouped).
///
/// # Errors
/// [`Error::Empty`] for no tokens, [`Error::TokenOutOfRange`], [`Error::ContextFull`],
/// shape errors, and whatever `linear` returns.
pub fn forward_fused(
    w: &Weights,
    tokens: &[u32],
    cache: &mut KvCache,
    linear: &mut dyn FusedLinear,
    logits: Logits,
) -> Result<Vec<f32>> {
    let c = w.config();
    if tokens.is_empty() {
        return Err(Error::Empty { what: "token list" });
    }
    let d = c.d_model;
    let mut x = vec![0.0f32; tokens.len() * d];
    w.embed(tokens, &mut x)?;
    forward_layers_fused(w, 0..c.n_layers, &mut x, cache, linear)?;
    let rows = match logits {
        Logits::Last => &x[x.len() - d..],
        Logits::All => &x[..],
    };
    let mut out = vec![0.0f32; rows.len() / d * c.vocab_size];
    head(w, rows, linear, &mut out)?;
    Ok(out)
}

/// Runs the residual stream `x` (`n x d_model`, the input of layer `layers.start`)
/// through `layers` with two fused requests per layer, in place: the first layer's
/// q|k|v on its own ([`Linear::apply`]), then each layer's [`FusedPair::AttnGate`] and
/// [`FusedPair::DownQkv`], the last layer's `DownQkv` its down product alone (there is
/// no next layer in the range to fuse with: selective mode's release follows it).
///
/// # Errors
/// [`Error::LayerOutOfRange`] past the model, [`Error::ContextFull`], shape errors, and
/// whatever `linear` returns.
pub fn forward_layers_fused(
    w: &Weights,
    layers: std::ops::Range<usize>,
    x: &mut [f32],
    cache: &mut KvCache,
    linear: &mut dyn FusedLinear,
) -> Result<()> {
    let c = w.config();
    if layers.end > c.n_layers {
        return Err(Error::LayerOutOfRange {
            layer: layers.end,
            n_layers: c.n_layers,
        });
    }
    let (d, kv) = (c.d_model, c.kv_dim());
    let n = x.len() / d.max(1);
    if layers.is_empty() || n == 0 {
        return Ok(());
    }
    if x.len() != n * d {
        return Err(Error::Shape {
            what: "fused layers' residual stream (n x d_model)",
            found: x.len(),
            expected: n * d,
        });
    }
    let z = |width: usize| vec![0.0f32; n * width];
    let (mut norm, mut qkv, mut q, mut k, mut v) = (z(d), z(c.qkv_dim()), z(d), z(kv), z(kv));
    let (mut attn, mut o, mut gu, mut mlp, mut down) = (z(d), z(d), z(2 * c.d_ff), z(c.d_ff), z(d));
    let mut next_qkv = z(c.qkv_dim());
    // The first layer's q|k|v on its own (the gain is folded into the matrix).
    rms_norm(x, d, c.rms_eps, &mut norm);
    linear.apply(
        ProductAt::new(layers.start, LinearStage::Qkv),
        &norm,
        &mut qkv,
    )?;
    for l in layers.clone() {
        if let Some(b) = w.qkv_bias(l)? {
            for row in qkv.chunks_exact_mut(b.len()) {
                add_into(row, b);
            }
        }
        for (((row, q), k), v) in qkv
            .chunks_exact(c.qkv_dim())
            .zip(q.chunks_exact_mut(d))
            .zip(k.chunks_exact_mut(kv))
            .zip(v.chunks_exact_mut(kv))
        {
            q.copy_from_slice(&row[..d]);
            k.copy_from_slice(&row[d..d + kv]);
            v.copy_from_slice(&row[d + kv..]);
        }
        let pos0 = cache.layer_len(l);
        rope_for(c, &mut q, d, pos0);
        rope_for(c, &mut k, kv, pos0);
        cache.append(l, &k, &v)?;
        attention(c, &q, cache.keys(l), cache.values(l), pos0, &mut attn)?;
        linear.attn_gate(l, &attn, x, &mut o, &mut gu)?;
        // x becomes h = x + a Wo^T; gate|up gets h's deferred normalization.
        add_into(x, &o);
        scale_rows_by_inverse_rms(c, x, &mut gu);
        silu_mul(&gu, c.d_ff, &mut mlp);
        let last = l + 1 == layers.end;
        let next = if last { None } else { Some(&mut next_qkv[..]) };
        linear.down_qkv(l, &mlp, x, &mut down, next)?;
        add_into(x, &down);
        if !last {
            scale_rows_by_inverse_rms(c, x, &mut next_qkv);
            std::mem::swap(&mut qkv, &mut next_qkv);
        }
    }
    Ok(())
}
