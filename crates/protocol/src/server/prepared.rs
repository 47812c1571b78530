//! The server's weights, encoded once for encrypted products.

use std::sync::Arc;

use selene_ckks::Parameters;
use selene_linalg::{Layout, Link, MatrixShape, Method, PreparedMatrix};
use selene_model::fused::{fused_order, stacked_weight};
use selene_model::{Config, FusedPair, LinearStage, Weights};

use crate::codec::stage::{stage_index, ENCRYPTED_STAGES};
use crate::error::{Error, Result};

/// Every layer's four matrices with the RMSNorm gains folded in (the client sends
/// un-gained norms), encoded in NTT form for the coefficient method.
#[derive(Debug)]
pub struct PreparedModel {
    params: Arc<Parameters>,
    layers: Vec<[PreparedMatrix; 4]>,
    /// The stacked fused matrices of fused sessions, in
    /// [`selene_model::fused::fused_order`] (empty unless [`PreparedModel::with_fused`]
    /// built them).
    fused: Vec<PreparedMatrix>,
    /// The clients' link the tilings were chosen for.
    link: Link,
    /// Every layer's four matrices again, tiled for several rows per ciphertext (empty
    /// unless [`PreparedModel::with_batched`] built them): a prompt's pass.
    batched: Vec<[PreparedMatrix; 4]>,
}

impl PreparedModel {
    /// Encodes layers `0..layers` of `w`; `on_matrix` is called after each matrix (for a
    /// progress display).
    ///
    /// # Errors
    /// A layer out of range, or a matrix the parameters cannot hold.
    pub fn new(
        params: &Arc<Parameters>,
        w: &Weights,
        layers: usize,
        on_matrix: &mut dyn FnMut(),
    ) -> Result<Self> {
        Self::for_link(params, w, layers, &Link::LAN, on_matrix)
    }

    /// Like [`PreparedModel::new`], with the tilings of a packing preset chosen for the
    /// clients' `link` (other presets ignore it).
    ///
    /// # Errors
    /// As [`PreparedModel::new`].
    pub fn for_link(
        params: &Arc<Parameters>,
        w: &Weights,
        layers: usize,
        link: &Link,
        on_matrix: &mut dyn FnMut(),
    ) -> Result<Self> {
        let c = w.config();
        if layers > c.n_layers {
            return Err(Error::LayerOutOfRange {
                layer: layers,
                layers: c.n_layers,
            });
        }
        let out = (0..layers)
            .map(|l| prepare_layer(params, w, l, 1, link, on_matrix))
            .collect::<Result<_>>()?;
        Ok(Self {
            params: params.clone(),
            layers: out,
            fused: Vec::new(),
            link: *link,
            batched: Vec::new(),
        })
    }

    /// Adds the stacked fused matrices ([`selene_model::fused::stacked_weight`]) of every
    /// prepared layer, for sessions whose policy says `fused = true`: `[W' | W' Wo]`
    /// (`2 d_model -> 2 d_ff`) per layer and `[W'' | W'' Wdown]` (`d_model + d_ff ->
    /// qkv_dim`) per prepared layer but the last, tiled for the same link as the stages.
    /// A pair's request is then two products: the inner stage's, and the stacked matrix's
    /// of `[stream | inner input]`, whose output is the outer stage's unscaled input. A
    /// model prepared for selective mode's first `K` layers gets `2 K - 1`: its last
    /// layer's down product goes alone, before the release.
    ///
    /// # Errors
    /// A matrix the parameters cannot hold.
    pub fn with_fused(mut self, w: &Weights, on_matrix: &mut dyn FnMut()) -> Result<Self> {
        let c = w.config();
        let layers = self.layers.len();
        let mut fused = Vec::with_capacity(2 * layers);
        for (layer, pair) in fused_order(layers) {
            let (d_in, d_out) = pair.stacked_dims(c);
            let stacked = stacked_weight(w, layer, pair)?;
            fused.push(PreparedMatrix::for_link(
                &self.params,
                &stacked.rows,
                MatrixShape::new(d_in, d_out),
                Method::Coefficients,
                1,
                &self.link,
            )?);
            on_matrix();
        }
        self.fused = fused;
        Ok(self)
    }

