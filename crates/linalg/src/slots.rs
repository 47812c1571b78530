//! The slot-encoded diagonal method (Halevi-Shoup, CRYPTO 2014, sec. 4; baby-step
//! giant-step with hoisted baby steps, CRYPTO 2018, sec. 5), with several tokens per
//! ciphertext.
//!
//! # Layout
//! Token `s` of a ciphertext owns the segment `[s L, (s+1) L)`, `L = d_in + d_out - 1`,
//! and the client fills it with `x` repeated: slot `s L + p` holds `x[p mod d_in]`.
//! Diagonal `k < d_in` of the matrix is `d_k[i] = W[(i + k) mod d_in, i]` for `i < d_out`
//! (W is `d_in x d_out`), so `y[i] = sum_k d_k[i] x[(i + k) mod d_in]`. With `g` baby
//! and `h` giant steps, `k = g j + b`, and plaintexts `P_{j,b}` holding `d_k` shifted right
//! by `g j` inside every segment,
//! `y = sum_j rot_{g j}( sum_b P_{j,b} * rot_b(x) )`.
//! Rotations are cyclic over all `N/2` slots, but every slot read stays inside its own
//! segment: output `i < d_out` reads position `i + g j + b = i + k <= d_out + d_in - 2 < L`.
//! So one rotation of a ciphertext serves all its tokens, and the `g - 1` baby rotations
//! share one decomposition (hoisting); `g + h - 2` Galois keys in all.
//!
//! # Scales
//! As in the coefficient method, token `t` is scaled by `2^X_BITS / ||x_t||` and column
//! `i` by `2^W_BITS / ||w_i||` (each slot of a diagonal belongs to one output column), so
//! every output is at most `2^(X_BITS + W_BITS) = 2^51` in a 55-bit prime.

use std::sync::Arc;

use rayon::prelude::*;
use selene_ckks::embedding::SlotFft;
use selene_ckks::ring::{Coeff, Poly};
use selene_ckks::rlwe::{Decryptor, Encryptor};
use selene_ckks::{
    Ciphertext, Encoding, Evaluator, GaloisKeys, Parameters, Plaintext, PreparedPlaintext, Scale,
};

use crate::error::{Error, Result};
use crate::modswitch::{download_modulus, SwitchedCt};
use crate::MatrixShape;

/// Bits of a scaled input slot.
const X_BITS: u32 = 28;
/// Bits of a scaled weight slot.
pub(crate) const W_BITS: u32 = 23;
/// Bits of the download modulus (the switch adds `~2^11` per slot; full scale is
/// `2^(DOWN_BITS - 7)`).
pub(crate) const DOWN_BITS: u32 = 36;

/// What the client needs for one prepared slot-method matrix. Public data.
#[derive(Clone, Debug, PartialEq)]
pub struct SlotLayout {
    /// Baby steps `g`.
    pub baby: usize,
    /// Giant steps `h`.
    pub giant: usize,
    /// Segment length `d_in + d_out - 1`.
    pub segment: usize,
    /// Tokens per ciphertext, `floor(slots / segment)`.
    pub tokens_per_ct: usize,
    /// Column scales.
    pub col_scale: Vec<f64>,
    /// Bits of the download modulus.
    pub down_bits: u32,
}

impl SlotLayout {
    /// The rotation steps the server needs: `1..g` and `g, 2g, .., (h-1) g`.
    pub fn rotation_steps(&self) -> Vec<i64> {
        let baby = (1..self.baby).map(|b| b as i64);
        let giant = (1..self.giant).map(|j| (j * self.baby) as i64);
        baby.chain(giant).collect()
    }
}

/// The server's prepared diagonals, one per `k < d_in`, with Shoup quotients.
#[derive(Debug)]
pub(crate) struct SlotMatrix {
    diagonals: Vec<PreparedPlaintext>,
}

impl SlotMatrix {
    /// Bytes held (residues and Shoup quotients).
    pub(crate) fn memory_bytes(&self, params: &Parameters) -> usize {
        self.diagonals.len() * params.n() * 2 * std::mem::size_of::<u64>()
    }
}

