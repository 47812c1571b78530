//! Ridge regression in closed form, `W = (X^T X + lambda I)^-1 X^T Y`, solved in f64 by a
//! Cholesky factorization written here (Golub and Van Loan, Matrix Computations, 4th ed.,
//! Algorithm 4.2.1).
//!
//! Moments are accumulated in a streaming fashion so the probe's training states never
//! need to be held at once; inputs and outputs are centred (an unpenalized intercept).

use crate::gemm::dgemm_tn_add;
use crate::{Error, Result};

/// Running sums `sum x`, `sum y`, `X^T X`, `X^T Y` over the rows seen so far.
#[derive(Debug, Clone)]
pub struct Moments {
    d_in: usize,
    d_out: usize,
    rows: usize,
    sum_x: Vec<f64>,
    sum_y: Vec<f64>,
    xtx: Vec<f64>,
    xty: Vec<f64>,
}

/// A fitted ridge map `y ~ (x - mean_x) W + mean_y`.
#[derive(Debug, Clone)]
pub struct RidgeFit {
    /// Input dimension.
    pub d_in: usize,
    /// Output dimension.
    pub d_out: usize,
    /// Mean of the training inputs.
    pub mean_x: Vec<f64>,
    /// Mean of the training outputs.
    pub mean_y: Vec<f64>,
    /// `d_in x d_out` weights, row-major.
    pub weights: Vec<f64>,
}

impl Moments {
    /// Empty moments for `d_in`-dimensional inputs and `d_out`-dimensional outputs.
    pub fn new(d_in: usize, d_out: usize) -> Self {
        Self {
            d_in,
            d_out,
            rows: 0,
            sum_x: vec![0.0; d_in],
            sum_y: vec![0.0; d_out],
            xtx: vec![0.0; d_in * d_in],
            xty: vec![0.0; d_in * d_out],
        }
    }

    /// Number of rows accumulated.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Adds `rows` samples: `x` is `rows x d_in`, `y` is `rows x d_out`, both row-major.
    ///
    /// # Errors
    /// [`Error::Shape`] when `x` or `y` is not a whole number of rows of the same count.
    pub fn add_rows(&mut self, x: &[f32], y: &[f32]) -> Result<()> {
        let rows = x.len() / self.d_in.max(1);
        if x.len() != rows * self.d_in {
            return Err(Error::Shape {
                what: "ridge inputs",
                expected: rows * self.d_in,
                got: x.len(),
            });
        }
        if y.len() != rows * self.d_out {
            return Err(Error::Shape {
                what: "ridge outputs",
                expected: rows * self.d_out,
                got: y.len(),
            });
        }
        let x64: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        let y64: Vec<f64> = y.iter().map(|&v| f64::from(v)).collect();
        for r in x64.chunks_exact(self.d_in) {
            self.sum_x.iter_mut().zip(r).for_each(|(s, v)| *s += v);
        }
        for r in y64.chunks_exact(self.d_out) {
            self.sum_y.iter_mut().zip(r).for_each(|(s, v)| *s += v);
        }
        dgemm_tn_add(&x64, &x64, rows, self.d_in, self.d_in, &mut self.xtx)?;
        dgemm_tn_add(&x64, &y64, rows, self.d_in, self.d_out, &mut self.xty)?;
        self.rows += rows;
        Ok(())
    }

    /// Mean of the diagonal of the centred Gram matrix: the scale `lambda` is chosen
    /// relative to, so that one relative penalty fits every layer.
    pub fn mean_variance_sum(&self) -> f64 {
        let n = self.rows.max(1) as f64;
        (0..self.d_in)
            .map(|i| self.xtx[i * self.d_in + i] - self.sum_x[i] * self.sum_x[i] / n)
            .sum::<f64>()
            / self.d_in.max(1) as f64
    }

