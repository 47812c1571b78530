//! Products of activations with quantized weight matrices, parallel over output rows.
//!
//! `out = x * W^T` where `x` is `n x cols` (one token per row) and `W` is one or more
//! quantized matrices stacked by rows. Two paths give the same f32 values up to
//! summation order:
//! - few tokens (decode): each weight row is read once, straight from its quantized
//!   blocks, and dotted with every token; memory-bound, so rows go to rayon in chunks.
//! - many tokens (prefill): a tile of 48 weight rows is dequantized to f32 scratch once
//!   and multiplied with all `n` tokens by the register-blocked [`simd::gemm`] (the tokens
//!   laid out for its kernel once per product, [`simd::TileInput`]).

use std::cell::RefCell;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::quant::{Format, QuantMatrix};
use crate::simd;

/// Token counts up to this use the direct quantized dot products.
const DOT_MAX_TOKENS: usize = 2;
/// Weight rows per prefill tile (a multiple of the kernels' 3 and 12 rows).
const TILE_ROWS: usize = 48;

thread_local! {
    /// Per-thread f32 scratch for a dequantized tile, reused across calls.
    static TILE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out (n x R) = x (n x cols) * [W_0; W_1; ...]^T`, `R` the total rows of `mats`.
///
/// # Errors
/// [`Error::Shape`] when the matrices disagree on `cols` or the slices do not fit.
pub fn matmul(mats: &[QuantMatrix<'_>], x: &[f32], out: &mut [f32]) -> Result<()> {
    let cols = mats.first().map_or(0, |m| m.cols());
    if let Some(m) = mats.iter().find(|m| m.cols() != cols) {
        return Err(Error::Shape {
            what: "stacked matrix columns",
            found: m.cols(),
            expected: cols,
        });
    }
    let rows: usize = mats.iter().map(|m| m.rows()).sum();
    if cols == 0 || !x.len().is_multiple_of(cols) {
        return Err(Error::Shape {
            what: "matmul input (n x cols)",
            found: x.len(),
            expected: x.len().next_multiple_of(cols.max(1)),
        });
    }
    let n = x.len() / cols;
    if out.len() != n * rows {
        return Err(Error::Shape {
            what: "matmul output (n x rows)",
            found: out.len(),
            expected: n * rows,
        });
    }
    if n == 0 {
        return Ok(());
    }
    if n == 1 {
        products_t(mats, x, 1, out);
        return Ok(());
    }
    let mut out_t = vec![0.0f32; rows * n];
    products_t(mats, x, n, &mut out_t);
    simd::transpose_par(&out_t, rows, n, out);
    Ok(())
}

/// The tokens of one product, prepared for its path.
enum Tokens<'a> {
    /// Decode: each token's activation for the quantized dot products.
    Dot(Vec<simd::Activation>),
    /// Prefill: all tokens laid out for the tile kernel.
    Tile(simd::TileInput<'a>),
}

/// Computes `out_t (R x n)`, each matrix's rows in order, in parallel tasks.
fn products_t(mats: &[QuantMatrix<'_>], x: &[f32], n: usize, out_t: &mut [f32]) {
    let dot_path = n <= DOT_MAX_TOKENS;
    let chunk_rows = if dot_path {
        // Coarse chunks: a few per thread, at least 16 rows each.
        let total: usize = mats.iter().map(|m| m.rows()).sum();
        (total / (8 * rayon::current_num_threads())).clamp(16, 1024)
    } else {
        TILE_ROWS
    };
    // Split out_t into (matrix, first row, chunk) tasks.
    let mut tasks = Vec::new();
    let mut rest = out_t;
    for m in mats {
        let (mine, tail) = rest.split_at_mut(m.rows() * n);
        rest = tail;
        for (c, chunk) in mine.chunks_mut(chunk_rows * n).enumerate() {
            tasks.push((m, c * chunk_rows, chunk));
        }
    }
    let cols = mats.first().map_or(0, |m| m.cols());
    let tokens = if dot_path {
        let limbs = mats
            .iter()
            .any(|m| matches!(m.format(), Format::Q4K | Format::Q6K));
        Tokens::Dot(
            x.chunks_exact(cols)
                .map(|xt| simd::Activation::with_limbs(xt, limbs))
                .collect(),
        )
    } else {
        Tokens::Tile(simd::TileInput::new(x, n, cols))
    };
    tasks.into_par_iter().for_each(|(m, start, chunk)| {
        let r = chunk.len() / n;
        TILE.with(|tile| {
            let mut tile = tile.borrow_mut();
            let need = if dot_path { cols } else { r * cols };
            if tile.len() < need {
                tile.resize(need, 0.0);
            }
            match &tokens {
                Tokens::Dot(acts) => {
                    for (j, o) in chunk.chunks_exact_mut(n).enumerate() {
                        let row = m.row_bytes(start + j);
                        for (t, v) in o.iter_mut().enumerate() {
                            let xt = &x[t * cols..(t + 1) * cols];
                            *v = simd::dot_row(m.format(), row, xt, &acts[t], &mut tile[..cols]);
                        }
                    }
                }
                Tokens::Tile(tile_x) => {
                    let w = &mut tile[..r * cols];
                    // `chunk` covers rows start..start + r of `m` by construction.
                    for (j, row) in w.chunks_exact_mut(cols).enumerate() {
                        simd::dequantize_row(m.format(), m.row_bytes(start + j), row);
                    }
                    simd::gemm(tile_x, w, r, chunk);
                }
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_paths_match_the_dequantized_product() {
        // Two stacked Q8_0 matrices of 50 and 7 rows, 64 columns.
        let mut seed = 3u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            (seed >> 33) as u8
        };
        let make = |rows: usize, next: &mut dyn FnMut() -> u8| -> Vec<u8> {
            let mut v: Vec<u8> = (0..rows * 2 * 34).map(|_| next()).collect();
            for b in v.chunks_exact_mut(34) {
                b[0] = 0;
                b[1] = 0x24; // d = 2^-6
            }
            v
        };
        let (a, b) = (make(50, &mut next), make(7, &mut next));
        let ma = QuantMatrix::new(Format::Q8_0, 50, 64, &a).unwrap();
        let mb = QuantMatrix::new(Format::Q8_0, 7, 64, &b).unwrap();
        let (wa, wb) = (ma.to_f32(), mb.to_f32());
        for n in [1, 2, 3, 6] {
            let x: Vec<f32> = (0..n * 64).map(|i| ((i % 13) as f32 - 6.0) / 3.0).collect();
            let mut out = vec![0.0; n * 57];
            matmul(&[ma, mb], &x, &mut out).unwrap();
            for t in 0..n {
                for j in 0..57 {
                    let w = if j < 50 {
                        &wa[j * 64..(j + 1) * 64]
                    } else {
                        &wb[(j - 50) * 64..(j - 49) * 64]
                    };
                    let exact: f64 = (0..64)
                        .map(|i| f64::from(w[i]) * f64::from(x[t * 64 + i]))
                        .sum();
                    assert!(
                        (f64::from(out[t * 57 + j]) - exact).abs() < 1e-4,
                        "n={n} t={t} j={j}"
                    );
                }
            }
        }
        let mut out = vec![0.0; 56];
        assert!(matmul(&[ma, mb], &[0.0; 64], &mut out).is_err());
    }
}
