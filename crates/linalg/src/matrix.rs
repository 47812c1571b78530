//! The server's prepared weight matrix and the public layout the client encodes for.

use std::sync::Arc;

use selene_ckks::Parameters;

use crate::coeff::{self, CoeffLayout, CoeffMatrix};
use crate::error::{Error, Result};
use crate::slots::{self, SlotLayout, SlotMatrix};
use crate::{MatrixShape, Method};

/// Public description of a prepared matrix: everything the client needs to encode an
/// input for it and decode its output (shape, method, parameter fingerprint, tiling,
/// column scales). The server hands it to the client once per session.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub(crate) shape: MatrixShape,
    pub(crate) fingerprint: [u8; 8],
    pub(crate) kind: LayoutKind,
}

/// Method-specific part of a [`Layout`].
#[derive(Clone, Debug, PartialEq)]
pub enum LayoutKind {
    /// Coefficient encoding.
    Coefficients(CoeffLayout),
    /// Slot encoding.
    Slots(SlotLayout),
}

impl Layout {
    /// Whether a server can compute this layout's product as its input arrives
    /// ([`crate::Server::stream`]): the coefficient method without merge levels folded
    /// into the weights (whose images are key switches of whole input ciphertexts).
    pub fn streams(&self) -> bool {
        matches!(&self.kind, LayoutKind::Coefficients(l) if l.hoist_levels == 0)
    }

    /// The matrix shape.
    pub fn shape(&self) -> MatrixShape {
        self.shape
    }

    /// The method.
    pub fn method(&self) -> Method {
        match self.kind {
            LayoutKind::Coefficients(_) => Method::Coefficients,
            LayoutKind::Slots(_) => Method::Slots,
        }
    }

    /// The method-specific details.
    pub fn kind(&self) -> &LayoutKind {
        &self.kind
    }

    /// Fingerprint of the CKKS parameters the matrix was prepared for.
    pub fn fingerprint(&self) -> [u8; 8] {
        self.fingerprint
    }

    /// Tokens per ciphertext.
    pub fn tokens_per_ct(&self) -> usize {
        match &self.kind {
            LayoutKind::Coefficients(c) => c.tiling.n_b,
            LayoutKind::Slots(s) => s.tokens_per_ct,
        }
    }

    /// Block sizes identifying the tiling: `(n_b, k_i, k_o)` for coefficients,
    /// `(tokens per ciphertext, g, h)` for slots.
    pub fn tag(&self) -> (usize, usize, usize) {
        match &self.kind {
            LayoutKind::Coefficients(c) => c.tiling.as_tuple(),
            LayoutKind::Slots(s) => (s.tokens_per_ct, s.baby, s.giant),
        }
    }

    /// Galois elements the server needs keys for to pack this layout's outputs (none
    /// unless packed).
    pub fn pack_galois_elements(&self, log_n: u32) -> Vec<u64> {
        match &self.kind {
            LayoutKind::Coefficients(c) if c.pack_levels > 0 => {
                let log_gap = c.tiling.k_i.trailing_zeros();
                let mut g = crate::hoist::image_elements(log_n, log_gap, c.hoist_levels);
                g.remove(0);
                g.extend(selene_ckks::scheme::pack_galois_elements(
                    log_n,
                    log_gap - c.hoist_levels,
                    c.pack_levels - c.hoist_levels,
                ));
                g
            }
            _ => Vec::new(),
        }
    }

    /// Rotation steps the server needs Galois keys for (none for coefficients).
    pub fn rotation_steps(&self) -> Vec<i64> {
        match &self.kind {
            LayoutKind::Coefficients(_) => Vec::new(),
            LayoutKind::Slots(s) => s.rotation_steps(),
        }
    }

    /// Bits of an encoded weight: each column scale is `2^w_bits / ||w_j||`.
    fn weight_bits(&self) -> u32 {
        match &self.kind {
            LayoutKind::Coefficients(c) => c.w_bits,
            LayoutKind::Slots(_) => slots::W_BITS,
        }
    }

    /// The column scales `s_j` the client decodes with.
    pub fn column_scales(&self) -> &[f64] {
        match &self.kind {
            LayoutKind::Coefficients(c) => &c.col_scale,
            LayoutKind::Slots(s) => &s.col_scale,
        }
    }

    /// The column norms `||w_j|| = 2^w_bits / s_j` this layout's scales stand for.
    pub fn column_norms(&self) -> Vec<f64> {
        let full = f64::from(self.weight_bits()).exp2();
        self.column_scales().iter().map(|s| full / s).collect()
    }

    /// The scale the encoder gives a column of norm `norm` (1 for a zero column).
    fn scale_for(&self, norm: f64) -> f64 {
        if norm > 0.0 {
            f64::from(self.weight_bits()).exp2() / norm
        } else {
            1.0
        }
    }

    /// Errors unless every column scale is the one the encoder derives from `norms` (the
    /// client's own column norms of the matrix, `selene_model::ColumnNorms`) to a
    /// relative `1e-9`: the decoding scales are then the model's, not the server's choice.
    ///
    /// # Errors
    /// [`Error::Length`] for a table of another width, [`Error::ScaleMismatch`] naming the
    /// first column that differs.
    pub fn check_column_norms(&self, norms: &[f64]) -> Result<()> {
        let scales = self.column_scales();
        if norms.len() != scales.len() {
            return Err(Error::Length {
                what: "column norms",
                found: norms.len(),
                expected: scales.len(),
            });
        }
        for (column, (&found, &norm)) in scales.iter().zip(norms).enumerate() {
            let expected = self.scale_for(norm);
            let close = (found - expected).abs() <= 1e-9 * expected;
            if !close {
                return Err(Error::ScaleMismatch {
                    column,
                    found,
                    expected,
                });
            }
        }
        Ok(())
    }

