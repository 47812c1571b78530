//! The attacker's weight products: the model's matrices dequantized once to f32 and
//! multiplied with a cache-blocked GEMM, so that many candidate tokens (or a training
//! document) go through each matrix as one matrix-matrix product.
//!
//! It plugs into the model's forward pass as a [`Linear`]; the values are exactly the
//! dequantized weights the model's own kernels use, so only the f32 summation order
//! differs (relative differences around 1e-6, see the inversion tolerance).

use selene_model::{Linear, LinearStage, ProductAt, Weights};

use crate::gemm::matmul_wt;
use crate::Result;

/// The four per-layer stages, in the order they are stored.
const STAGES: [LinearStage; 4] = [
    LinearStage::Qkv,
    LinearStage::AttnOut,
    LinearStage::GateUp,
    LinearStage::Down,
];

/// Dequantized f32 matrices of the first `layers` layers and a GEMM scratch buffer.
#[derive(Debug)]
pub struct DenseLinear {
    d_model: usize,
    /// `mats[layer][stage]`: `d_out x d_in`, row-major.
    mats: Vec<[Vec<f32>; 4]>,
    dims: [(usize, usize); 4],
    scratch: Vec<f32>,
}

impl DenseLinear {
    /// Dequantizes the matrices of layers `0..layers` (about 14 MB a layer).
    ///
    /// # Errors
    /// [`crate::Error::LayerOutOfRange`] if `layers` exceeds the model's depth.
    pub fn new(w: &Weights, layers: usize) -> Result<Self> {
        let c = w.config();
        if layers > c.n_layers {
            return Err(crate::Error::LayerOutOfRange {
                k: layers,
                n_layers: c.n_layers,
            });
        }
        let mut mats = Vec::with_capacity(layers);
        for l in 0..layers {
            mats.push([
                w.stage_weight_f32(l, STAGES[0])?,
                w.stage_weight_f32(l, STAGES[1])?,
                w.stage_weight_f32(l, STAGES[2])?,
                w.stage_weight_f32(l, STAGES[3])?,
            ]);
        }
        Ok(Self {
            d_model: c.d_model,
            mats,
            dims: STAGES.map(|s| s.dims(c)),
            scratch: Vec::new(),
        })
    }

    /// Number of layers held.
    pub fn layers(&self) -> usize {
        self.mats.len()
    }

    /// Width of the residual stream.
    pub fn d_model(&self) -> usize {
        self.d_model
    }
}

impl Linear for DenseLinear {
    fn apply(&mut self, at: ProductAt, x: &[f32], out: &mut [f32]) -> selene_model::Result<()> {
        let ProductAt { layer, stage } = at;
        let s = STAGES
            .iter()
            .position(|&t| t == stage)
            .ok_or(selene_model::Error::Shape {
                what: "DenseLinear holds layer stages only, not the LM head",
                found: 0,
                expected: 1,
            })?;
        let mats = self
            .mats
            .get(layer)
            .ok_or(selene_model::Error::LayerOutOfRange {
                layer,
                n_layers: self.mats.len(),
            })?;
        let (d_in, d_out) = self.dims[s];
        let n = x.len() / d_in;
        if x.len() != n * d_in || out.len() != n * d_out {
            return Err(selene_model::Error::Shape {
                what: "DenseLinear input / output (n x d_in, n x d_out)",
                found: out.len(),
                expected: n * d_out,
            });
        }
        // Extents were checked just above, so the GEMM door cannot refuse them.
        matmul_wt(x, n, d_in, &mats[s], d_out, out, &mut self.scratch).map_err(|_| {
            selene_model::Error::Shape {
                what: "DenseLinear GEMM",
                found: x.len(),
                expected: n * d_in,
            }
        })
    }
}