/// Baby steps `g` minimising `(g - 1) + (ceil(d_in / g) - 1)`, the larger on ties.
pub(crate) fn bsgs(d_in: usize) -> (usize, usize) {
    let mut best = (d_in, 1);
    for g in 1..=d_in {
        let h = d_in.div_ceil(g);
        if g + h < best.0 + best.1 || (g + h == best.0 + best.1 && g > best.0 && g * h == d_in) {
            best = (g, h);
        }
    }
    best
}

/// Encodes real slot values (already scaled) into an NTT-form plaintext with scale 1.
fn encode(params: &Parameters, fft: &SlotFft, values: &[f64]) -> Result<Plaintext> {
    let ring = params.ring();
    let mut coeffs = vec![0.0; params.n()];
    fft.encode_real(values, &mut coeffs)?;
    let ints: Vec<i64> = coeffs.iter().map(|c| c.round() as i64).collect();
    let poly = Poly::<Coeff>::from_signed(ring, &ints, 0, false).into_ntt(ring);
    Ok(Plaintext::from_poly(poly, Scale(1.0), Encoding::Slots))
}

fn fft(params: &Parameters) -> Result<SlotFft> {
    Ok(SlotFft::new(params.log_n(), params.log_n() - 1)?)
}

fn norm_scale(v: &[f32], bits: u32) -> f64 {
    let norm = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    if norm > 0.0 {
        f64::from(bits).exp2() / norm
    } else {
        1.0
    }
}

