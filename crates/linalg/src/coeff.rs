//! The coefficient-encoded product (Cheetah, USENIX Security 2022; Iron, NeurIPS 2022):
//! no rotations and no key switching, only NTT-domain ciphertext x plaintext products
//! accumulated lazily over the input blocks, then a modulus switch to `2^down_bits`
//! before the download. See [`crate::tiling`] for the layout and its correctness proof.
//!
//! # Scales and precision
//! The client scales token `t` by `Delta_t = 2^x_bits / ||x_t||` and the server column `j`
//! by `s_j = 2^w_bits / ||w_j||` (`w_bits` = [`W_BITS`], or the preset's
//! [`crate::LinalgPreset::weight_bits`]), so every encoded value is at most `2^x_bits`
//! resp. `2^w_bits` and, by Cauchy-Schwarz, every output is at most `2^(x_bits + w_bits)`:
//! `x_bits = bits(q) - w_bits - 3` keeps it at most `q/2`. Relative to
//! `||x_t|| ||w_j||`, the errors are the rounding of `W` (`~0.3 * 2^-w_bits`), of `X`
//! (`~0.3 * 2^-x_bits`), the encryption noise times `W` (`~3.2 sqrt(k_o) 2^-x_bits`) and
//! the modulus switch (`~sqrt(N/18) * 2^(3 - down_bits)`); at the narrow presets all sit
//! near `2^-17`, so the worst of some 10^5 outputs stays below `2^-12` (measured: see `crates/cli/tests/linalg_smollm2.rs`).
//! The column scales are public (the client needs them to decode): they reveal the
//! column norms of `W`, which a client in client-aided mode can learn from its outputs
//! anyway (no weight privacy is claimed, ARCHITECTURE.md "Threat model").
//!
//! # What the client learns about `W`
//! The output's `c1 = sum_b a_b W_b` is a linear function of the weight blocks with
//! coefficients `a_b` the client itself generated (from its seeds), so a client can solve
//! for `W` after about `ceil(d_in / k_i)` products: much cheaper than extracting weights
//! from decrypted outputs. The threat model claims no weight privacy; a server that wants
//! to make extraction harder would add a fresh public-key encryption of zero to every
//! output (Cheetah's re-randomisation), at one public-key encryption per output block.

use std::sync::Arc;

use rayon::prelude::*;
use selene_ckks::ring::sampler::{os_rng, wide_gaussian};
use selene_ckks::ring::{Coeff, Modulus, Ntt, Poly};
use selene_ckks::rlwe::{Decryptor, Encryptor, Pow2Modulus};
use selene_ckks::{Ciphertext, Encoding, Evaluator, GaloisKeys, Parameters, Scale};

use crate::error::{Error, Result};
use crate::lazy::LazyAcc;
use crate::modswitch::{download_modulus, SwitchedCt};
use crate::tiling::{Packing, Tiling};
use crate::MatrixShape;

/// Bits of an encoded weight (`|round(w_ij s_j)| <= 2^W_BITS`) at the narrow-prime
/// presets and parameters that are no preset; each preset names its own
/// ([`crate::LinalgPreset::weight_bits`]).
pub const W_BITS: u32 = 16;
/// Headroom bits between the largest product and `q`.
const HEADROOM_BITS: u32 = 3;
/// Token groups sharing one pass over a weight block in `apply`.
const GROUP_CHUNK: usize = 8;
/// Smallest useful `x_bits` (encryption noise `~2^7` must stay `2^-13` below).
const MIN_X_BITS: u32 = 20;
/// Bits of the download modulus `2^down_bits` for the narrow-prime presets and for
/// parameters that are no preset (noise of the switch is `~2^4`, the full-scale output
/// `2^(down_bits - 3)`); each preset names its own ([`crate::LinalgPreset::down_bits`]).
pub const DEFAULT_DOWN_BITS: u32 = 24;

/// What the client needs to encode inputs for, and decode outputs of, one prepared
/// coefficient-method matrix. Public data.
#[derive(Clone, Debug, PartialEq)]
pub struct CoeffLayout {
    /// Block sizes.
    pub tiling: Tiling,
    /// Column scales `s_j` (the output scale of column `j`).
    pub col_scale: Vec<f64>,
    /// Bits of an encoded input value.
    pub x_bits: u32,
    /// Bits of an encoded weight (the column scales' target norm `2^w_bits`).
    pub w_bits: u32,
    /// Bits of the download modulus.
    pub down_bits: u32,
    /// Merge levels `r` of packed outputs (0: unpacked). Derived from the preset and the
    /// tiling ([`crate::tiling::Tiling::pack_levels`]), never sent.
    pub pack_levels: u32,
    /// Of those, the first levels folded into the weights ([`crate::hoist`]): the server
    /// needs `2^hoist_levels - 1` images of each input. Derived, never sent.
    pub hoist_levels: u32,
    /// Bits by which the merges scale every output: `pack_levels`, or 0 where the weights
    /// were multiplied by `2^-r mod q` so the merges' doubling restores the product itself
    /// ([`exact_merges`]). Derived, never sent.
    pub merge_gain_bits: u32,
}

