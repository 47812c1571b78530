//! A coefficient product computed while its input uploads ([`crate::Server::stream`]).
//!
//! An input ciphertext's `c1` is expanded from a seed that the input's seed table puts
//! ahead of every `c0` ([`crate::EncryptedInput::to_bytes`]), and everything `c1`
//! feeds is a function of `c1` alone: each output block's `c1 = sum_b a_b W_b`, every
//! key switch of the packing, and what those switches add to `c0`
//! ([`selene_ckks::Evaluator::pack_masks`]). So that half, with all of the packing's key
//! switches, is computed once the table is in ([`MaskHalf`]). Each `c0` is then
//! multiplied into the output blocks' sums as it arrives ([`Accumulation`]); when the last
//! one is in, only the packing's linear steps on `c0` remain
//! ([`selene_ckks::Evaluator::pack_bodies`]), a few vector passes per merge. Every step
//! is exact mod `q`, so the output is byte for byte what [`crate::coeff`]'s whole product
//! gives the same input.

use std::sync::Arc;

use rayon::prelude::*;
use selene_ckks::ring::sampler::{uniform_poly_by, Expansion};
use selene_ckks::ring::{Ntt, Poly};
use selene_ckks::scheme::PackedMasks;
use selene_ckks::{Ciphertext, Encoding, Evaluator, GaloisKeys, Parameters, Scale};

use crate::coeff::{pack_chunks, switch_used, switch_whole, CoeffLayout, CoeffMatrix};
use crate::error::{Error, Result};
use crate::modswitch::{download_modulus, SwitchedCt};
use crate::MatrixShape;

/// One streamed product: `n` tokens through the matrix `m` in `layout`.
#[derive(Clone, Copy)]
pub(crate) struct Product<'a> {
    pub(crate) params: &'a Arc<Parameters>,
    pub(crate) m: &'a CoeffMatrix,
    pub(crate) layout: &'a CoeffLayout,
    pub(crate) n: usize,
    pub(crate) shape: MatrixShape,
}

/// The `c1` half of a product, from its input's seeds alone.
#[derive(Debug)]
struct MaskHalf {
    /// Per downloaded ciphertext, the packing's key-switching half (empty without
    /// packing).
    masks: Vec<PackedMasks>,
    /// Per downloaded ciphertext, `c1` switched to the download modulus.
    c1: Vec<Vec<u64>>,
}

impl MaskHalf {
    /// Every output block's `c1` sum from the seeds of the input ciphertexts (one per
    /// ciphertext, in the layout's order), packed as the layout says and switched.
    fn new(p: &Product<'_>, seeds: &[[u8; 32]], gks: Option<&Arc<GaloisKeys>>) -> Result<Self> {
        let Product {
            params,
            m,
            layout,
            n,
            shape,
        } = *p;
        let (t, rn, ring) = (layout.tiling, params.n(), params.ring());
        let (bi, bo, groups) = (
            t.in_blocks(shape.d_in),
            t.out_blocks(shape.d_out),
            t.groups(n),
        );
        let c1s: Vec<Poly<Ntt>> = seeds
            .par_iter()
            .map(|seed| uniform_poly_by(ring, seed, 0, false, Expansion::ChaCha8))
            .collect();
        let plan = ring.plan(0);
        let blocks: Vec<Poly<Ntt>> = (0..groups * bo)
            .into_par_iter()
            .map(|idx| {
                let (g, o) = (idx / bo, idx % bo);
                let mut sum = vec![0; rn];
                for b in 0..bi {
                    plan.mul_add(&mut sum, c1s[g * bi + b].row(0), m.block(b, o, bo, rn));
                }
                Poly::from_raw(sum, rn, 1, 0)
            })
            .collect();
        let down = download_modulus(layout.down_bits)?;
        if layout.pack_levels == 0 {
            let c1 = blocks
                .into_par_iter()
                .map(|c1| switch_whole(params, down, c1))
                .collect();
            return Ok(Self {
                masks: Vec::new(),
                c1,
            });
        }
        let gks = gks.ok_or(Error::MissingGaloisKeys)?;
        let mut ev = Evaluator::new(params).with_galois_keys(gks.clone());
        let masks: Vec<PackedMasks> = pack_chunks(blocks, groups, bo, layout.pack_levels)
            .into_iter()
            .map(|chunk| ev.pack_masks(chunk, t.k_i.trailing_zeros()))
            .collect::<std::result::Result<_, _>>()?;
        let c1 = masks
            .par_iter()
            .map(|mk| switch_whole(params, down, mk.c1().clone()))
            .collect();
        Ok(Self { masks, c1 })
    }
}