    /// Adds every prepared layer's four matrices tiled for `rows` rows (tokens) per
    /// ciphertext, for the link of the stages: a prompt's pass of `n` rows then costs
    /// `ceil(n / rows)` token groups instead of `n`, each of about one row's
    /// multiply-adds, with `rows` times fewer input ciphertexts and packing merges per row
    /// (`selene_linalg::tiling`). The client picks a tiling per request and the server
    /// follows the input's tag ([`PreparedModel::matrix_for`]). `rows = 1` adds nothing.
    ///
    /// # Errors
    /// As [`PreparedModel::new`]; `rows` above the ring degree.
    pub fn with_batched(
        mut self,
        w: &Weights,
        rows: usize,
        on_matrix: &mut dyn FnMut(),
    ) -> Result<Self> {
        if rows <= 1 {
            return Ok(self);
        }
        let batched = (0..self.layers.len())
            .map(|l| prepare_layer(&self.params, w, l, rows, &self.link, on_matrix))
            .collect::<Result<_>>()?;
        self.batched = batched;
        Ok(self)
    }

    /// The public layouts of the batched matrices, per layer and stage (empty unless
    /// [`PreparedModel::with_batched`] built them).
    pub fn batched_layouts(&self) -> Vec<[Layout; 4]> {
        layouts_of(&self.batched)
    }

    /// The prepared matrix of `layer`'s `stage` in the tiling `tag` names: the batched
    /// one when its tag is `tag`, else the stage's own (whose tag the product then
    /// checks).
    ///
    /// # Errors
    /// As [`PreparedModel::matrix`].
    pub fn matrix_for(
        &self,
        layer: usize,
        stage: LinearStage,
        tag: (usize, usize, usize),
    ) -> Result<&PreparedMatrix> {
        let i = stage_index(stage)?;
        if let Some(m) = self.batched.get(layer).and_then(|m| m.get(i)) {
            if m.layout().tag() == tag {
                return Ok(m);
            }
        }
        self.matrix(layer, stage)
    }

    /// True when the fused matrices are prepared.
    pub fn has_fused(&self) -> bool {
        !self.fused.is_empty()
    }

    /// The prepared fused matrix of `layer`'s `pair`.
    ///
    /// # Errors
    /// Not prepared, or a layer out of range (the last layer has no `DownQkv`).
    pub fn fused_matrix(&self, layer: usize, pair: FusedPair) -> Result<&PreparedMatrix> {
        let at = 2 * layer + usize::from(pair == FusedPair::DownQkv);
        let last = 2 * self.layers.len().saturating_sub(1);
        self.fused
            .get(at)
            .filter(|_| at <= last)
            .ok_or(Error::LayerOutOfRange {
                layer,
                layers: self.fused.len().div_ceil(2),
            })
    }

    /// The public layouts of the fused matrices, in [`selene_model::fused::fused_order`].
    pub fn fused_layouts(&self) -> Vec<Layout> {
        self.fused.iter().map(|m| m.layout().clone()).collect()
    }

    /// How many fused matrices a session encrypting `layers` layers uses: the first
    /// `2 layers - 1` in [`selene_model::fused::fused_order`] (its last layer's down
    /// product goes alone).
    pub fn fused_count(layers: usize) -> usize {
        fused_order(layers).count()
    }

    /// Bytes of encoded fused matrices held (part of [`PreparedModel::memory_bytes`]).
    pub fn fused_memory_bytes(&self) -> usize {
        self.fused.iter().map(PreparedMatrix::memory_bytes).sum()
    }

    /// The CKKS parameters the matrices are encoded for.
    pub fn params(&self) -> &Arc<Parameters> {
        &self.params
    }

    /// Number of prepared layers.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// The prepared matrix of `layer`'s `stage`.
    ///
    /// # Errors
    /// A layer out of range or a stage that is not encrypted.
    pub fn matrix(&self, layer: usize, stage: LinearStage) -> Result<&PreparedMatrix> {
        let i = stage_index(stage)?;
        let m = self.layers.get(layer).ok_or(Error::LayerOutOfRange {
            layer,
            layers: self.layers.len(),
        })?;
        m.get(i).ok_or(Error::NotEncrypted { stage })
    }