impl CoeffLayout {
    /// Low bits of each uploaded `c0` coefficient the client drops
    /// ([`selene_ckks::Ciphertext::encode_rounded`]): the most that keep the rounding's
    /// error a quarter of the download switch's, so the product loses no measurable
    /// precision. Relative to `||x_t|| ||w_j||`, dropping `d` bits adds noise of standard
    /// deviation `2^d / sqrt(12)` per coefficient, which the weights carry to an output
    /// as `2^(d - x_bits) sqrt(k_o / 12)` (as the encryption noise, module docs), against
    /// the switch's `sqrt(N / 18) 2^(3 - down_bits)`: so
    /// `d = floor(x_bits - down_bits + 3 + log2(sqrt(12 / 18) / 4) + log2(N / k_o) / 2)`.
    /// 0 under decryption flooding: the rounding would join the noise the flooding must
    /// cover (its bound grows with it, [`crate::flooding`]).
    pub fn upload_drop_bits(&self, params: &Parameters) -> u32 {
        drop_bits(params, self.x_bits, self.down_bits, self.tiling.k_o)
    }

    /// `q / 2^(down_bits + merge_gain_bits)`: one unit of a decrypted output integer in
    /// the scale of `||x_t|| ||w_j||` times the token and column scales.
    pub fn unit(&self, q: f64) -> f64 {
        q / f64::from(self.down_bits + self.merge_gain_bits).exp2()
    }

    /// How many values of `Y` each downloaded ciphertext carries, in wire order: the
    /// lengths of [`CoeffLayout::output_plan`]'s lists, without building them.
    pub fn output_lens(&self, n: usize, d_out: usize) -> Vec<usize> {
        let t = self.tiling;
        let bo = t.out_blocks(d_out);
        let per = 1usize << self.pack_levels;
        let mut lens = Vec::new();
        for g in 0..t.groups(n) {
            let tokens = t.n_b.min(n - g * t.n_b);
            for k in 0..bo.div_ceil(per) {
                let outputs: usize = (0..per.min(bo - k * per))
                    .map(|c| t.k_o.min(d_out - (k * per + c) * t.k_o))
                    .sum();
                lens.push(tokens * outputs);
            }
        }
        lens
    }

    /// Where the values of `Y` (`n x d_out`, row-major) travel: one list per downloaded
    /// ciphertext, in wire order, of `(index into Y, coefficient position)`.
    ///
    /// Unpacked, ciphertext `(g, o)` holds `Y[g n_b + t, o k_o + j]` at
    /// [`Tiling::y_pos`]. Packed (the weights shifted by `x^-(k_i - 1)`, so `Y[t, j]` of a
    /// block sits at `k_i (t k_o + j)`, a multiple of `k_i`), the `2^r` blocks
    /// `o = k 2^r + c` of group `g` merge into ciphertext `(g, k)`, block `c` at offset
    /// `c k_i / 2^r` ([`selene_ckks::Evaluator::pack`]).
    pub fn output_plan(&self, n: usize, d_out: usize) -> Vec<Vec<(usize, usize)>> {
        let t = self.tiling;
        let bo = t.out_blocks(d_out);
        let per = 1usize << self.pack_levels;
        let mut plan = Vec::new();
        for g in 0..t.groups(n) {
            let tokens = t.n_b.min(n - g * t.n_b);
            for k in 0..bo.div_ceil(per) {
                let mut cells = Vec::new();
                for c in 0..per.min(bo - k * per) {
                    let o = k * per + c;
                    for tt in 0..tokens {
                        for j in 0..t.k_o.min(d_out - o * t.k_o) {
                            let at = (g * t.n_b + tt) * d_out + o * t.k_o + j;
                            let pos = if self.pack_levels == 0 {
                                t.y_pos(tt, j)
                            } else {
                                t.k_i * (tt * t.k_o + j) + c * (t.k_i >> self.pack_levels)
                            };
                            cells.push((at, pos));
                        }
                    }
                }
                plan.push(cells);
            }
        }
        plan
    }
}

/// The server's encoded weights: `in_blocks x out_blocks` NTT-form polynomials mod `q`,
/// or, with hoisted merge levels, the folded items ([`crate::hoist::fold`]).
#[derive(Clone, Debug)]
pub(crate) struct CoeffMatrix {
    /// Block `(b, o)` at `[(b * out_blocks + o) * N ..][..N]` (empty when folded).
    blocks: Vec<u64>,
    /// Folded items, `2^(r - L)` per packed output in order, each `2^L` images by
    /// `in_blocks` polynomials of `N` (`None`: every block merged into it is absent).
    items: Vec<Option<Vec<u64>>>,
}

