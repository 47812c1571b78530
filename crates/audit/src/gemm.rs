//! Checked doors to `matrixmultiply`'s GEMM kernels, the only `unsafe` in the crate.
//!
//! Batching candidate tokens turns the attack's many matrix-vector products into one
//! matrix-matrix product per weight (prefill-like efficiency); these wrappers check every
//! extent against the slices before handing raw pointers to the kernel.

use rayon::prelude::*;

use crate::{Error, Result};

/// Rows of the weight matrix one rayon task multiplies; a multiple of the kernels' tiles.
const ROWS_PER_TASK: usize = 64;

fn need(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::Shape {
            what,
            expected,
            got,
        })
    }
}

/// `y = x * w^T` for `x` (`n x k`, row-major) and `w` (`m x k`, row-major, one output
/// feature a row as GGUF stores it), written into `y` (`n x m`, row-major).
///
/// Rayon splits `w` into row blocks; `yt` (`m x n`) is scratch for the transposed result.
///
/// # Errors
/// [`Error::Shape`] when a slice does not have the size its extents say.
pub fn matmul_wt(
    x: &[f32],
    n: usize,
    k: usize,
    w: &[f32],
    m: usize,
    y: &mut [f32],
    yt: &mut Vec<f32>,
) -> Result<()> {
    need("matmul input", n * k, x.len())?;
    need("matmul weight", m * k, w.len())?;
    need("matmul output", n * m, y.len())?;
    if n == 0 || m == 0 {
        return Ok(());
    }
    yt.clear();
    yt.resize(m * n, 0.0);
    yt.par_chunks_mut(ROWS_PER_TASK * n)
        .zip(w.par_chunks(ROWS_PER_TASK * k))
        .for_each(|(out, wb)| {
            let rows = wb.len() / k;
            // SAFETY: `wb` holds `rows x k` values read with strides (k, 1); `x` holds
            // `n x k` values read transposed, i.e. as a `k x n` matrix with strides (1, k);
            // `out` holds `rows x n` values written with strides (n, 1). All extents were
            // checked above (rayon's chunks keep `out.len() == rows * n`), the three
            // slices do not overlap (`out` is a unique borrow) and beta = 0 means `out`'s
            // old contents are not read as numbers.
            unsafe {
                matrixmultiply::sgemm(
                    rows,
                    k,
                    n,
                    1.0,
                    wb.as_ptr(),
                    k as isize,
                    1,
                    x.as_ptr(),
                    1,
                    k as isize,
                    0.0,
                    out.as_mut_ptr(),
                    n as isize,
                    1,
                );
            }
        });
    for (i, row) in y.chunks_exact_mut(m).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = yt[j * n + i];
        }
    }
    Ok(())
}

/// `c += a^T * b` in f64 for `a` (`rows x p`) and `b` (`rows x q`), both row-major, and
/// `c` (`p x q`, row-major): the Gram and cross-moment update of the ridge probe.
///
/// # Errors
/// [`Error::Shape`] when a slice does not have the size its extents say.
pub fn dgemm_tn_add(
    a: &[f64],
    b: &[f64],
    rows: usize,
    p: usize,
    q: usize,
    c: &mut [f64],
) -> Result<()> {
    need("gram left factor", rows * p, a.len())?;
    need("gram right factor", rows * q, b.len())?;
    need("gram accumulator", p * q, c.len())?;
    if rows == 0 || p == 0 || q == 0 {
        return Ok(());
    }
    // SAFETY: `a` is read as the `p x rows` matrix a^T with strides (1, p), which touches
    // exactly its `rows * p` values; `b` as `rows x q` with strides (q, 1); `c` is the
    // unique `p x q` output with strides (q, 1). Sizes were checked above and `c` does not
    // alias the inputs (it is a unique borrow).
    unsafe {
        matrixmultiply::dgemm(
            p,
            rows,
            q,
            1.0,
            a.as_ptr(),
            1,
            p as isize,
            b.as_ptr(),
            q as isize,
            1,
            1.0,
            c.as_mut_ptr(),
            q as isize,
            1,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    }

    #[test]
    fn matmul_wt_matches_the_naive_product() {
        let mut s = 3;
        for &(n, k, m) in &[(1, 5, 3), (7, 33, 130), (3, 64, 64), (0, 4, 2)] {
            let x: Vec<f32> = (0..n * k).map(|_| lcg(&mut s) as f32).collect();
            let w: Vec<f32> = (0..m * k).map(|_| lcg(&mut s) as f32).collect();
            let mut y = vec![0f32; n * m];
            matmul_wt(&x, n, k, &w, m, &mut y, &mut Vec::new()).unwrap();
            for i in 0..n {
                for j in 0..m {
                    let r: f64 = (0..k)
                        .map(|t| f64::from(x[i * k + t]) * f64::from(w[j * k + t]))
                        .sum();
                    assert!(
                        (f64::from(y[i * m + j]) - r).abs() < 1e-5,
                        "({n},{k},{m}) [{i},{j}]"
                    );
                }
            }
        }
        let mut y = vec![0f32; 2];
        assert!(matches!(
            matmul_wt(&[0.0; 3], 1, 4, &[0.0; 8], 2, &mut y, &mut Vec::new()),
            Err(Error::Shape {
                expected: 4,
                got: 3,
                ..
            })
        ));
    }

    #[test]
    fn dgemm_tn_add_accumulates_the_naive_product() {
        let mut s = 9;
        let (rows, p, q) = (11, 6, 4);
        let a: Vec<f64> = (0..rows * p).map(|_| lcg(&mut s)).collect();
        let b: Vec<f64> = (0..rows * q).map(|_| lcg(&mut s)).collect();
        let mut c = vec![1.0; p * q];
        dgemm_tn_add(&a, &b, rows, p, q, &mut c).unwrap();
        for i in 0..p {
            for j in 0..q {
                let r: f64 = 1.0 + (0..rows).map(|t| a[t * p + i] * b[t * q + j]).sum::<f64>();
                assert!((c[i * q + j] - r).abs() < 1e-12);
            }
        }
    }
}
