//! The f32 forward pass, stage by stage on plain slices.
//!
//! Activations are row-major `n x width` (one token per row). One layer is
//! ```text
//! n1 = rms_norm(x) [* attn_norm]      q|k|v = Qkv(n1)     rope(q), rope(k) -> cache
//! a  = attention(q, cached k, v)      x += AttnOut(a)
//! n2 = rms_norm(x) [* ffn_norm]       g|u = GateUp(n2)    x += Down(silu(g) * u)
//! ```
//! and the head is `LmHead(rms_norm(x) [* output_norm])`. The bracketed gains are
//! skipped when the [`Linear`] multiplies with gain-folded matrices. Every weight
//! product goes through the caller's [`Linear`]; nothing here reads a file.

use std::ops::Range;

use rayon::prelude::*;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::linear::{Linear, LinearStage, ProductAt};
use crate::simd::dot;
use crate::weights::Weights;

/// Which positions' logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (`vocab_size` values): generation.
    Last,
    /// Every token's (`n x vocab_size`): perplexity.
    All,
}

/// Per-row RMS normalization without gain: `out = x / sqrt(mean(x^2) + eps)` over rows of
/// width `d` (Zhang and Sennrich, NeurIPS 2019, eq. 4, gain applied separately).
pub fn rms_norm(x: &[f32], d: usize, eps: f32, out: &mut [f32]) {
    if d == 0 {
        return;
    }
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ms = xr.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for (o, v) in or.iter_mut().zip(xr) {
            *o = v * inv;
        }
    }
}

/// Multiplies every row of `x` elementwise by `gain` (the RMSNorm weight).
pub fn apply_gain(x: &mut [f32], gain: &[f32]) {
    if gain.is_empty() {
        return;
    }
    for row in x.chunks_exact_mut(gain.len()) {
        for (v, g) in row.iter_mut().zip(gain) {
            *v *= g;
        }
    }
}

/// Rotary position embedding in place, llama.cpp's convention: for rows of `width`
/// (tokens at positions `pos0, pos0 + 1, ...`) made of heads of `head_dim`, the pair
/// `(2i, 2i+1)` of each head turns by `pos * theta^(-2i / head_dim)` (Su et al.,
/// RoFormer, 2021, eq. 34). GGUF permutes the q/k rows so that this equals Hugging
/// Face's half-split rotation of the unpermuted rows.
pub fn rope(x: &mut [f32], width: usize, head_dim: usize, pos0: usize, theta: f32) {
    if width == 0 || head_dim < 2 {
        return;
    }
    let half = head_dim / 2;
    let inv_freq: Vec<f64> = (0..half)
        .map(|i| f64::from(theta).powf(-2.0 * i as f64 / head_dim as f64))
        .collect();
    let mut cs = vec![(0.0f32, 0.0f32); half];
    for (t, row) in x.chunks_exact_mut(width).enumerate() {
        let pos = (pos0 + t) as f64;
        for (c, f) in cs.iter_mut().zip(&inv_freq) {
            let (sin, cos) = (pos * f).sin_cos();
            *c = (cos as f32, sin as f32);
        }
        for head in row.chunks_exact_mut(head_dim) {
            for (pair, &(cos, sin)) in head.chunks_exact_mut(2).zip(&cs) {
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * cos - b * sin;
                pair[1] = a * sin + b * cos;
            }
        }
    }
}

/// Rotary position embedding in place, NEOX style (Hugging Face's `rotate_half`, used
/// by qwen2): within each head, element `i` and element `i + head_dim / 2` form the
/// pair that turns by `pos * theta^(-2i / head_dim)`. Same frequencies as [`rope`];
/// only the pairing differs.
pub fn rope_neox(x: &mut [f32], width: usize, head_dim: usize, pos0: usize, theta: f32) {
    if width == 0 || head_dim < 2 {
        return;
    }
    let half = head_dim / 2;
    let inv_freq: Vec<f64> = (0..half)
        .map(|i| f64::from(theta).powf(-2.0 * i as f64 / head_dim as f64))
        .collect();
    let mut cs = vec![(0.0f32, 0.0f32); half];
    for (t, row) in x.chunks_exact_mut(width).enumerate() {
        let pos = (pos0 + t) as f64;
        for (c, f) in cs.iter_mut().zip(&inv_freq) {
            let (sin, cos) = (pos * f).sin_cos();
            *c = (cos as f32, sin as f32);
        }
        for head in row.chunks_exact_mut(head_dim) {
            let (lo, hi) = head.split_at_mut(half);
            for ((a, b), &(cos, sin)) in lo.iter_mut().zip(hi.iter_mut()).zip(&cs) {
                let (x0, x1) = (*a, *b);
                *a = x0 * cos - x1 * sin;
                *b = x0 * sin + x1 * cos;
            }
        }
    }
}