impl CoeffMatrix {
    /// Weight block `(b, o)` of `bo` output blocks, `rn` NTT-form residues.
    pub(crate) fn block(&self, b: usize, o: usize, bo: usize, rn: usize) -> &[u64] {
        let at = b * bo + o;
        &self.blocks[at * rn..(at + 1) * rn]
    }

    /// Bytes held.
    pub(crate) fn memory_bytes(&self) -> usize {
        let folded: usize = self.items.iter().flatten().map(Vec::len).sum();
        (self.blocks.len() + folded) * std::mem::size_of::<u64>()
    }
}

pub(crate) fn ring_prime(params: &Parameters) -> Modulus {
    params.ring().moduli()[0]
}

/// Bits of the download modulus for coefficient-method products under `params`: the
/// preset's ([`crate::LinalgPreset::down_bits`]) when `params` are a coefficient preset,
/// else [`DEFAULT_DOWN_BITS`].
pub fn down_bits(params: &Parameters) -> u32 {
    match crate::LinalgPreset::of(params) {
        Some(p) if p.method() == crate::Method::Coefficients => p.down_bits(),
        _ => DEFAULT_DOWN_BITS,
    }
}

/// Bits of an encoded weight for coefficient-method products under `params`: the
/// preset's ([`crate::LinalgPreset::weight_bits`]) when `params` are a coefficient
/// preset, else [`W_BITS`].
pub fn w_bits(params: &Parameters) -> u32 {
    match crate::LinalgPreset::of(params) {
        Some(p) if p.method() == crate::Method::Coefficients => p.weight_bits(),
        _ => W_BITS,
    }
}

/// True when `params` are a preset whose outputs are packed ([`crate::LinalgPreset::packs`]).
pub fn packs(params: &Parameters) -> bool {
    crate::LinalgPreset::of(params).is_some_and(|p| p.packs())
}

/// How `params`' preset merges packed outputs ([`Packing`]): presets that flood their
/// decryptions fold no merge level into the weights (the images' key-switch rounding
/// would be multiplied by the weights, [`crate::flooding`]).
pub fn packing(params: &Parameters) -> Packing {
    Packing {
        fold: !crate::LinalgPreset::of(params).is_some_and(|p| p.floods()),
    }
}

/// True when `params` pack outputs without folding: every merge level is a real one, so
/// the blocks can be pre-multiplied by `2^-r mod q` and the `r` doublings give back
/// `X W` exactly (every step is `Z_q`-linear in the plaintext), keeping `x_bits` at its
/// unpacked value (the trick of multiplying by `N^-1 mod q` before a field trace). The
/// merges' own key-switch noise is not pre-divided; it is the rounding of each switch,
/// doubled by every later level.
pub(crate) fn exact_merges(params: &Parameters) -> bool {
    packs(params) && !packing(params).fold
}

/// Bits by which `pack_levels` merges scale every output under `params`: each doubles
/// the values, unless the merges are exact ([`exact_merges`]).
fn merge_gain_bits(params: &Parameters, pack_levels: u32) -> u32 {
    if exact_merges(params) {
        0
    } else {
        pack_levels
    }
}

/// `x_bits` for `params` with `pack_levels` merges (each doubles the values unless the
/// merges are exact), or an error if its prime cannot hold the products and the
/// centred lift of `c1 s` at decryption.
pub(crate) fn x_bits(params: &Parameters, pack_levels: u32) -> Result<u32> {
    let q_bits = ring_prime(params).bits();
    let (down, w) = (
        down_bits(params),
        w_bits(params) + merge_gain_bits(params, pack_levels),
    );
    let min_bits = MIN_X_BITS + w + HEADROOM_BITS;
    if q_bits < min_bits {
        return Err(Error::ModulusTooSmall { q_bits, min_bits });
    }
    // The client's exact lift of `c1 s` (through `q`, or `q p`).
    if !download_modulus(down).is_ok_and(|m| m.lift_fits(params)) {
        return Err(Error::ModulusTooSmall {
            q_bits,
            min_bits: down + params.log_n() + 2,
        });
    }
    Ok(q_bits - w - HEADROOM_BITS)
}

/// [`CoeffLayout::upload_drop_bits`] from the layout's parts.
fn drop_bits(params: &Parameters, x_bits: u32, down_bits: u32, k_o: usize) -> u32 {
    if crate::LinalgPreset::of(params).is_some_and(|p| p.floods()) {
        return 0;
    }
    let ratio = params.n() as f64 / k_o.max(1) as f64;
    let d = f64::from(x_bits) - f64::from(down_bits)
        + 3.0
        + ((12.0f64 / 18.0).sqrt() / 4.0).log2()
        + 0.5 * ratio.log2();
    let max = selene_ckks::scheme::serialize::max_drop_bits(ring_prime(params).bits());
    // Saturating float-to-int: negative is 0.
    (d.floor() as u32).min(max)
}

