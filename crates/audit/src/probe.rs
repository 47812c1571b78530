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

use crate::candidates::{run_candidates, CandidateStates};
use crate::dense::DenseLinear;
use crate::gemm::matmul_wt;
use crate::prior::top_indices;
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
        let norms = rows
            .chunks_exact(c.d_model)
            .map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt())
            .collect();
        Ok(Self {
            d: c.d_model,
            rows,
            norms,
        })
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
///
/// Position 0 gets its own probe: with nothing to attend to, its state is a fixed
/// function of the token alone and, in deep layers, looks nothing like other positions'
/// (it becomes an attention sink with a few huge coordinates), so a probe trained on
/// running text ranks it poorly. The attacker can make unlimited position-0 samples by
/// running vocabulary tokens through the model ([`ProbeTrainer::add_first_positions`]).
#[derive(Debug, Clone)]
pub struct ProbeTrainer {
    ks: Vec<usize>,
    moments: Vec<Moments>,
    first: Vec<Moments>,
}

impl ProbeTrainer {
    /// A trainer for the layers `ks` of a model with width `d_model`.
    pub fn new(ks: &[usize], d_model: usize) -> Self {
        let m = || ks.iter().map(|_| Moments::new(d_model, d_model)).collect();
        Self {
            ks: ks.to_vec(),
            moments: m(),
            first: m(),
        }
    }