/// A streamed product's state: the `c1` half, and one `c0` sum per (token group, output
/// block), each input's `c0` multiplied into every block of its group once it is in.
#[derive(Debug)]
pub(crate) struct Accumulation {
    /// Per (token group, output block): the sum of `c0`, reduced mod `q`, NTT form.
    sums: Vec<Vec<u64>>,
    masks: MaskHalf,
}

impl Accumulation {
    /// The `c1` half of the product `p` from the input's `seeds`, and empty `c0` sums.
    ///
    /// # Errors
    /// [`Error::NotStreamable`] for a layout whose first merge levels fold into the
    /// weights (its items multiply images of the inputs, key switches of whole
    /// ciphertexts) or an input without its seed table; a packed layout without Galois
    /// keys; engine errors.
    pub(crate) fn new(
        p: &Product<'_>,
        seeds: &[[u8; 32]],
        gks: Option<&Arc<GaloisKeys>>,
    ) -> Result<Self> {
        let Product {
            params,
            layout,
            n,
            shape,
            ..
        } = *p;
        if layout.hoist_levels > 0 {
            return Err(Error::NotStreamable {
                reason: "merge levels folded into the weights",
            });
        }
        let t = layout.tiling;
        if seeds.len() != t.groups(n) * t.in_blocks(shape.d_in) {
            return Err(Error::NotStreamable {
                reason: "an input without its seed table",
            });
        }
        let masks = MaskHalf::new(p, seeds, gks)?;
        let sums = (0..t.groups(n) * t.out_blocks(shape.d_out))
            .map(|_| vec![0; params.n()])
            .collect();
        Ok(Self { sums, masks })
    }

    /// Multiplies in the `c0` of input ciphertexts `first..first + cts.len()`
    /// (ciphertext `i` is input block `i mod in_blocks` of token group `i / in_blocks`),
    /// every output block in parallel. Each product is reduced as it is added (tfhe-ntt's
    /// SIMD multiply-accumulate): a sum kept across arrivals is read and written once per
    /// input, so its width, not the multiplies, sets the pace.
    pub(crate) fn absorb(
        &mut self,
        params: &Parameters,
        m: &CoeffMatrix,
        layout: &CoeffLayout,
        shape: MatrixShape,
        first: usize,
        cts: &[Ciphertext],
    ) {
        let t = layout.tiling;
        let rn = params.n();
        let plan = params.ring().plan(0);
        let (bi, bo) = (t.in_blocks(shape.d_in), t.out_blocks(shape.d_out));
        self.sums.par_iter_mut().enumerate().for_each(|(idx, sum)| {
            let (g, o) = (idx / bo, idx % bo);
            for (i, ct) in (first..).zip(cts) {
                if i / bi == g {
                    let w = m.block(i % bi, o, bo, rn);
                    plan.mul_add(sum, ct.components().0.row(0), w);
                }
            }
        });
    }

    /// The downloaded ciphertexts: the `c0` sums through the packing's linear steps with
    /// the `c1` half's key switches, switched, beside the `c1` half.
    pub(crate) fn finish(
        self,
        params: &Arc<Parameters>,
        layout: &CoeffLayout,
        n: usize,
        shape: MatrixShape,
    ) -> Result<Vec<SwitchedCt>> {
        let (t, rn) = (layout.tiling, params.n());
        let blocks: Vec<Poly<Ntt>> = self
            .sums
            .into_par_iter()
            .map(|sum| Poly::from_raw(sum, rn, 1, 0))
            .collect();
        let c0s: Vec<Poly<Ntt>> = if layout.pack_levels == 0 {
            blocks
        } else {
            let ev = Evaluator::new(params);
            let (groups, bo) = (t.groups(n), t.out_blocks(shape.d_out));
            pack_chunks(blocks, groups, bo, layout.pack_levels)
                .into_par_iter()
                .zip(self.masks.masks)
                .map(|(chunk, mk)| {
                    let ct = ev.pack_bodies(chunk, mk, Scale(1.0), Encoding::Coefficients)?;
                    Ok(ct.into_components().0)
                })
                .collect::<Result<_>>()?
        };
        let down = download_modulus(layout.down_bits)?;
        let plan = layout.output_plan(n, shape.d_out);
        if c0s.len() != plan.len() || self.masks.c1.len() != plan.len() {
            return Err(Error::Malformed {
                what: "a streamed product's output count",
                offset: 0,
            });
        }
        Ok(c0s
            .into_par_iter()
            .zip(self.masks.c1)
            .zip(plan)
            .map(|((c0, c1), cells)| SwitchedCt {
                c0: switch_used(params, down, c0, &cells),
                c1,
            })
            .collect())
    }
}