/// RoPE in the model's convention: [`rope_neox`] for qwen2, [`rope`] for llama.
pub fn rope_for(c: &Config, x: &mut [f32], width: usize, pos0: usize) {
    if c.arch.rope_neox() {
        rope_neox(x, width, c.head_dim, pos0, c.rope_theta);
    } else {
        rope(x, width, c.head_dim, pos0, c.rope_theta);
    }
}

/// Causal grouped-query attention for `n` new tokens at positions `pos0..pos0 + n`.
///
/// `q` is `n x (n_heads * head_dim)`; `keys`/`values` hold every cached position
/// `0..pos0 + n` (`positions x kv_dim`, after RoPE). Query head `h` attends with
/// key/value head `h / (n_heads / n_kv_heads)`. Writes `n x d_model` into `out`.
///
/// # Errors
/// [`Error::Shape`] when the cache holds fewer than `pos0 + n` positions or a slice is
/// mis-sized.
pub fn attention(
    c: &Config,
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    pos0: usize,
    out: &mut [f32],
) -> Result<()> {
    let (d, hd, kv) = (c.d_model, c.head_dim, c.kv_dim());
    let n = q.len() / d;
    let shape = |what, found, expected| {
        Err(Error::Shape {
            what,
            found,
            expected,
        })
    };
    if q.len() != n * d || out.len() != n * d {
        return shape("attention q / out (n x d_model)", out.len(), q.len());
    }
    if keys.len() < (pos0 + n) * kv || values.len() != keys.len() {
        return shape(
            "attention cache (positions x kv_dim)",
            keys.len(),
            (pos0 + n) * kv,
        );
    }
    let group = c.n_heads / c.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let one_token = |t: usize, o: &mut [f32]| {
        let visible = pos0 + t + 1;
        let mut scores = vec![0.0f32; visible];
        for h in 0..c.n_heads {
            let qh = &q[t * d + h * hd..t * d + (h + 1) * hd];
            let kvh = (h / group) * hd;
            for (s, sc) in scores.iter_mut().enumerate() {
                *sc = dot(qh, &keys[s * kv + kvh..s * kv + kvh + hd]) * scale;
            }
            softmax(&mut scores);
            let oh = &mut o[h * hd..(h + 1) * hd];
            oh.fill(0.0);
            for (s, &p) in scores.iter().enumerate() {
                for (a, v) in oh.iter_mut().zip(&values[s * kv + kvh..s * kv + kvh + hd]) {
                    *a += p * v;
                }
            }
        }
    };
    if n == 1 {
        one_token(0, out);
    } else {
        out.par_chunks_mut(d)
            .enumerate()
            .for_each(|(t, o)| one_token(t, o));
    }
    Ok(())
}

/// In-place softmax (max-subtracted for range).
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// SwiGLU's elementwise part (Shazeer, 2020): `out = silu(gate) * up` for rows of
/// `gate_up = gate | up` (`n x 2 d_ff`), `out` is `n x d_ff`.
pub fn silu_mul(gate_up: &[f32], d_ff: usize, out: &mut [f32]) {
    if d_ff == 0 {
        return;
    }
    for (gu, o) in gate_up
        .chunks_exact(2 * d_ff)
        .zip(out.chunks_exact_mut(d_ff))
    {
        let (g, u) = gu.split_at(d_ff);
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            *o = g / (1.0 + (-g).exp()) * u;
        }
    }
}