/// Bits per coefficient a packed `tiling` of a `d_out`-wide product uploads under
/// `params`: the prime's, less what the rounded `c0` drops (the full width where the
/// tiling cannot be prepared; [`prepare`] refuses it then).
fn packed_up_bits(params: &Parameters, tiling: &Tiling, d_out: usize) -> u32 {
    let q_bits = ring_prime(params).bits();
    match x_bits(params, tiling.pack_levels(d_out)) {
        Ok(x) => q_bits - drop_bits(params, x, down_bits(params), tiling.k_o),
        Err(_) => q_bits,
    }
}

/// The cost model's time (ns: server, client and the bytes at `link`'s rates) of one row
/// through a `shape` product under `params`, with the tiling [`prepare`] would choose
/// for `link`: what a client weighs before it asks for a plan (fusion, say) whose
/// layouts it has not seen yet.
pub fn modelled_row_ns(params: &Parameters, shape: MatrixShape, link: &crate::Link) -> f64 {
    let n = params.n();
    let q_bits = ring_prime(params).bits();
    let down = down_bits(params);
    if packs(params) {
        let packing = packing(params);
        let up = |t: &Tiling| packed_up_bits(params, t, shape.d_out);
        let t = Tiling::choose_packed(n, shape.d_in, shape.d_out, 1, &up, down, link, packing);
        t.packed_model_ns(n, shape.d_in, shape.d_out, up(&t), down, link, packing)
    } else {
        let t = Tiling::choose(n, shape.d_in, shape.d_out, 1, q_bits, down);
        // `model_ns` charges the wire at 1 bit/ns both ways; move it to the link's rates.
        let wire = t.wire_bits(n, shape.d_in, shape.d_out, q_bits, down);
        let rate = 0.5 * (link.up_ns_per_bit() + link.down_ns_per_bit());
        t.model_ns(n, shape.d_in, shape.d_out, q_bits, down) - wire + wire * rate
    }
}

/// Encodes `W` (given as `d_out` rows of `d_in` weights) into NTT-form blocks, with the
/// tiling chosen for `link` when the preset packs its outputs.
pub(crate) fn prepare(
    params: &Parameters,
    w_rows: &[f32],
    shape: MatrixShape,
    n_b: usize,
    link: &crate::Link,
) -> Result<(CoeffLayout, CoeffMatrix)> {
    prepare_tiled(
        params,
        w_rows,
        shape,
        chosen_tiling(params, shape, n_b, link)?,
    )
}

/// The tiling [`prepare`] uses: the packed plan for `link` when the preset packs.
fn chosen_tiling(
    params: &Parameters,
    shape: MatrixShape,
    n_b: usize,
    link: &crate::Link,
) -> Result<Tiling> {
    let n = params.n();
    if n_b == 0 || n_b > n {
        return Err(Error::TokensPerCiphertext { n_b, max: n });
    }
    let q_bits = ring_prime(params).bits();
    let down_bits = down_bits(params);
    Ok(if packs(params) {
        Tiling::choose_packed(
            n,
            shape.d_in,
            shape.d_out,
            n_b,
            &|t: &Tiling| packed_up_bits(params, t, shape.d_out),
            down_bits,
            link,
            packing(params),
        )
    } else {
        Tiling::choose(n, shape.d_in, shape.d_out, n_b, q_bits, down_bits)
    })
}

/// Words [`prepare`] would hold for a `shape` matrix (`n_b` tokens per ciphertext, the
/// tiling chosen for `link`), without encoding it: `in_blocks` weight polynomials per
/// output block, or per padded merge group's folded image when the first merge levels
/// are folded into the weights ([`Tiling::packed_work`]).
///
/// # Errors
/// As [`prepare`], before any encoding.
pub(crate) fn encoded_words(
    params: &Parameters,
    shape: MatrixShape,
    n_b: usize,
    link: &crate::Link,
) -> Result<usize> {
    let t = chosen_tiling(params, shape, n_b, link)?;
    let blocks = if packs(params) {
        x_bits(params, t.pack_levels(shape.d_out))?;
        t.in_blocks(shape.d_in) * t.packed_work(shape.d_in, shape.d_out, packing(params)).1
    } else {
        x_bits(params, 0)?;
        t.in_blocks(shape.d_in) * t.out_blocks(shape.d_out)
    };
    Ok(blocks * params.n())
}

/// [`prepare`] with a given tiling of a packing preset (measuring tilings the plan would
/// not choose, as the cost model's fit does).
///
/// # Errors
/// [`Error::InvalidTiling`] for a preset that does not pack or a tiling that does not
/// fit ([`Tiling::packed_fits`]).
pub(crate) fn prepare_packed(
    params: &Parameters,
    w_rows: &[f32],
    shape: MatrixShape,
    tiling: Tiling,
) -> Result<(CoeffLayout, CoeffMatrix)> {
    if !packs(params) || !tiling.packed_fits(params.n(), shape.d_in, shape.d_out) {
        return Err(Error::InvalidTiling {
            tiling: tiling.as_tuple(),
        });
    }
    prepare_tiled(params, w_rows, shape, tiling)
}

