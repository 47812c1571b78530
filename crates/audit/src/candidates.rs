//! Batched evaluation of candidate tokens at one position on top of a recovered prefix.
//!
//! The model's forward pass treats a batch of rows as consecutive positions (causal
//! prefill). The attacker needs the opposite: `n` *alternative* tokens at the same
//! position `t`, each attending to the prefix's cached keys/values and to itself only.
//! This module runs that with the model's public stage functions (RMSNorm, RoPE,
//! softmax, SwiGLU) and one GEMM per weight matrix for the whole batch, which is what
//! makes the exhaustive search affordable: per layer the weights stream through the
//! cache once for all candidates instead of once per candidate.

use rayon::prelude::*;
use selene_model::forward::{add_into, apply_gain, rms_norm, rope_for, silu_mul, softmax};
use selene_model::simd::dot;
use selene_model::{KvCache, Linear, LinearStage, ProductAt, Weights};

use crate::dense::DenseLinear;
use crate::{Error, Result};

/// Residual states after layer K of a batch of candidates, with each candidate's keys
/// and values per layer so the chosen one can extend the prefix cache.
#[derive(Debug, Default)]
pub struct CandidateStates {
    n: usize,
    d: usize,
    kv: usize,
    /// `n x d_model` residual stream after the last layer run.
    hidden: Vec<f32>,
    /// Per layer: `n x kv_dim` keys (after RoPE) and values.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    // Scratch reused across calls.
    norm: Vec<f32>,
    qkv: Vec<f32>,
    q: Vec<f32>,
    attn: Vec<f32>,
    delta: Vec<f32>,
    gate_up: Vec<f32>,
    mlp: Vec<f32>,
}

impl CandidateStates {
    /// Number of candidates in the last batch.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when the last batch was empty.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The state after layer K of candidate `i`.
    pub fn hidden(&self, i: usize) -> &[f32] {
        self.hidden.get(i * self.d..(i + 1) * self.d).unwrap_or(&[])
    }

    /// Copies candidate `i`'s keys and values of every layer run, to extend the prefix
    /// cache with it later without recomputing it.
    ///
    /// # Errors
    /// [`Error::Shape`] for `i` out of range.
    pub fn kv_of(&self, i: usize) -> Result<CandidateKv> {
        if i >= self.n {
            return Err(Error::Shape {
                what: "candidate index",
                expected: self.n,
                got: i,
            });
        }
        let r = i * self.kv..(i + 1) * self.kv;
        Ok(CandidateKv {
            keys: self.keys.iter().map(|k| k[r.clone()].to_vec()).collect(),
            values: self.values.iter().map(|v| v[r.clone()].to_vec()).collect(),
        })
    }
}