    /// Errors unless `params` is the set this layout was made for.
    pub(crate) fn check_params(&self, params: &Parameters) -> Result<()> {
        if params.fingerprint() == self.fingerprint {
            Ok(())
        } else {
            Err(Error::ParamsMismatch {
                expected: self.fingerprint,
                found: params.fingerprint(),
            })
        }
    }
}

/// The method-specific encoded weights.
#[derive(Debug)]
pub(crate) enum Encoded {
    Coefficients(CoeffMatrix),
    Slots(SlotMatrix),
}

/// A weight matrix encoded once by the server (NTT form, kept for its lifetime).
#[derive(Debug)]
pub struct PreparedMatrix {
    pub(crate) params: Arc<Parameters>,
    pub(crate) layout: Layout,
    pub(crate) encoded: Encoded,
}

impl PreparedMatrix {
    /// Encodes `W` given as `d_out` rows of `d_in` weights (row `j` = the weights of output
    /// `j`, the model crate's order; the product is `Y = X W` with `W` = `d_in x d_out`).
    /// `tokens_per_ct` is the coefficient method's `n_b` (server memory grows with it;
    /// 1 keeps it at `8 d_in d_out` bytes); the slot method packs as many tokens as fit.
    ///
    /// # Errors
    /// Empty or mismatched shapes, non-finite weights, parameters too small for the
    /// method, a slot layout that does not fit.
    pub fn new(
        params: &Arc<Parameters>,
        w_rows: &[f32],
        shape: MatrixShape,
        method: Method,
        tokens_per_ct: usize,
    ) -> Result<Self> {
        Self::for_link(
            params,
            w_rows,
            shape,
            method,
            tokens_per_ct,
            &crate::Link::LAN,
        )
    }

    /// Bytes [`PreparedMatrix::for_link`] would hold for a `shape` matrix of the
    /// coefficient method ([`PreparedMatrix::memory_bytes`]), from the tiling alone:
    /// what a server checks against its memory before it encodes a model.
    ///
    /// # Errors
    /// An empty shape, `tokens_per_ct` of 0 or above the ring degree, parameters too
    /// small for the method (as [`PreparedMatrix::new`]).
    pub fn estimated_bytes(
        params: &Arc<Parameters>,
        shape: MatrixShape,
        tokens_per_ct: usize,
        link: &crate::Link,
    ) -> Result<usize> {
        shape.check()?;
        Ok(coeff::encoded_words(params, shape, tokens_per_ct, link)? * std::mem::size_of::<u64>())
    }

    /// Like [`PreparedMatrix::new`], choosing the tiling of a packing preset
    /// ([`crate::LinalgPreset::packs`]) for `link` (other presets ignore it).
    ///
    /// # Errors
    /// As [`PreparedMatrix::new`].
    pub fn for_link(
        params: &Arc<Parameters>,
        w_rows: &[f32],
        shape: MatrixShape,
        method: Method,
        tokens_per_ct: usize,
        link: &crate::Link,
    ) -> Result<Self> {
        shape.check()?;
        crate::check_values("weights", w_rows, shape.d_in * shape.d_out)?;
        let (kind, encoded) = match method {
            Method::Coefficients => {
                let (l, m) = coeff::prepare(params, w_rows, shape, tokens_per_ct, link)?;
                (LayoutKind::Coefficients(l), Encoded::Coefficients(m))
            }
            Method::Slots => {
                let (l, m) = slots::prepare(params, w_rows, shape)?;
                (LayoutKind::Slots(l), Encoded::Slots(m))
            }
        };
        Ok(Self {
            params: params.clone(),
            layout: Layout {
                shape,
                fingerprint: params.fingerprint(),
                kind,
            },
            encoded,
        })
    }

    /// Like [`PreparedMatrix::for_link`] at a given tiling of a packing preset instead
    /// of the one the plan chooses: for measuring tilings (the `sweep` example, which
    /// fits the cost model's constants).
    ///
    /// # Errors
    /// As [`PreparedMatrix::new`]; [`crate::Error::InvalidTiling`] for a preset that does
    /// not pack or a tiling that does not fit ([`crate::tiling::Tiling::packed_fits`]).
    pub fn with_packed_tiling(
        params: &Arc<Parameters>,
        w_rows: &[f32],
        shape: MatrixShape,
        tiling: crate::tiling::Tiling,
    ) -> Result<Self> {
        shape.check()?;
        crate::check_values("weights", w_rows, shape.d_in * shape.d_out)?;
        let (l, m) = coeff::prepare_packed(params, w_rows, shape, tiling)?;
        Ok(Self {
            params: params.clone(),
            layout: Layout {
                shape,
                fingerprint: params.fingerprint(),
                kind: LayoutKind::Coefficients(l),
            },
            encoded: Encoded::Coefficients(m),
        })
    }

    /// The public layout to hand to the client.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Bytes of encoded weights held.
    pub fn memory_bytes(&self) -> usize {
        match &self.encoded {
            Encoded::Coefficients(m) => m.memory_bytes(),
            Encoded::Slots(m) => m.memory_bytes(&self.params),
        }
    }
}