fn prepare_tiled(
    params: &Parameters,
    w_rows: &[f32],
    shape: MatrixShape,
    tiling: Tiling,
) -> Result<(CoeffLayout, CoeffMatrix)> {
    let n = params.n();
    let (down_bits, w_bits) = (down_bits(params), w_bits(params));
    let pack_levels = if packs(params) {
        tiling.pack_levels(shape.d_out)
    } else {
        0
    };
    let x_bits = x_bits(params, pack_levels)?;
    let hoist_levels = tiling.hoist_levels(shape.d_in, shape.d_out, pack_levels, packing(params));
    let merge_gain_bits = merge_gain_bits(params, pack_levels);
    // 2^-r mod q (q odd), folded into every block when the merges are exact.
    let q = ring_prime(params);
    let pre_divide = (merge_gain_bits < pack_levels)
        .then(|| q.inv(q.reduce_i128(1i128 << pack_levels)))
        .flatten();
    let col_scale: Vec<f64> = w_rows
        .chunks_exact(shape.d_in)
        .map(|row| {
            let norm = row
                .iter()
                .map(|&w| f64::from(w).powi(2))
                .sum::<f64>()
                .sqrt();
            if norm > 0.0 {
                f64::from(w_bits).exp2() / norm
            } else {
                1.0
            }
        })
        .collect();
    let (bi, bo) = (tiling.in_blocks(shape.d_in), tiling.out_blocks(shape.d_out));
    let ring = params.ring();
    let mut blocks = vec![0u64; bi * bo * n];
    blocks
        .par_chunks_exact_mut(n)
        .enumerate()
        .for_each(|(idx, out)| {
            let (b, o) = (idx / bo, idx % bo);
            let mut coeffs = vec![0i64; n];
            for j in 0..tiling.k_o {
                let col = o * tiling.k_o + j;
                if col >= shape.d_out {
                    break;
                }
                let row = &w_rows[col * shape.d_in..(col + 1) * shape.d_in];
                for i in 0..tiling.k_i {
                    let inp = b * tiling.k_i + i;
                    if inp >= shape.d_in {
                        break;
                    }
                    // |w s_j| <= 2^w_bits: no overflow.
                    let v = (f64::from(row[inp]) * col_scale[col]).round() as i64;
                    if pack_levels == 0 {
                        coeffs[tiling.w_pos(i, j)] = v;
                    } else {
                        // Times x^-(k_i - 1): exponent j k_i - i, negacyclic below 0.
                        match (j * tiling.k_i).checked_sub(i) {
                            Some(e) => coeffs[e] = v,
                            None => coeffs[n + j * tiling.k_i - i] = -v,
                        }
                    }
                }
            }
            let mut poly = Poly::<Coeff>::from_signed(ring, &coeffs, 0, false).into_ntt(ring);
            if let Some(c) = pre_divide {
                poly.mul_scalar_assign(ring, &[c]);
            }
            out.copy_from_slice(poly.row(0));
        });
    let layout = CoeffLayout {
        tiling,
        col_scale,
        x_bits,
        w_bits,
        down_bits,
        pack_levels,
        hoist_levels,
        merge_gain_bits,
    };
    let items = if hoist_levels > 0 {
        fold_blocks(params, &layout, shape, std::mem::take(&mut blocks))
    } else {
        Vec::new()
    };
    Ok((layout, CoeffMatrix { blocks, items }))
}