    /// Solves the centred ridge problem with penalty `lambda` (absolute, in Gram units).
    ///
    /// # Errors
    /// [`Error::NotPositiveDefinite`] if the penalized Gram matrix is singular (only with
    /// `lambda <= 0`); [`Error::Zero`] with no rows.
    pub fn solve(&self, lambda: f64) -> Result<RidgeFit> {
        if self.rows == 0 {
            return Err(Error::Zero {
                what: "ridge training rows",
            });
        }
        let (p, q) = (self.d_in, self.d_out);
        let n = self.rows as f64;
        let mean_x: Vec<f64> = self.sum_x.iter().map(|s| s / n).collect();
        let mean_y: Vec<f64> = self.sum_y.iter().map(|s| s / n).collect();
        // Centring: sum (x - mx)(x - mx)^T = X^T X - n mx mx^T, and likewise for X^T Y.
        let mut a = self.xtx.clone();
        for i in 0..p {
            for j in 0..p {
                a[i * p + j] -= n * mean_x[i] * mean_x[j];
            }
            a[i * p + i] += lambda;
        }
        let mut b = self.xty.clone();
        for i in 0..p {
            for j in 0..q {
                b[i * q + j] -= n * mean_x[i] * mean_y[j];
            }
        }
        cholesky_in_place(&mut a, p)?;
        cholesky_solve(&a, p, &mut b, q);
        Ok(RidgeFit {
            d_in: p,
            d_out: q,
            mean_x,
            mean_y,
            weights: b,
        })
    }
}

impl RidgeFit {
    /// Predicts the output for one input `x` (`d_in` values) into `out` (`d_out` values).
    ///
    /// # Errors
    /// [`Error::Shape`] when `x` or `out` has the wrong length.
    pub fn predict(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        if x.len() != self.d_in {
            return Err(Error::Shape {
                what: "ridge input",
                expected: self.d_in,
                got: x.len(),
            });
        }
        if out.len() != self.d_out {
            return Err(Error::Shape {
                what: "ridge output",
                expected: self.d_out,
                got: out.len(),
            });
        }
        let mut acc = self.mean_y.clone();
        for (i, (&xi, mx)) in x.iter().zip(&self.mean_x).enumerate() {
            let c = f64::from(xi) - mx;
            let row = &self.weights[i * self.d_out..(i + 1) * self.d_out];
            acc.iter_mut().zip(row).for_each(|(a, w)| *a += c * w);
        }
        out.iter_mut().zip(&acc).for_each(|(o, a)| *o = *a as f32);
        Ok(())
    }
}

/// Overwrites the lower triangle of the symmetric `n x n` matrix `a` (row-major) with its
/// Cholesky factor `L` (`a = L L^T`); the strict upper triangle is zeroed.
///
/// # Errors
/// [`Error::NotPositiveDefinite`] at the first pivot that is not strictly positive.
pub fn cholesky_in_place(a: &mut [f64], n: usize) -> Result<()> {
    if a.len() != n * n {
        return Err(Error::Shape {
            what: "cholesky matrix",
            expected: n * n,
            got: a.len(),
        });
    }
    for j in 0..n {
        // Left-looking column update: a[j][j] - sum_k L[j][k]^2.
        let row_j = &mut a[j * n..(j + 1) * n];
        let d = row_j[j] - row_j[..j].iter().map(|v| v * v).sum::<f64>();
        if d.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err(Error::NotPositiveDefinite { pivot: j, value: d });
        }
        let ljj = d.sqrt();
        row_j[j] = ljj;
        row_j[j + 1..].iter_mut().for_each(|v| *v = 0.0);
        for i in j + 1..n {
            let (upper, lower) = a.split_at_mut(i * n);
            let lj = &upper[j * n..j * n + j];
            let li = &mut lower[..n];
            let dot: f64 = li[..j].iter().zip(lj).map(|(x, y)| x * y).sum();
            li[j] = (li[j] - dot) / ljj;
        }
    }
    Ok(())
}