/// Residual connection: `x += y`.
pub fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Runs `layers` of the model on the residual stream `x` (`n x d_model`, tokens at
/// positions `cache.layer_len(l)..` in each layer), appending their keys and values to
/// `cache`, and calls `observer(l, x)` with the residual stream after each layer `l`.
///
/// # Errors
/// Shape errors, [`Error::LayerOutOfRange`], [`Error::ContextFull`], and whatever the
/// `linear` implementation returns.
pub fn forward_layers(
    w: &Weights,
    layers: Range<usize>,
    x: &mut [f32],
    cache: &mut KvCache,
    linear: &mut dyn Linear,
    observer: &mut dyn FnMut(usize, &[f32]),
) -> Result<()> {
    let c = w.config();
    if !x.len().is_multiple_of(c.d_model) {
        return Err(Error::Shape {
            what: "residual stream (n x d_model)",
            found: x.len(),
            expected: x.len().next_multiple_of(c.d_model),
        });
    }
    if layers.end > c.n_layers {
        return Err(Error::LayerOutOfRange {
            layer: layers.end - 1,
            n_layers: c.n_layers,
        });
    }
    let n = x.len() / c.d_model;
    let mut s = Scratch::new(c, n);
    for l in layers {
        layer_forward(w, l, x, cache, linear, &mut s)?;
        observer(l, x);
    }
    Ok(())
}

/// Buffers for one layer's intermediate values, reused across layers.
struct Scratch {
    norm: Vec<f32>,
    qkv: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    delta: Vec<f32>,
    gate_up: Vec<f32>,
    mlp: Vec<f32>,
}

impl Scratch {
    fn new(c: &Config, n: usize) -> Scratch {
        let z = |w: usize| vec![0.0f32; n * w];
        Scratch {
            norm: z(c.d_model),
            qkv: z(c.qkv_dim()),
            q: z(c.d_model),
            k: z(c.kv_dim()),
            v: z(c.kv_dim()),
            attn: z(c.d_model),
            delta: z(c.d_model),
            gate_up: z(2 * c.d_ff),
            mlp: z(c.d_ff),
        }
    }
}

/// The normalized input of a stage: `rms_norm(x)`, times the gain unless folded.
fn normed_input(c: &Config, x: &[f32], gain: Option<&[f32]>, folded: bool, out: &mut [f32]) {
    rms_norm(x, c.d_model, c.rms_eps, out);
    if let (Some(g), false) = (gain, folded) {
        apply_gain(out, g);
    }
}

fn layer_forward(
    w: &Weights,
    l: usize,
    x: &mut [f32],
    cache: &mut KvCache,
    linear: &mut dyn Linear,
    s: &mut Scratch,
) -> Result<()> {
    let c = w.config();
    let (d, kv) = (c.d_model, c.kv_dim());
    let folded = linear.gains_folded();
    normed_input(
        c,
        x,
        w.stage_gain(l, LinearStage::Qkv)?,
        folded,
        &mut s.norm,
    );
    linear.apply(ProductAt::new(l, LinearStage::Qkv), &s.norm, &mut s.qkv)?;
    if let Some(b) = w.qkv_bias(l)? {
        // qwen2's q/k/v biases: added here, after the (possibly encrypted) product.
        for row in s.qkv.chunks_exact_mut(b.len()) {
            add_into(row, b);
        }
    }
    for (((row, q), k), v) in s
        .qkv
        .chunks_exact(c.qkv_dim())
        .zip(s.q.chunks_exact_mut(d))
        .zip(s.k.chunks_exact_mut(kv))
        .zip(s.v.chunks_exact_mut(kv))
    {
        q.copy_from_slice(&row[..d]);
        k.copy_from_slice(&row[d..d + kv]);
        v.copy_from_slice(&row[d + kv..]);
    }
    let pos0 = cache.layer_len(l);
    rope_for(c, &mut s.q, d, pos0);
    rope_for(c, &mut s.k, kv, pos0);
    cache.append(l, &s.k, &s.v)?;
    attention(c, &s.q, cache.keys(l), cache.values(l), pos0, &mut s.attn)?;
    linear.apply(
        ProductAt::new(l, LinearStage::AttnOut),
        &s.attn,
        &mut s.delta,
    )?;
    add_into(x, &s.delta);
    normed_input(
        c,
        x,
        w.stage_gain(l, LinearStage::GateUp)?,
        folded,
        &mut s.norm,
    );
    linear.apply(
        ProductAt::new(l, LinearStage::GateUp),
        &s.norm,
        &mut s.gate_up,
    )?;
    silu_mul(&s.gate_up, c.d_ff, &mut s.mlp);
    linear.apply(ProductAt::new(l, LinearStage::Down), &s.mlp, &mut s.delta)?;
    add_into(x, &s.delta);
    Ok(())
}

/// Final RMSNorm and LM head: `x` (`n x d_model`) to `out` (`n x vocab_size`).
///
/// # Errors
/// Shape errors and whatever the `linear` implementation returns.
pub fn head(w: &Weights, x: &[f32], linear: &mut dyn Linear, out: &mut [f32]) -> Result<()> {
    let c = w.config();
    let mut norm = vec![0.0f32; x.len()];
    let folded = linear.gains_folded();
    normed_input(c, x, Some(w.output_norm()), folded, &mut norm);
    linear.apply(ProductAt::new(c.n_layers, LinearStage::LmHead), &norm, out)
}

/// Runs `tokens` through every layer after what `cache` holds and returns logits.
///
/// # Errors
/// [`Error::Empty`] for no tokens, [`Error::TokenOutOfRange`], [`Error::ContextFull`],
/// and whatever the `linear` implementation returns.
pub fn forward(
    w: &Weights,
    tokens: &[u32],
    cache: &mut KvCache,
    linear: &mut dyn Linear,
    logits: Logits,
) -> Result<Vec<f32>> {
    forward_observed(w, tokens, cache, linear, logits, &mut |_, _| {})
}

/// [`forward`], calling `observer(layer, residual)` after each layer with the residual
/// stream (`n x d_model`): what the leakage audit inspects.
///
/// # Errors
/// As [`forward`].
pub fn forward_observed(
    w: &Weights,
    tokens: &[u32],
    cache: &mut KvCache,
    linear: &mut dyn Linear,
    logits: Logits,
    observer: &mut dyn FnMut(usize, &[f32]),
) -> Result<Vec<f32>> {
    let c = w.config();
    if tokens.is_empty() {
        return Err(Error::Empty { what: "token list" });
    }
    let mut x = vec![0.0f32; tokens.len() * c.d_model];
    w.embed(tokens, &mut x)?;
    forward_layers(w, 0..c.n_layers, &mut x, cache, linear, observer)?;
    let rows = match logits {
        Logits::Last => &x[x.len() - c.d_model..],
        Logits::All => &x[..],
    };
    let mut out = vec![0.0f32; rows.len() / c.d_model * c.vocab_size];
    head(w, rows, linear, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::dot_scalar;

    #[test]
    fn rope_preserves_norms_and_depends_only_on_relative_position() {
        let q: Vec<f32> = (0..128)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 3.0)
            .collect();
        let k: Vec<f32> = (0..128)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 2.0)
            .collect();
        let at = |v: &[f32], pos: usize| {
            let mut r = v.to_vec();
            rope(&mut r, 128, 64, pos, 100_000.0);
            r
        };
        let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!((norm(&at(&q, 37)) - norm(&q)).abs() < 1e-4);
        // <R(m) q, R(n) k> = <R(m - n) q, k>, head by head.
        let dots = |a: &[f32], b: &[f32]| -> Vec<f32> {
            a.chunks(64)
                .zip(b.chunks(64))
                .map(|(x, y)| dot_scalar(x, y))
                .collect()
        };
        let d1 = dots(&at(&q, 9), &at(&k, 4));
        let d2 = dots(&at(&q, 105), &at(&k, 100));
        for (a, b) in d1.iter().zip(&d2) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
        // Position 0 is the identity; pair (0, 1) turns by exactly pos radians.
        assert_eq!(at(&q, 0), q);
        let r = at(&q, 1);
        let (c, s) = (1f32.cos(), 1f32.sin());
        assert!((r[0] - (q[0] * c - q[1] * s)).abs() < 1e-6);
    }

    #[test]
    fn neox_rope_is_the_interleaved_rope_of_the_permuted_head() {
        // Moving element i of the first half to 2i and of the second half to 2i + 1
        // turns the NEOX rotation into the adjacent-pair one.
        let hd = 8;
        let x: Vec<f32> = (0..2 * hd).map(|i| (i as f32 * 0.37).sin()).collect();
        let permute = |v: &[f32]| -> Vec<f32> {
            v.chunks(hd)
                .flat_map(|h| (0..hd / 2).flat_map(move |i| [h[i], h[i + hd / 2]]))
                .collect()
        };
        for pos in [0, 1, 5, 300] {
            let mut a = x.clone();
            rope_neox(&mut a, 2 * hd, hd, pos, 1e6);
            let mut b = permute(&x);
            rope(&mut b, 2 * hd, hd, pos, 1e6);
            assert_eq!(permute(&a), b, "pos {pos}");
        }
    }

    #[test]
    fn degenerate_widths_do_not_panic() {
        let mut x = vec![1.0; 4];
        let mut o = vec![0.0; 4];
        rms_norm(&x.clone(), 0, 1e-5, &mut o);
        apply_gain(&mut x, &[]);
        rope(&mut x, 0, 0, 0, 1.0);
        rope_neox(&mut x, 0, 0, 0, 1.0);
        silu_mul(&[1.0; 4], 0, &mut o);
        softmax(&mut []);
        assert_eq!(x, vec![1.0; 4]);
    }
}