    /// The public layouts, per layer and stage, that the client encrypts for.
    pub fn layouts(&self) -> Vec<[Layout; 4]> {
        layouts_of(&self.layers)
    }

    /// Bytes of encoded weights held, fused and batched matrices included.
    pub fn memory_bytes(&self) -> usize {
        self.layers
            .iter()
            .chain(&self.batched)
            .flatten()
            .map(PreparedMatrix::memory_bytes)
            .sum::<usize>()
            + self.fused_memory_bytes()
    }
}

/// Bytes a [`PreparedModel`] will hold, by part, computed from the tilings before any
/// encoding ([`PreparedModel::estimate`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncodedBytes {
    /// The stages of every prepared layer.
    pub stages: usize,
    /// The stages again for several rows per ciphertext ([`PreparedModel::with_batched`]).
    pub batched: usize,
    /// The stacked fused matrices ([`PreparedModel::with_fused`]).
    pub fused: usize,
}

impl EncodedBytes {
    /// All parts.
    pub fn total(&self) -> usize {
        self.stages + self.batched + self.fused
    }
}

impl PreparedModel {
    /// What [`PreparedModel::for_link`] with `layers` layers, then
    /// [`PreparedModel::with_batched`] with `rows` (0 or 1: none) and, when `fused`,
    /// [`PreparedModel::with_fused`], will hold ([`PreparedModel::memory_bytes`]), from
    /// the model's shapes and the tilings alone: a server checks it against its memory
    /// before spending minutes on an encoding that cannot fit.
    ///
    /// # Errors
    /// As [`PreparedModel::for_link`] for a layer count or parameters that cannot work.
    pub fn estimate(
        params: &Arc<Parameters>,
        c: &Config,
        layers: usize,
        link: &Link,
        rows: usize,
        fused: bool,
    ) -> Result<EncodedBytes> {
        if layers > c.n_layers {
            return Err(Error::LayerOutOfRange {
                layer: layers,
                layers: c.n_layers,
            });
        }
        let bytes = |(d_in, d_out): (usize, usize), n_b: usize| {
            PreparedMatrix::estimated_bytes(params, MatrixShape::new(d_in, d_out), n_b, link)
        };
        let layer = |n_b: usize| -> Result<usize> {
            ENCRYPTED_STAGES
                .iter()
                .map(|s| Ok(bytes(s.dims(c), n_b)?))
                .sum()
        };
        let batched = if rows > 1 { layers * layer(rows)? } else { 0 };
        let fused = if fused {
            fused_order(layers)
                .map(|(_, pair)| Ok(bytes(pair.stacked_dims(c), 1)?))
                .sum::<Result<usize>>()?
        } else {
            0
        };
        Ok(EncodedBytes {
            stages: layers * layer(1)?,
            batched,
            fused,
        })
    }
}

/// Layer `l`'s four gain-folded stage matrices of `w`, tiled for `rows` rows per
/// ciphertext and `link`; `on_matrix` after each.
fn prepare_layer(
    params: &Arc<Parameters>,
    w: &Weights,
    l: usize,
    rows: usize,
    link: &Link,
    on_matrix: &mut dyn FnMut(),
) -> Result<[PreparedMatrix; 4]> {
    let c = w.config();
    let mut prep = |stage: LinearStage| -> Result<PreparedMatrix> {
        let (d_in, d_out) = stage.dims(c);
        let m = PreparedMatrix::for_link(
            params,
            &w.stage_weight_folded(l, stage)?,
            MatrixShape::new(d_in, d_out),
            Method::Coefficients,
            rows,
            link,
        )?;
        on_matrix();
        Ok(m)
    };
    Ok([
        prep(LinearStage::Qkv)?,
        prep(LinearStage::AttnOut)?,
        prep(LinearStage::GateUp)?,
        prep(LinearStage::Down)?,
    ])
}

/// The public layouts of four matrices per layer.
fn layouts_of(layers: &[[PreparedMatrix; 4]]) -> Vec<[Layout; 4]> {
    layers
        .iter()
        .map(|m| m.each_ref().map(|p| p.layout().clone()))
        .collect()
}
