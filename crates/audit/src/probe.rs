//! The learned inverter: ridge regression from a layer-K state to the token embedding
//! space, then a ranking of the whole vocabulary by similarity to the prediction.
//!
//! Predicting an embedding (576 numbers) rather than classifying over 49,152 tokens
//! lets a probe trained on a few thousand tokens rank tokens it never saw.
//!
//! Flooding noise of variance sigma^2 on the inputs is handled in closed form: for
//! `X + N` with i.i.d. noise, `E[(X+N)^T (X+N)] = X^T X + n sigma^2 I`, so the noisy
//! probe is the clean one with `lambda + n sigma^2` (Bishop, Neural Computation 1995,
//! "Training with noise is equivalent to Tikhonov regularization").

use selene_model::{forward_layers, KvCache, Weights};

use crate::dense::DenseLinear;
use crate::gemm::matmul_wt;
use crate::ridge::{Moments, RidgeFit};
use crate::{Error, Result};

/// How candidate tokens are scored against the predicted embedding `p`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Similarity {
    /// `p . e`: favours tokens with large embeddings.
    Dot,
    /// `p . e / |e|`: direction only.
    Cosine,
    /// `-|p - e|^2`: nearest embedding.
    L2,
}

/// The token embedding table in f32 (`vocab x d_model`), with row norms.
#[derive(Debug, Clone)]
pub struct EmbeddingTable {
    d: usize,
    rows: Vec<f32>,
    norms: Vec<f32>,
}

impl EmbeddingTable {
    /// Dequantizes the model's whole embedding table (113 MB for SmolLM2).
    ///
    /// # Errors
    /// Model errors.
    pub fn from_weights(w: &Weights) -> Result<Self> {
        let c = w.config();
        let ids: Vec<u32> = (0..c.vocab_size as u32).collect();
        let mut rows = vec![0.0f32; c.vocab_size * c.d_model];
        w.embed(&ids, &mut rows)?;
        let norms = rows.chunks_exact(c.d_model).map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt()).collect();
        Ok(Self { d: c.d_model, rows, norms })
    }

    /// Number of tokens.
    pub fn vocab(&self) -> usize {
        self.norms.len()
    }

    /// Embedding of token `id`.
    pub fn row(&self, id: u32) -> &[f32] {
        let i = id as usize;
        self.rows.get(i * self.d..(i + 1) * self.d).unwrap_or(&[])
    }
}

/// Accumulates training moments for the probes of several K at once.
#[derive(Debug, Clone)]
pub struct ProbeTrainer {
    ks: Vec<usize>,
    moments: Vec<Moments>,
}

impl ProbeTrainer {
    /// A trainer for the layers `ks` of a model with width `d_model`.
    pub fn new(ks: &[usize], d_model: usize) -> Self {
        Self { ks: ks.to_vec(), moments: ks.iter().map(|_| Moments::new(d_model, d_model)).collect() }
    }