/// Folds the first `hoist_levels` merge levels into the weight blocks, per packed output.
fn fold_blocks(
    params: &Parameters,
    layout: &CoeffLayout,
    shape: MatrixShape,
    blocks: Vec<u64>,
) -> Vec<Option<Vec<u64>>> {
    let t = layout.tiling;
    let n = params.n();
    let (bi, bo) = (t.in_blocks(shape.d_in), t.out_blocks(shape.d_out));
    let per = 1usize << layout.pack_levels;
    let log_gap = t.k_i.trailing_zeros();
    (0..bo.div_ceil(per))
        .into_par_iter()
        .flat_map_iter(|k| {
            let group: Vec<Option<Vec<Vec<u64>>>> = (0..per)
                .map(|c| {
                    let o = k * per + c;
                    (o < bo).then(|| {
                        (0..bi)
                            .map(|b| blocks[(b * bo + o) * n..(b * bo + o + 1) * n].to_vec())
                            .collect()
                    })
                })
                .collect();
            crate::hoist::fold(params, log_gap, layout.hoist_levels, group)
                .into_iter()
                .map(|item| item.map(|i| i.into_iter().flatten().flatten().collect()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Encodes and encrypts `x` (`n x d_in`, row-major): one ciphertext per (token group,
/// input block). Returns the ciphertexts and the client's per-token scales.
pub(crate) fn encrypt(
    params: &Parameters,
    enc: &mut Encryptor,
    layout: &CoeffLayout,
    x: &[f32],
    n: usize,
    d_in: usize,
) -> Result<(Vec<Ciphertext>, Vec<f64>)> {
    let t = layout.tiling;
    let scales: Vec<f64> = x
        .chunks_exact(d_in)
        .map(|row| {
            let norm = row
                .iter()
                .map(|&v| f64::from(v).powi(2))
                .sum::<f64>()
                .sqrt();
            if norm > 0.0 {
                f64::from(layout.x_bits).exp2() / norm
            } else {
                1.0
            }
        })
        .collect();
    let bi = t.in_blocks(d_in);
    let encoded: Vec<Vec<i64>> = (0..t.groups(n) * bi)
        .into_par_iter()
        .map(|idx| {
            let (g, b) = (idx / bi, idx % bi);
            let mut coeffs = vec![0i64; params.n()];
            for tt in 0..t.n_b {
                let tok = g * t.n_b + tt;
                if tok >= n {
                    break;
                }
                for i in 0..t.k_i {
                    let inp = b * t.k_i + i;
                    if inp >= d_in {
                        break;
                    }
                    // |x_ti Delta_t| <= 2^x_bits by the choice of Delta_t.
                    coeffs[t.x_pos(tt, i)] =
                        (f64::from(x[tok * d_in + inp]) * scales[tok]).round() as i64;
                }
            }
            coeffs
        })
        .collect();
    // Secret-key encryption: each ciphertext ships as `c0` plus the 32-byte seed of `c1`;
    // the message and the error share one NTT. The ciphertexts are encrypted in parallel.
    let cts = enc.encrypt_coefficients_batch(&encoded, 0, Scale(1.0), Encoding::Coefficients);
    Ok((cts, scales))
}

/// Server side: `out[g, o] = sum_b in[g, b] * W[b, o]`, lazily reduced, packed when the
/// layout says so (with the client's Galois keys), then switched.
pub(crate) fn apply(
    params: &Arc<Parameters>,
    m: &CoeffMatrix,
    layout: &CoeffLayout,
    cts: &[Ciphertext],
    n: usize,
    shape: MatrixShape,
    gks: Option<&Arc<GaloisKeys>>,
) -> Result<Vec<SwitchedCt>> {
    if layout.hoist_levels > 0 {
        let gks = gks.ok_or(Error::MissingGaloisKeys)?;
        let packed = apply_hoisted(params, m, layout, cts, n, shape, gks)?;
        return switch_all(params, layout, packed, n, shape);
    }
    let t = layout.tiling;
    let rn = params.n();
    let q = ring_prime(params);
    let (bi, bo) = (t.in_blocks(shape.d_in), t.out_blocks(shape.d_out));
    // Cache blocking: each task owns one output block and up to GROUP_CHUNK token groups,
    // so a weight block (N words) is read once per chunk instead of once per group.
    let groups = t.groups(n);
    let chunks = groups.div_ceil(GROUP_CHUNK);
    let mut out: Vec<(usize, Ciphertext)> = (0..chunks * bo)
        .into_par_iter()
        .map_init(Vec::new, |accs: &mut Vec<LazyAcc>, idx| {
            let (ch, o) = (idx / bo, idx % bo);
            let gs = ch * GROUP_CHUNK..(ch * GROUP_CHUNK + GROUP_CHUNK).min(groups);
            accs.resize_with(gs.len(), || LazyAcc::new(&q));
            accs.iter_mut().for_each(|a| a.reset(rn));
            for b in 0..bi {
                let w = &m.blocks[(b * bo + o) * rn..(b * bo + o + 1) * rn];
                for (a, g) in accs.iter_mut().zip(gs.clone()) {
                    a.mul_acc(&q, &cts[g * bi + b], w);
                }
            }
            gs.clone()
                .zip(accs.iter())
                .map(|(g, a)| (g * bo + o, a.ciphertext(&q)))
                .collect::<Vec<_>>()
        })
        .flatten_iter()
        .collect();
    out.sort_unstable_by_key(|(idx, _)| *idx);
    let blocks: Vec<Ciphertext> = out.into_iter().map(|(_, ct)| ct).collect();
    pack_and_switch(params, layout, blocks, n, shape, gks)
}

/// The output blocks (token group by token group) packed when the layout says so, then
/// switched for the download.
fn pack_and_switch(
    params: &Arc<Parameters>,
    layout: &CoeffLayout,
    mut blocks: Vec<Ciphertext>,
    n: usize,
    shape: MatrixShape,
    gks: Option<&Arc<GaloisKeys>>,
) -> Result<Vec<SwitchedCt>> {
    let t = layout.tiling;
    let (groups, bo) = (t.groups(n), t.out_blocks(shape.d_out));
    if layout.pack_levels > 0 {
        let gks = gks.ok_or(Error::MissingGaloisKeys)?;
        let mut ev = Evaluator::new(params).with_galois_keys(gks.clone());
        blocks = pack_chunks(blocks, groups, bo, layout.pack_levels)
            .into_iter()
            .map(|chunk| ev.pack(chunk, t.k_i.trailing_zeros()))
            .collect::<std::result::Result<_, _>>()?;
    }
    switch_all(params, layout, blocks, n, shape)
}

/// The output blocks (`bo` per token group, in order) as the packing's inputs: per group,
/// runs of `2^pack_levels` blocks, the last run padded with `None`.
pub(crate) fn pack_chunks<T>(
    blocks: Vec<T>,
    groups: usize,
    bo: usize,
    pack_levels: u32,
) -> Vec<Vec<Option<T>>> {
    let per = 1usize << pack_levels;
    let mut it = blocks.into_iter();
    let mut chunks = Vec::with_capacity(groups * bo.div_ceil(per));
    for _ in 0..groups {
        for k in 0..bo.div_ceil(per) {
            let mut chunk: Vec<Option<T>> =
                it.by_ref().take(per.min(bo - k * per)).map(Some).collect();
            chunk.resize_with(per, || None);
            chunks.push(chunk);
        }
    }
    chunks
}

/// Switches every downloaded ciphertext to `2^down_bits`, keeping `c0` only where the
/// layout's output plan reads it.
fn switch_all(
    params: &Parameters,
    layout: &CoeffLayout,
    blocks: Vec<Ciphertext>,
    n: usize,
    shape: MatrixShape,
) -> Result<Vec<SwitchedCt>> {
    let down = download_modulus(layout.down_bits)?;
    let plan = layout.output_plan(n, shape.d_out);
    blocks
        .into_par_iter()
        .zip(plan)
        .map(|(ct, cells)| {
            let (c0, c1) = ct.into_components();
            Ok(SwitchedCt {
                c0: switch_used(params, down, c0, &cells),
                c1: switch_whole(params, down, c1),
            })
        })
        .collect()
}

/// The coefficients of `c0` (NTT form, one prime) at the positions `cells` reads,
/// switched to `down`.
pub(crate) fn switch_used(
    params: &Parameters,
    down: Pow2Modulus,
    c0: Poly<Ntt>,
    cells: &[(usize, usize)],
) -> Vec<u64> {
    let c0 = c0.into_coeff(params.ring());
    let used: Vec<u64> = cells.iter().map(|&(_, pos)| c0.row(0)[pos]).collect();
    down.switch(&ring_prime(params), &used)
}

/// Every coefficient of `c1` (NTT form, one prime) switched to `down`.
pub(crate) fn switch_whole(params: &Parameters, down: Pow2Modulus, c1: Poly<Ntt>) -> Vec<u64> {
    down.switch(&ring_prime(params), c1.into_coeff(params.ring()).row(0))
}

/// Server side with hoisted merge levels ([`crate::hoist`]): per token group, the
/// `2^L` images of each input ciphertext (one decomposition each), every folded item as
/// `sum_s sum_b image_s(x_b) U_(s,b)` (lazily reduced), then the remaining `r - L`
/// levels merged for real.
fn apply_hoisted(
    params: &Arc<Parameters>,
    m: &CoeffMatrix,
    layout: &CoeffLayout,
    cts: &[Ciphertext],
    n: usize,
    shape: MatrixShape,
    gks: &Arc<GaloisKeys>,
) -> Result<Vec<Ciphertext>> {
    let t = layout.tiling;
    let rn = params.n();
    let q = ring_prime(params);
    let (bi, bo) = (t.in_blocks(shape.d_in), t.out_blocks(shape.d_out));
    let (r, l) = (layout.pack_levels, layout.hoist_levels);
    let (images_per, items_per) = (1usize << l, 1usize << (r - l));
    let log_gap = t.k_i.trailing_zeros();
    let elements = crate::hoist::image_elements(params.log_n(), log_gap, l);
    let packed_per_group = bo.div_ceil(1 << r);
    let evaluator = || Evaluator::new(params).with_galois_keys(gks.clone());
    let mut out = Vec::with_capacity(t.groups(n) * packed_per_group);
    for g in 0..t.groups(n) {
        let images: Vec<Vec<Ciphertext>> = (0..bi)
            .into_par_iter()
            .map_init(evaluator, |ev, b| {
                ev.apply_galois_hoisted(&cts[g * bi + b], &elements)
            })
            .collect::<std::result::Result<_, _>>()?;
        // One accumulator per worker, reused: a fresh 128 KiB one per item went through
        // mmap and page faults, several percent of the server's time.
        let items: Vec<Option<Ciphertext>> = m
            .items
            .par_iter()
            .map_init(
                || LazyAcc::new(&q),
                |acc, item| {
                    let u = item.as_ref()?;
                    acc.reset(rn);
                    for (s, b) in (0..images_per).flat_map(|s| (0..bi).map(move |b| (s, b))) {
                        let w = &u[(s * bi + b) * rn..(s * bi + b + 1) * rn];
                        acc.mul_acc(&q, &images[b][s], w);
                    }
                    Some(acc.ciphertext(&q))
                },
            )
            .collect();
        let mut ev = evaluator();
        let mut it = items.into_iter();
        for _ in 0..packed_per_group {
            let chunk: Vec<Option<Ciphertext>> = it.by_ref().take(items_per).collect();
            out.push(ev.pack(chunk, log_gap - l)?);
        }
    }
    Ok(out)
}

/// Client side: decrypts the switched ciphertexts to the centred integers `m'` mod
/// `2^down_bits` at every output position, as `Y`'s `n x d_out` row-major grid. With
/// `flood_sigma > 0` every decrypted coefficient first gets a fresh rounded Gaussian of
/// that standard deviation (noise flooding, [`crate::flooding`]).
pub(crate) fn decrypt_ints(
    dec: &Decryptor,
    layout: &CoeffLayout,
    cts: &[SwitchedCt],
    n: usize,
    shape: MatrixShape,
    flood_sigma: f64,
) -> Result<Vec<i64>> {
    let down = download_modulus(layout.down_bits)?;
    let modulus = 1i128 << down.bits();
    let plan = layout.output_plan(n, shape.d_out);
    // The ring products (two NTTs each) in parallel (a single one runs inline: rayon
    // does not split one item); the scatter into `Y` after.
    let c1s: Vec<Vec<i64>> = cts
        .par_iter()
        .map(|ct| dec.c1_s_pow2(&ct.c1, down))
        .collect::<std::result::Result<_, _>>()?;
    let mut y = vec![0; n * shape.d_out];
    for ((ct, cells), c1s) in cts.iter().zip(plan).zip(c1s) {
        let flood = if flood_sigma > 0.0 {
            wide_gaussian(&mut os_rng(), ct.c0.len(), flood_sigma)
        } else {
            Vec::new()
        };
        let mut used = ct.c0.iter().zip(flood.iter().chain(std::iter::repeat(&0)));
        for (at, pos) in cells {
            // Lengths were checked against the layout before decryption.
            let (c0, f) = used.next().map(|(&c, &f)| (c, f)).unwrap_or((0, 0));
            // f mod 2^k (two's complement: the low k bits) lies in [0, 2^k), so the sum
            // stays far inside i64.
            let f = (f & (modulus - 1)) as i64;
            let m = (c0 as i64).wrapping_add(c1s[pos]).wrapping_add(f);
            y[at] = down.center(m as u64);
        }
    }
    Ok(y)
}

/// Client side: decrypts the switched ciphertexts and decodes `Y` (`n x d_out`),
/// optionally flooded (see [`decrypt_ints`]).
#[allow(
    clippy::too_many_arguments,
    reason = "one decode step, all inputs needed"
)]
pub(crate) fn decrypt(
    params: &Parameters,
    dec: &Decryptor,
    layout: &CoeffLayout,
    cts: &[SwitchedCt],
    n: usize,
    shape: MatrixShape,
    token_scales: &[f64],
    flood_sigma: f64,
) -> Result<Vec<f64>> {
    // Packing doubled every value once per merge level, unless pre-divided.
    let unit = layout.unit(ring_prime(params).value() as f64);
    let m = decrypt_ints(dec, layout, cts, n, shape, flood_sigma)?;
    Ok(m.chunks_exact(shape.d_out)
        .zip(token_scales)
        .flat_map(|(row, &t)| {
            row.iter()
                .zip(&layout.col_scale)
                .map(move |(&v, &c)| v as f64 * unit / (t * c))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lens_are_the_lengths_of_the_output_plan() {
        for (n_b, k_i, k_o, pack_levels, n, d_out) in [
            (1, 2048, 2, 1, 1, 1536),
            (1, 512, 8, 3, 1, 17920),
            (4, 64, 16, 0, 7, 960),
            (2, 256, 8, 4, 3, 1000),
        ] {
            let layout = CoeffLayout {
                tiling: Tiling { n_b, k_i, k_o },
                col_scale: vec![1.0; d_out],
                x_bits: 20,
                w_bits: 16,
                down_bits: 24,
                pack_levels,
                hoist_levels: 0,
                merge_gain_bits: pack_levels,
            };
            let plan: Vec<usize> = layout.output_plan(n, d_out).iter().map(Vec::len).collect();
            assert_eq!(layout.output_lens(n, d_out), plan, "{:?}", layout.tiling);
            assert_eq!(plan.iter().sum::<usize>(), n * d_out);
        }
    }
}