    /// Adds position-0 samples: each of `tokens` alone at position 0, through layers
    /// `0..max K`, in one candidate batch.
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`] if `dense` holds too few layers; model errors.
    pub fn add_first_positions(
        &mut self,
        w: &Weights,
        dense: &mut DenseLinear,
        emb: &EmbeddingTable,
        tokens: &[u32],
    ) -> Result<()> {
        let max_k = self.ks.iter().copied().max().unwrap_or(0);
        let targets: Vec<f32> = tokens
            .iter()
            .flat_map(|&t| emb.row(t).iter().copied())
            .collect();
        let empty = KvCache::new(w.config(), 1);
        let mut out = CandidateStates::default();
        let mut states: Vec<Vec<f32>> = self.ks.iter().map(|_| Vec::new()).collect();
        let ks = &self.ks;
        run_candidates(w, dense, &empty, max_k, tokens, &mut out, &mut |l, h| {
            for (slot, &k) in states.iter_mut().zip(ks) {
                if k == l + 1 {
                    *slot = h.to_vec();
                }
            }
        })?;
        for ((m, s), &k) in self.first.iter_mut().zip(&mut states).zip(ks) {
            if k == 0 {
                *s = targets.clone();
            }
            m.add_rows(s, &targets)?;
        }
        Ok(())
    }

    /// Runs one training document through layers `0..max K` (with the attacker's own
    /// kernels) and adds every position's state at each K, paired with the position's
    /// token embedding as the target.
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`] if `dense` holds too few layers; model errors.
    pub fn add_document(
        &mut self,
        w: &Weights,
        dense: &mut DenseLinear,
        emb: &EmbeddingTable,
        tokens: &[u32],
    ) -> Result<()> {
        let c = w.config();
        let max_k = self.ks.iter().copied().max().unwrap_or(0);
        if max_k > dense.layers() {
            return Err(Error::LayerOutOfRange {
                k: max_k,
                n_layers: dense.layers(),
            });
        }
        if tokens.is_empty() {
            return Ok(());
        }
        let targets: Vec<f32> = tokens
            .iter()
            .flat_map(|&t| emb.row(t).iter().copied())
            .collect();
        let mut x = vec![0.0f32; tokens.len() * c.d_model];
        w.embed(tokens, &mut x)?;
        let mut states: Vec<Vec<f32>> = self
            .ks
            .iter()
            .map(|&k| if k == 0 { x.clone() } else { Vec::new() })
            .collect();
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
    pub fn probe(
        &self,
        k: usize,
        lambda_rel: f64,
        flood_sigma: f64,
        similarity: Similarity,
    ) -> Result<Probe> {
        let m = self
            .ks
            .iter()
            .position(|&x| x == k)
            .and_then(|i| self.moments.get(i))
            .filter(|m| m.rows() > 0)
            .ok_or(Error::NoSamples { k })?;
        let fit = |m: &Moments| -> Result<Probe> {
            let lambda =
                lambda_rel * m.mean_variance_sum() + m.rows() as f64 * flood_sigma * flood_sigma;
            Ok(Probe::from_fit(k, &m.solve(lambda)?, similarity))
        };
        let mut probe = fit(m)?;
        let i = self.ks.iter().position(|&x| x == k).unwrap_or(0);
        if let Some(f) = self.first.get(i).filter(|f| f.rows() > 0) {
            probe.first = Some(Box::new(fit(f)?));
        }
        Ok(probe)
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
    /// The position-0 probe, when trained.
    first: Option<Box<Probe>>,
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
            first: None,
        }
    }

    /// Predicted embeddings for states `h` (`n x d_model`).
    ///
    /// # Errors
    /// [`Error::Shape`] if `h` is not whole rows.
    pub fn predict(&self, h: &[f32]) -> Result<Vec<f32>> {
        let n = h.len() / self.d;
        if h.len() != n * self.d {
            return Err(Error::Shape {
                what: "probe input (n x d_model)",
                expected: n * self.d,
                got: h.len(),
            });
        }
        let centred: Vec<f32> = h
            .chunks_exact(self.d)
            .flat_map(|r| r.iter().zip(&self.mean_x).map(|(a, b)| a - b))
            .collect();
        let mut out = vec![0.0f32; n * self.d];
        matmul_wt(
            &centred,
            n,
            self.d,
            &self.wt,
            self.d,
            &mut out,
            &mut Vec::new(),
        )?;
        for r in out.chunks_exact_mut(self.d) {
            r.iter_mut().zip(&self.mean_y).for_each(|(a, b)| *a += b);
        }
        Ok(out)
    }

    /// For each position of a released sequence `h` (`n x d_model`, row t = position t),
    /// the `top` most similar tokens, best first; position 0 uses the position-0 probe.
    ///
    /// # Errors
    /// [`Error::Shape`] if `h` is not whole rows or the table's width differs.
    pub fn rank(&self, h: &[f32], emb: &EmbeddingTable, top: usize) -> Result<Vec<Vec<u32>>> {
        let mut out = self.rank_rows(h, emb, top)?;
        if let (Some(first), Some(row)) = (&self.first, h.get(..self.d)) {
            if let (Some(slot), Some(r)) = (out.first_mut(), first.rank_rows(row, emb, top)?.pop())
            {
                *slot = r;
            }
        }
        Ok(out)
    }

    /// The probe for position `t` (the position-0 probe at t = 0 when trained).
    pub fn for_position(&self, t: usize) -> &Probe {
        match (&self.first, t) {
            (Some(f), 0) => f,
            _ => self,
        }
    }

    /// [`Probe::rank`] with this probe for every row.
    fn rank_rows(&self, h: &[f32], emb: &EmbeddingTable, top: usize) -> Result<Vec<Vec<u32>>> {
        let pred = self.predict(h)?;
        self.rank_predicted(&pred, emb, top)
    }

    /// For each predicted embedding of `pred` (`n x d_model`), the `top` most similar
    /// tokens, best first.
    ///
    /// # Errors
    /// [`Error::Shape`] if `pred` is not whole rows or the table's width differs.
    pub fn rank_predicted(
        &self,
        pred: &[f32],
        emb: &EmbeddingTable,
        top: usize,
    ) -> Result<Vec<Vec<u32>>> {
        if emb.d != self.d {
            return Err(Error::Shape {
                what: "embedding width",
                expected: self.d,
                got: emb.d,
            });
        }
        let n = pred.len() / self.d;
        let v = emb.vocab();
        let mut scores = vec![0.0f32; n * v];
        matmul_wt(pred, n, self.d, &emb.rows, v, &mut scores, &mut Vec::new())?;
        Ok(scores
            .chunks_exact_mut(v)
            .map(|s| {
                match self.similarity {
                    Similarity::Dot => {}
                    Similarity::Cosine => s
                        .iter_mut()
                        .zip(&emb.norms)
                        .for_each(|(a, nrm)| *a /= nrm.max(1e-12)),
                    Similarity::L2 => s
                        .iter_mut()
                        .zip(&emb.norms)
                        .for_each(|(a, nrm)| *a = 2.0 * *a - nrm * nrm),
                }
                top_indices(s, top)
            })
            .collect())
    }
}