/// One candidate's keys and values for layers `0..K` (one position each).
#[derive(Debug, Clone, Default)]
pub struct CandidateKv {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

impl CandidateKv {
    /// Appends this position to `cache`, layer by layer: the prefix for the next position.
    ///
    /// # Errors
    /// Cache errors from the model (full cache).
    pub fn append_to(&self, cache: &mut KvCache) -> Result<()> {
        for (l, (k, v)) in self.keys.iter().zip(&self.values).enumerate() {
            cache.append(l, k, v)?;
        }
        Ok(())
    }
}

/// Attention of `n` independent queries at the same position: query row `i` sees the
/// `pos` cached positions and then its own key/value (row `i` of `own_k`/`own_v`).
/// Same arithmetic as the model's causal attention, so a candidate that is the true
/// token reproduces the observed state up to GEMM summation order.
#[allow(clippy::too_many_arguments)]
fn independent_attention(
    w: &Weights,
    q: &[f32],
    cache_k: &[f32],
    cache_v: &[f32],
    own_k: &[f32],
    own_v: &[f32],
    out: &mut [f32],
) {
    let c = w.config();
    let (d, hd, kv) = (c.d_model, c.head_dim, c.kv_dim());
    let pos = cache_k.len() / kv;
    let group = c.n_heads / c.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    out.par_chunks_mut(d).enumerate().for_each(|(i, o)| {
        let mut scores = vec![0.0f32; pos + 1];
        let qi = &q[i * d..(i + 1) * d];
        let (ki, vi) = (&own_k[i * kv..(i + 1) * kv], &own_v[i * kv..(i + 1) * kv]);
        for h in 0..c.n_heads {
            let qh = &qi[h * hd..(h + 1) * hd];
            let off = (h / group) * hd;
            for (s, sc) in scores[..pos].iter_mut().enumerate() {
                *sc = dot(qh, &cache_k[s * kv + off..s * kv + off + hd]) * scale;
            }
            scores[pos] = dot(qh, &ki[off..off + hd]) * scale;
            softmax(&mut scores);
            let oh = &mut o[h * hd..(h + 1) * hd];
            oh.fill(0.0);
            for (s, &p) in scores[..pos].iter().enumerate() {
                for (a, v) in oh.iter_mut().zip(&cache_v[s * kv + off..s * kv + off + hd]) {
                    *a += p * v;
                }
            }
            for (a, v) in oh.iter_mut().zip(&vi[off..off + hd]) {
                *a += scores[pos] * v;
            }
        }
    });
}

/// Runs layers `0..k` for each of `tokens` as the next token after the prefix held in
/// `prefix` (all its layers `0..k` must hold the same number of positions), writing the
/// states into `out`. `observer(l, states)` sees the `n x d_model` states after each
/// layer `l` (as in the model's forward pass).
///
/// # Errors
/// [`Error::LayerOutOfRange`] if `k` exceeds the layers `dense` holds; model errors for
/// out-of-range tokens.
pub fn run_candidates(
    w: &Weights,
    dense: &mut DenseLinear,
    prefix: &KvCache,
    k: usize,
    tokens: &[u32],
    out: &mut CandidateStates,
    observer: &mut dyn FnMut(usize, &[f32]),
) -> Result<()> {
    let c = w.config();
    if k > dense.layers() {
        return Err(Error::LayerOutOfRange {
            k,
            n_layers: dense.layers(),
        });
    }
    let (n, d, kv) = (tokens.len(), c.d_model, c.kv_dim());
    let pos = prefix.layer_len(0);
    out.n = n;
    out.d = d;
    out.kv = kv;
    out.hidden.resize(n * d, 0.0);
    w.embed(tokens, &mut out.hidden)?;
    out.keys.resize_with(k, Vec::new);
    out.values.resize_with(k, Vec::new);
    out.keys.truncate(k);
    out.values.truncate(k);
    let z = |v: &mut Vec<f32>, len: usize| {
        v.clear();
        v.resize(len, 0.0);
    };
    z(&mut out.norm, n * d);
    z(&mut out.qkv, n * c.qkv_dim());
    z(&mut out.q, n * d);
    z(&mut out.attn, n * d);
    z(&mut out.delta, n * d);
    z(&mut out.gate_up, n * 2 * c.d_ff);
    z(&mut out.mlp, n * c.d_ff);
    for l in 0..k {
        if prefix.layer_len(l) != pos {
            return Err(Error::Shape {
                what: "prefix cache positions in a layer",
                expected: pos,
                got: prefix.layer_len(l),
            });
        }
        rms_norm(&out.hidden, d, c.rms_eps, &mut out.norm);
        if let Some(g) = w.stage_gain(l, LinearStage::Qkv)? {
            apply_gain(&mut out.norm, g);
        }
        dense.apply(ProductAt::new(l, LinearStage::Qkv), &out.norm, &mut out.qkv)?;
        if let Some(b) = w.qkv_bias(l)? {
            // qwen2's q/k/v biases, added after the product as the model does.
            for row in out.qkv.chunks_exact_mut(b.len()) {
                add_into(row, b);
            }
        }
        let (keys, values) = (&mut out.keys[l], &mut out.values[l]);
        z(keys, n * kv);
        z(values, n * kv);
        for (i, row) in out.qkv.chunks_exact(c.qkv_dim()).enumerate() {
            let q = &mut out.q[i * d..(i + 1) * d];
            q.copy_from_slice(&row[..d]);
            keys[i * kv..(i + 1) * kv].copy_from_slice(&row[d..d + kv]);
            values[i * kv..(i + 1) * kv].copy_from_slice(&row[d + kv..]);
            // Every candidate sits at position `pos`: rotate each row on its own, in
            // the model's RoPE convention (interleaved pairs for llama, halves for qwen2).
            rope_for(c, q, d, pos);
            rope_for(c, &mut keys[i * kv..(i + 1) * kv], kv, pos);
        }
        independent_attention(
            w,
            &out.q,
            prefix.keys(l),
            prefix.values(l),
            keys,
            values,
            &mut out.attn,
        );
        dense.apply(
            ProductAt::new(l, LinearStage::AttnOut),
            &out.attn,
            &mut out.delta,
        )?;
        add_into(&mut out.hidden, &out.delta);
        rms_norm(&out.hidden, d, c.rms_eps, &mut out.norm);
        if let Some(g) = w.stage_gain(l, LinearStage::GateUp)? {
            apply_gain(&mut out.norm, g);
        }
        dense.apply(
            ProductAt::new(l, LinearStage::GateUp),
            &out.norm,
            &mut out.gate_up,
        )?;
        silu_mul(&out.gate_up, c.d_ff, &mut out.mlp);
        dense.apply(
            ProductAt::new(l, LinearStage::Down),
            &out.mlp,
            &mut out.delta,
        )?;
        add_into(&mut out.hidden, &out.delta);
        observer(l, &out.hidden);
    }
    Ok(())
}