/// Solves `L L^T X = B` in place for `q` right-hand sides (`b` is `n x q`, row-major),
/// with `l` the factor from [`cholesky_in_place`]: forward then back substitution.
pub fn cholesky_solve(l: &[f64], n: usize, b: &mut [f64], q: usize) {
    debug_assert_eq!(l.len(), n * n);
    debug_assert_eq!(b.len(), n * q);
    for i in 0..n {
        for k in 0..i {
            let f = l[i * n + k];
            let (head, tail) = b.split_at_mut(i * q);
            tail[..q]
                .iter_mut()
                .zip(&head[k * q..k * q + q])
                .for_each(|(t, h)| *t -= f * h);
        }
        let d = l[i * n + i];
        b[i * q..i * q + q].iter_mut().for_each(|v| *v /= d);
    }
    for i in (0..n).rev() {
        for k in i + 1..n {
            let f = l[k * n + i];
            let (head, tail) = b.split_at_mut(k * q);
            head[i * q..i * q + q]
                .iter_mut()
                .zip(&tail[..q])
                .for_each(|(h, t)| *h -= f * t);
        }
        let d = l[i * n + i];
        b[i * q..i * q + q].iter_mut().for_each(|v| *v /= d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_known_system() {
        // A = M M^T + I for a fixed M; check A X = B by multiplying back.
        let n = 5;
        let m: Vec<f64> = (0..n * n)
            .map(|i| ((i * 7 % 11) as f64 - 5.0) / 3.0)
            .collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| m[i * n + k] * m[j * n + k]).sum::<f64>()
                    + if i == j { 1.0 } else { 0.0 };
            }
        }
        let b0: Vec<f64> = (0..n * 2).map(|i| i as f64 - 3.0).collect();
        let mut l = a.clone();
        cholesky_in_place(&mut l, n).unwrap();
        let mut x = b0.clone();
        cholesky_solve(&l, n, &mut x, 2);
        for i in 0..n {
            for c in 0..2 {
                let r: f64 = (0..n).map(|k| a[i * n + k] * x[k * 2 + c]).sum();
                assert!((r - b0[i * 2 + c]).abs() < 1e-10, "row {i} col {c}: {r}");
            }
        }
    }

    #[test]
    fn cholesky_refuses_an_indefinite_matrix() {
        let mut a = vec![1.0, 2.0, 2.0, 1.0];
        assert!(matches!(
            cholesky_in_place(&mut a, 2),
            Err(Error::NotPositiveDefinite { pivot: 1, .. })
        ));
    }

    #[test]
    fn ridge_recovers_an_affine_map() {
        // y = x A + c exactly; a tiny lambda must recover A and c.
        let (p, q) = (3, 2);
        let a = [1.0, -2.0, 0.5, 0.0, 3.0, 1.0];
        let c = [0.25, -1.0];
        let mut mo = Moments::new(p, q);
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for t in 0..40 {
            let x = [
                (t as f32 * 0.37).sin(),
                (t as f32 * 1.3).cos(),
                (t % 5) as f32 - 2.0,
            ];
            let y: Vec<f32> = (0..q)
                .map(|j| (0..p).map(|i| x[i] * a[i * q + j] as f32).sum::<f32>() + c[j] as f32)
                .collect();
            xs.extend_from_slice(&x);
            ys.extend_from_slice(&y);
        }
        mo.add_rows(&xs[..60], &ys[..40]).unwrap();
        mo.add_rows(&xs[60..], &ys[40..]).unwrap();
        assert_eq!(mo.rows(), 40);
        let fit = mo.solve(1e-9).unwrap();
        let mut out = [0f32; 2];
        fit.predict(&[0.3, -0.2, 1.0], &mut out).unwrap();
        let want = [
            0.3 * 1.0 - 0.2 * 0.5 + 1.0 * 3.0 + 0.25,
            0.3 * -2.0 + 0.0 + 1.0 + -1.0,
        ];
        for j in 0..q {
            assert!(
                (f64::from(out[j]) - want[j]).abs() < 1e-4,
                "{out:?} vs {want:?}"
            );
        }
    }
}