    /// Runs one training document through layers `0..max K` (with the attacker's own
    /// kernels) and adds every position's state at each K, paired with the position's
    /// token embedding as the target.
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`] if `dense` holds too few layers; model errors.
    pub fn add_document(&mut self, w: &Weights, dense: &mut DenseLinear, emb: &EmbeddingTable, tokens: &[u32]) -> Result<()> {
        let c = w.config();
        let max_k = self.ks.iter().copied().max().unwrap_or(0);
        if max_k > dense.layers() {
            return Err(Error::LayerOutOfRange { k: max_k, n_layers: dense.layers() });
        }
        if tokens.is_empty() {
            return Ok(());
        }
        let targets: Vec<f32> = tokens.iter().flat_map(|&t| emb.row(t).iter().copied()).collect();
        let mut x = vec![0.0f32; tokens.len() * c.d_model];
        w.embed(tokens, &mut x)?;
        let mut states: Vec<Vec<f32>> = self.ks.iter().map(|&k| if k == 0 { x.clone() } else { Vec::new() }).collect();
        let mut cache = KvCache::new(c, tokens.len());
        let ks = &self.ks;
        forward_layers(w, 0..max_k, &mut x, &mut cache, dense, &mut |l, h| {
            for (slot, &k) in states.iter_mut().zip(ks) {
                if k == l + 1 {
                    *slot = h.to_vec();
                }
            }
        })?;
        for (m, s) in self.moments.iter_mut().zip(&states) {
            m.add_rows(s, &targets)?;
        }
        Ok(())
    }

    /// Training tokens seen so far.
    pub fn rows(&self) -> usize {
        self.moments.first().map_or(0, Moments::rows)
    }

    /// Fits the probe for layer `k`: ridge with penalty `lambda_rel * tr(C) / d` (C the
    /// centred Gram matrix) plus `n * flood_sigma^2` for the flooding noise.
    ///
    /// # Errors
    /// [`Error::NoSamples`] if `k` was not trained or saw no tokens; solver errors.
    pub fn probe(&self, k: usize, lambda_rel: f64, flood_sigma: f64, similarity: Similarity) -> Result<Probe> {
        let m = self
            .ks
            .iter()
            .position(|&x| x == k)
            .and_then(|i| self.moments.get(i))
            .filter(|m| m.rows() > 0)
            .ok_or(Error::NoSamples { k })?;
        let lambda = lambda_rel * m.mean_variance_sum() + m.rows() as f64 * flood_sigma * flood_sigma;
        Ok(Probe::from_fit(k, &m.solve(lambda)?, similarity))
    }
}

/// A trained probe for one K.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The layer it reads.
    pub k: usize,
    d: usize,
    /// `d_out x d_in` (transposed ridge weights, for the GEMM door).
    wt: Vec<f32>,
    mean_x: Vec<f32>,
    mean_y: Vec<f32>,
    similarity: Similarity,
}

impl Probe {
    fn from_fit(k: usize, fit: &RidgeFit, similarity: Similarity) -> Self {
        let (p, q) = (fit.d_in, fit.d_out);
        let mut wt = vec![0.0f32; p * q];
        for i in 0..p {
            for j in 0..q {
                wt[j * p + i] = fit.weights[i * q + j] as f32;
            }
        }
        Self {
            k,
            d: p,
            wt,
            mean_x: fit.mean_x.iter().map(|&v| v as f32).collect(),
            mean_y: fit.mean_y.iter().map(|&v| v as f32).collect(),
            similarity,
        }
    }

    /// Predicted embeddings for states `h` (`n x d_model`).
    ///
    /// # Errors
    /// [`Error::Shape`] if `h` is not whole rows.
    pub fn predict(&self, h: &[f32]) -> Result<Vec<f32>> {
        let n = h.len() / self.d;
        if h.len() != n * self.d {
            return Err(Error::Shape { what: "probe input (n x d_model)", expected: n * self.d, got: h.len() });
        }
        let centred: Vec<f32> = h.chunks_exact(self.d).flat_map(|r| r.iter().zip(&self.mean_x).map(|(a, b)| a - b)).collect();
        let mut out = vec![0.0f32; n * self.d];
        matmul_wt(&centred, n, self.d, &self.wt, self.d, &mut out, &mut Vec::new())?;
        for r in out.chunks_exact_mut(self.d) {
            r.iter_mut().zip(&self.mean_y).for_each(|(a, b)| *a += b);
        }
        Ok(out)
    }

    /// For each state of `h` (`n x d_model`), the `top` most similar tokens, best first.
    ///
    /// # Errors
    /// [`Error::Shape`] if `h` is not whole rows or the table's width differs.
    pub fn rank(&self, h: &[f32], emb: &EmbeddingTable, top: usize) -> Result<Vec<Vec<u32>>> {
        if emb.d != self.d {
            return Err(Error::Shape { what: "embedding width", expected: self.d, got: emb.d });
        }
        let pred = self.predict(h)?;
        let n = pred.len() / self.d;
        let v = emb.vocab();
        let mut scores = vec![0.0f32; n * v];
        matmul_wt(&pred, n, self.d, &emb.rows, v, &mut scores, &mut Vec::new())?;
        let top = top.min(v);
        Ok(scores
            .chunks_exact_mut(v)
            .map(|s| {
                match self.similarity {
                    Similarity::Dot => {}
                    Similarity::Cosine => s.iter_mut().zip(&emb.norms).for_each(|(a, nrm)| *a /= nrm.max(1e-12)),
                    Similarity::L2 => s.iter_mut().zip(&emb.norms).for_each(|(a, nrm)| *a = 2.0 * *a - nrm * nrm),
                }
                let mut idx: Vec<u32> = (0..v as u32).collect();
                let by_score = |a: &u32, b: &u32| s[*b as usize].total_cmp(&s[*a as usize]);
                if top > 0 && top < v {
                    idx.select_nth_unstable_by(top - 1, by_score);
                    idx.truncate(top);
                }
                idx.sort_unstable_by(by_score);
                idx
            })
            .collect())
    }
}