/// Builds the diagonals of `W` (`d_out` rows of `d_in`).
pub(crate) fn prepare(
    params: &Parameters,
    w_rows: &[f32],
    shape: MatrixShape,
) -> Result<(SlotLayout, SlotMatrix)> {
    let slots = params.slots();
    let segment = shape.d_in + shape.d_out - 1;
    if segment > slots {
        return Err(Error::TooFewSlots {
            needed: segment,
            slots,
        });
    }
    let fits = download_modulus(DOWN_BITS).is_ok_and(|m| m.lift_fits(params));
    if !fits || params.ring().moduli()[0].bits() < X_BITS + W_BITS + 4 {
        return Err(Error::ModulusTooSmall {
            q_bits: params.ring().moduli()[0].bits(),
            min_bits: (DOWN_BITS + params.log_n() + 2).max(X_BITS + W_BITS + 4),
        });
    }
    let (baby, giant) = bsgs(shape.d_in);
    let col_scale: Vec<f64> = w_rows
        .chunks_exact(shape.d_in)
        .map(|r| norm_scale(r, W_BITS))
        .collect();
    let tokens_per_ct = slots / segment;
    let fft = fft(params)?;
    let diagonals = (0..shape.d_in)
        .into_par_iter()
        .map(|k| {
            let shift = (k / baby) * baby;
            let mut values = vec![0.0; slots];
            for s in 0..tokens_per_ct {
                for i in 0..shape.d_out {
                    let w = w_rows[i * shape.d_in + (i + k) % shape.d_in];
                    values[s * segment + shift + i] = f64::from(w) * col_scale[i];
                }
            }
            Ok(PreparedPlaintext::new(
                params,
                encode(params, &fft, &values)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let layout = SlotLayout {
        baby,
        giant,
        segment,
        tokens_per_ct,
        col_scale,
        down_bits: DOWN_BITS,
    };
    Ok((layout, SlotMatrix { diagonals }))
}

/// Encodes and encrypts `x` (`n x d_in`): `tokens_per_ct` tokens per ciphertext.
pub(crate) fn encrypt(
    params: &Parameters,
    enc: &mut Encryptor,
    layout: &SlotLayout,
    x: &[f32],
    n: usize,
    d_in: usize,
) -> Result<(Vec<Ciphertext>, Vec<f64>)> {
    let scales: Vec<f64> = x
        .chunks_exact(d_in)
        .map(|r| norm_scale(r, X_BITS))
        .collect();
    let fft = fft(params)?;
    let m = layout.tokens_per_ct;
    let pts = (0..n.div_ceil(m))
        .into_par_iter()
        .map(|g| {
            let mut values = vec![0.0; params.slots()];
            for s in 0..m.min(n - g * m) {
                let tok = g * m + s;
                for p in 0..layout.segment {
                    values[s * layout.segment + p] =
                        f64::from(x[tok * d_in + p % d_in]) * scales[tok];
                }
            }
            encode(params, &fft, &values)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((pts.iter().map(|pt| enc.encrypt(pt)).collect(), scales))
}

/// Server side: BSGS with hoisted baby steps, giant steps in parallel; then the switch.
/// Returns one switched ciphertext per input ciphertext.
pub(crate) fn apply(
    params: &Arc<Parameters>,
    gks: &Arc<GaloisKeys>,
    m: &SlotMatrix,
    layout: &SlotLayout,
    cts: &[Ciphertext],
) -> Result<Vec<SwitchedCt>> {
    let ring = params.ring();
    let q = ring.moduli()[0];
    let down = download_modulus(layout.down_bits)?;
    let (g, d_in) = (layout.baby, m.diagonals.len());
    let steps: Vec<i64> = (0..g as i64).collect();
    cts.iter()
        .map(|ct| {
            let mut eval = Evaluator::new(params).with_galois_keys(gks.clone());
            let rots = eval.rotate_hoisted(ct, &steps)?;
            let partial = (0..layout.giant)
                .into_par_iter()
                .map(|j| {
                    let mut eval = Evaluator::new(params).with_galois_keys(gks.clone());
                    let diags = &m.diagonals[j * g..(j * g + g).min(d_in)];
                    let mut inner = eval.mul_prepared(&rots[0], &diags[0])?;
                    for (rot, diag) in rots.iter().zip(diags).skip(1) {
                        eval.mul_prepared_add_into(rot, diag, &mut inner)?;
                    }
                    if j > 0 {
                        inner = eval.rotate(&inner, (j * g) as i64)?;
                    }
                    Ok(inner)
                })
                .collect::<Result<Vec<_>>>()?;
            let mut total = partial[0].clone();
            for p in &partial[1..] {
                eval.add_assign(&mut total, p)?;
            }
            let (c0, c1) = total.components();
            let c0 = c0.clone().into_coeff(ring);
            let c1 = c1.clone().into_coeff(ring);
            Ok(SwitchedCt {
                c0: down.switch(&q, c0.row(0)),
                c1: down.switch(&q, c1.row(0)),
            })
        })
        .collect()
}

/// Client side: decrypts and decodes `Y` (`n x d_out`).
pub(crate) fn decrypt(
    params: &Parameters,
    dec: &Decryptor,
    layout: &SlotLayout,
    cts: &[SwitchedCt],
    n: usize,
    shape: MatrixShape,
    token_scales: &[f64],
) -> Result<Vec<f64>> {
    let down = download_modulus(layout.down_bits)?;
    let unit = params.ring().moduli()[0].value() as f64 / f64::from(down.bits()).exp2();
    let fft = fft(params)?;
    let m = layout.tokens_per_ct;
    let mut y = vec![0.0; n * shape.d_out];
    let groups = cts
        .par_iter()
        .map(|ct| {
            let coeffs: Vec<f64> = dec
                .decrypt_pow2(&ct.c0, &ct.c1, down)?
                .into_iter()
                .map(|v| v as f64)
                .collect();
            let mut slots = vec![0.0; params.slots()];
            fft.decode_real(&coeffs, &mut slots)?;
            Ok(slots)
        })
        .collect::<Result<Vec<_>>>()?;
    for (g, slots) in groups.iter().enumerate() {
        for s in 0..m.min(n - g * m) {
            let tok = g * m + s;
            for i in 0..shape.d_out {
                y[tok * shape.d_out + i] = slots[s * layout.segment + i] * unit
                    / (token_scales[tok] * layout.col_scale[i]);
            }
        }
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bsgs_matches_the_anchor_splits() {
        assert_eq!(bsgs(576), (24, 24));
        assert!(bsgs(1536).0 * bsgs(1536).1 >= 1536);
        let (g, h) = bsgs(1536);
        assert_eq!(g + h, 79);
    }
}
