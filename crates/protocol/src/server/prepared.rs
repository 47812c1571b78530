//! The server's weights, encoded once for encrypted products.

use std::sync::Arc;

use selene_ckks::Parameters;
use selene_linalg::{Layout, Link, MatrixShape, Method, PreparedMatrix};
use selene_model::{LinearStage, Weights};

use crate::codec::stage::stage_index;
use crate::error::{Error, Result};

/// Every layer's four matrices with the RMSNorm gains folded in (the client sends
/// un-gained norms), encoded in NTT form for the coefficient method.
#[derive(Debug)]
pub struct PreparedModel {
    params: Arc<Parameters>,
    layers: Vec<[PreparedMatrix; 4]>,
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
        let mut out = Vec::with_capacity(layers);
        for l in 0..layers {
            let mut prep = |stage: LinearStage| -> Result<PreparedMatrix> {
                let (d_in, d_out) = stage.dims(c);
                let rows = w.stage_weight_folded(l, stage)?;
                let m = PreparedMatrix::for_link(
                    params,
                    &rows,
                    MatrixShape::new(d_in, d_out),
                    Method::Coefficients,
                    1,
                    link,
                )?;
                on_matrix();
                Ok(m)
            };
            out.push([
                prep(LinearStage::Qkv)?,
                prep(LinearStage::AttnOut)?,
                prep(LinearStage::GateUp)?,
                prep(LinearStage::Down)?,
            ]);
        }
        Ok(Self {
            params: params.clone(),
            layers: out,
        })
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
        self.layers
            .iter()
            .map(|m| m.each_ref().map(|p| p.layout().clone()))
            .collect()
    }

    /// Bytes of encoded weights held.
    pub fn memory_bytes(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|m| m.iter())
            .map(PreparedMatrix::memory_bytes)
            .sum()
    }
}
