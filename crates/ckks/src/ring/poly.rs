//! RNS polynomials with the representation in the type: `Poly<Coeff>` holds coefficients,
//! `Poly<Ntt>` holds NTT evaluations (tfhe-ntt's bit-reversed order), so a domain mix-up
//! does not compile.
//!
//! Storage is one contiguous `Vec<u64>` of `rows x N`: rows `0..=level` are residues modulo
//! `q_0..q_level`, followed (for polynomials over `QP`) by one row per special prime.

use std::marker::PhantomData;

use rayon::prelude::*;
use zeroize::Zeroize;

use super::modulus::Modulus;
use super::RnsContext;

/// Marker: coefficient representation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coeff;
/// Marker: NTT (evaluation) representation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ntt;

/// An RNS polynomial over `q_0..q_level` (and optionally the special primes).
#[derive(PartialEq, Eq)]
pub struct Poly<D> {
    data: Vec<u64>,
    n: usize,
    q_rows: usize,
    p_rows: usize,
    _domain: PhantomData<fn() -> D>,
}

impl<D> std::fmt::Debug for Poly<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poly")
            .field("n", &self.n)
            .field("q_rows", &self.q_rows)
            .field("p_rows", &self.p_rows)
            .finish_non_exhaustive()
    }
}

impl<D> Clone for Poly<D> {
    fn clone(&self) -> Self {
        Self::from_raw(self.data.clone(), self.n, self.q_rows, self.p_rows)
    }

    /// Reuses the destination's buffer (no allocation when the shape fits).
    fn clone_from(&mut self, source: &Self) {
        self.data.clone_from(&source.data);
        self.n = source.n;
        self.q_rows = source.q_rows;
        self.p_rows = source.p_rows;
    }
}

impl<D> Zeroize for Poly<D> {
    fn zeroize(&mut self) {
        self.data.zeroize();
    }
}

/// Runs `f(row_index, row)` on every row, one row after another: for element-wise,
/// memory-bound work (add, multiply) that a thread hand-off makes slower, not faster
/// (`docs/benchmarks.md`, "Which CKKS ops scale with threads").
pub fn for_each_row_seq<F>(data: &mut [u64], n: usize, mut f: F)
where
    F: FnMut(usize, &mut [u64]),
{
    for (r, row) in data.chunks_exact_mut(n).enumerate() {
        f(r, row);
    }
}

/// `row[i] = coeffs[i] mod q`. When every `|c| < q` (messages and errors, far below the
/// prime) a negative value only needs `q` added, branch-free, which vectorizes; wider
/// values take the Barrett reduction one by one.
fn reduce_signed(m: Modulus, coeffs: &[i64], row: &mut [u64]) {
    let q = m.value();
    if !pulp::Arch::new().dispatch(AddQToNegatives {
        q,
        coeffs,
        row: &mut *row,
    }) {
        for (x, &c) in row.iter_mut().zip(coeffs) {
            *x = m.reduce_i64(c);
        }
    }
}

/// The fast path of [`reduce_signed`], compiled for the CPU's widest SIMD level by
/// `pulp`: true (and `row` written) when every `|c| < q`.
struct AddQToNegatives<'a> {
    q: u64,
    coeffs: &'a [i64],
    row: &'a mut [u64],
}

impl pulp::WithSimd for AddQToNegatives<'_> {
    type Output = bool;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> bool {
        let widest = self.coeffs.iter().fold(0, |a, &c| a | c.unsigned_abs());
        if widest >= self.q {
            return false;
        }
        let q = self.q as i64;
        for (x, &c) in self.row.iter_mut().zip(self.coeffs) {
            *x = (c + ((c >> 63) & q)) as u64;
        }
        true
    }
}

/// Runs `f(row_index, row)` on every row, in parallel when rayon has more than one thread.
/// Rows are independent, so results do not depend on the thread count.
pub fn for_each_row<F>(data: &mut [u64], n: usize, f: F)
where
    F: Fn(usize, &mut [u64]) + Sync + Send,
{
    if parallel() && data.len() > n {
        data.par_chunks_exact_mut(n)
            .enumerate()
            .for_each(|(r, row)| f(r, row));
    } else {
        data.chunks_exact_mut(n)
            .enumerate()
            .for_each(|(r, row)| f(r, row));
    }
}

/// Runs `f` on a per-thread scratch buffer of `len` words, reused across calls so hot
/// paths do not fault in fresh pages (or clear them) for every temporary. Its contents are
/// whatever an earlier user left: every caller writes the whole buffer before reading it.
/// Re-entrant: buffers form a per-thread stack, so nested calls (or work stolen by this
/// thread) get their own.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u64]) -> R) -> R {
    thread_local!(static POOL: std::cell::RefCell<Vec<Vec<u64>>> = const { std::cell::RefCell::new(Vec::new()) });
    let mut v = POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default();
    v.resize(len, 0);
    let r = f(&mut v);
    POOL.with(|p| p.borrow_mut().push(v));
    r
}

/// Whether to fork work onto rayon: only with more than one thread, so a one-thread run
/// never hands work to a pool thread (no cross-thread hand-off, identical results).
#[inline]
pub fn parallel() -> bool {
    rayon::current_num_threads() > 1
}

/// `rayon::join` when [`parallel`], else the two closures in order.
pub fn join<A, B, RA, RB>(a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA + Send,
    B: FnOnce() -> RB + Send,
    RA: Send,
    RB: Send,
{
    if parallel() {
        rayon::join(a, b)
    } else {
        (a(), b())
    }
}

/// Runs `f(i, item)` over `items`, in parallel when [`parallel`].
pub fn for_each_indexed<T: Send, F>(items: &mut [T], f: F)
where
    F: Fn(usize, &mut T) + Sync + Send,
{
    if parallel() {
        items
            .par_iter_mut()
            .with_max_len(1)
            .enumerate()
            .for_each(|(i, x)| f(i, x));
    } else {
        items.iter_mut().enumerate().for_each(|(i, x)| f(i, x));
    }
}

impl<D> Poly<D> {
    /// The zero polynomial at `level`, over `QP` when `with_p`.
    pub fn zero(ctx: &RnsContext, level: usize, with_p: bool) -> Self {
        let q_rows = level + 1;
        let p_rows = if with_p { ctx.np() } else { 0 };
        Self::from_raw(
            vec![0; (q_rows + p_rows) * ctx.n()],
            ctx.n(),
            q_rows,
            p_rows,
        )
    }

    /// Wraps raw residues (`(q_rows + p_rows) * n` words, each `<` its row's prime).
    pub fn from_raw(data: Vec<u64>, n: usize, q_rows: usize, p_rows: usize) -> Self {
        // Internal invariant: every constructor sizes `data` from the same three numbers.
        assert_eq!(data.len(), (q_rows + p_rows) * n, "RNS polynomial size");
        Self {
            data,
            n,
            q_rows,
            p_rows,
            _domain: PhantomData,
        }
    }

    /// The level (`#Q rows - 1`).
    #[inline]
    pub fn level(&self) -> usize {
        self.q_rows - 1
    }

    /// Number of `Q` rows.
    #[inline]
    pub fn q_rows(&self) -> usize {
        self.q_rows
    }

    /// Number of special-prime rows (0 or `#P`).
    #[inline]
    pub fn p_rows(&self) -> usize {
        self.p_rows
    }

    /// Total number of rows.
    #[inline]
    pub fn rows(&self) -> usize {
        self.q_rows + self.p_rows
    }

    /// Ring degree.
    #[inline]
    pub fn n(&self) -> usize {
        self.n
    }

    /// Global modulus index of row `r`.
    #[inline]
    pub fn modulus_index(&self, ctx: &RnsContext, r: usize) -> usize {
        ctx.modulus_index(self.q_rows, r)
    }

    /// Row `r`.
    #[inline]
    pub fn row(&self, r: usize) -> &[u64] {
        &self.data[r * self.n..(r + 1) * self.n]
    }

    /// Row `r`, mutable.
    #[inline]
    pub fn row_mut(&mut self, r: usize) -> &mut [u64] {
        &mut self.data[r * self.n..(r + 1) * self.n]
    }

    /// All residues, row after row.
    #[inline]
    pub fn data(&self) -> &[u64] {
        &self.data
    }

    /// All residues, mutable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u64] {
        &mut self.data
    }

    /// Drops the `Q` rows above `level` (a polynomial without special rows only).
    pub fn drop_to_level(&mut self, level: usize) {
        debug_assert!(self.p_rows == 0 && level < self.q_rows);
        self.q_rows = level + 1;
        self.data.truncate(self.q_rows * self.n);
    }

    /// Reinterprets the residues in the other domain (the caller transforms them).
    fn retag<E>(self) -> Poly<E> {
        Poly {
            data: self.data,
            n: self.n,
            q_rows: self.q_rows,
            p_rows: self.p_rows,
            _domain: PhantomData,
        }
    }

    /// `self += other` row-wise (same shape; valid in either domain).
    pub fn add_assign(&mut self, ctx: &RnsContext, other: &Self) {
        debug_assert_eq!(self.data.len(), other.data.len());
        let q_rows = self.q_rows;
        let n = self.n;
        for_each_row_seq(&mut self.data, n, |r, row| {
            let m = ctx.moduli()[ctx.modulus_index(q_rows, r)];
            for (x, &y) in row.iter_mut().zip(&other.data[r * n..(r + 1) * n]) {
                *x = m.add(*x, y);
            }
        });
    }

    /// `self -= other` row-wise.
    pub fn sub_assign(&mut self, ctx: &RnsContext, other: &Self) {
        debug_assert_eq!(self.data.len(), other.data.len());
        let q_rows = self.q_rows;
        let n = self.n;
        for_each_row_seq(&mut self.data, n, |r, row| {
            let m = ctx.moduli()[ctx.modulus_index(q_rows, r)];
            for (x, &y) in row.iter_mut().zip(&other.data[r * n..(r + 1) * n]) {
                *x = m.sub(*x, y);
            }
        });
    }

    /// `self = -self`.
    pub fn neg_assign(&mut self, ctx: &RnsContext) {
        let q_rows = self.q_rows;
        for_each_row_seq(&mut self.data, self.n, |r, row| {
            let m = ctx.moduli()[ctx.modulus_index(q_rows, r)];
            row.iter_mut().for_each(|x| *x = m.neg(*x));
        });
    }

    /// `self *= c` for a small signed integer constant, per row.
    pub fn mul_scalar_assign(&mut self, ctx: &RnsContext, c: &[u64]) {
        let q_rows = self.q_rows;
        for_each_row_seq(&mut self.data, self.n, |r, row| {
            let m = ctx.moduli()[ctx.modulus_index(q_rows, r)];
            let (w, ws) = (c[r], m.shoup(c[r]));
            row.iter_mut().for_each(|x| *x = m.mul_shoup(*x, w, ws));
        });
    }
}

impl Poly<Coeff> {
    /// Reduces signed integer coefficients into every row of a new polynomial.
    pub fn from_signed(ctx: &RnsContext, coeffs: &[i64], level: usize, with_p: bool) -> Self {
        let mut p = Self::zero(ctx, level, with_p);
        let q_rows = p.q_rows;
        for_each_row(&mut p.data, ctx.n(), |r, row| {
            reduce_signed(ctx.moduli()[ctx.modulus_index(q_rows, r)], coeffs, row);
        });
        p
    }

    /// Forward NTT of every row.
    pub fn into_ntt(mut self, ctx: &RnsContext) -> Poly<Ntt> {
        let q_rows = self.q_rows;
        for_each_row(&mut self.data, self.n, |r, row| {
            ctx.plan(ctx.modulus_index(q_rows, r)).forward(row)
        });
        self.retag()
    }
}

impl Poly<Ntt> {
    /// Overwrites `self` with the NTT of signed integer coefficients (reusing its buffer).
    pub fn assign_signed(&mut self, ctx: &RnsContext, coeffs: &[i64]) {
        let q_rows = self.q_rows;
        for_each_row(&mut self.data, ctx.n(), |r, row| {
            let idx = ctx.modulus_index(q_rows, r);
            reduce_signed(ctx.moduli()[idx], coeffs, row);
            ctx.plan(idx).forward(row);
        });
    }

    /// Inverse NTT of every row.
    pub fn into_coeff(mut self, ctx: &RnsContext) -> Poly<Coeff> {
        let q_rows = self.q_rows;
        for_each_row(&mut self.data, self.n, |r, row| {
            ctx.plan(ctx.modulus_index(q_rows, r)).backward(row)
        });
        self.retag()
    }

    /// `self *= other` pointwise.
    pub fn mul_assign(&mut self, ctx: &RnsContext, other: &Self) {
        debug_assert_eq!(self.data.len(), other.data.len());
        let (q_rows, n) = (self.q_rows, self.n);
        for_each_row_seq(&mut self.data, n, |r, row| {
            let m = ctx.moduli()[ctx.modulus_index(q_rows, r)];
            for (x, &y) in row.iter_mut().zip(&other.data[r * n..(r + 1) * n]) {
                *x = m.mul(*x, y);
            }
        });
    }

    /// `self *= other` pointwise, using the first `self.rows()` rows of `other` (which may
    /// be at a higher level or carry special rows; only for `self` without special rows).
    pub fn mul_assign_prefix(&mut self, ctx: &RnsContext, other: &Self) {
        debug_assert!(other.q_rows >= self.q_rows && self.p_rows == 0);
        let n = self.n;
        for_each_row_seq(&mut self.data, n, |r, row| {
            let m = ctx.moduli()[r];
            for (x, &y) in row.iter_mut().zip(other.row(r)) {
                *x = m.mul(*x, y);
            }
        });
    }

    /// `self += a * b` pointwise, using the first `self.rows()` rows of `a` and `b` (which
    /// may be at a higher level; only for polynomials without special rows).
    pub fn mul_add_assign(&mut self, ctx: &RnsContext, a: &Self, b: &Self) {
        debug_assert!(a.q_rows >= self.q_rows && b.q_rows >= self.q_rows && self.p_rows == 0);
        let n = self.n;
        for_each_row_seq(&mut self.data, n, |r, row| {
            ctx.plan(r).mul_add(row, a.row(r), b.row(r))
        });
    }

    /// Copies of the first `level + 1` `Q` rows of a polynomial over `Q` or `QP`.
    pub fn q_part(&self, level: usize) -> Poly<Ntt> {
        debug_assert!(level < self.q_rows);
        Poly::from_raw(
            self.data[..(level + 1) * self.n].to_vec(),
            self.n,
            level + 1,
            0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntt_round_trip_and_product_over_rns() {
        let primes = crate::ring::modulus::generate_ntt_primes(5, &[36, 36, 60]).unwrap();
        let ctx = RnsContext::new(5, &primes[..2], &primes[2..]).unwrap();
        let a: Vec<i64> = (0..32).map(|i| i * 3 - 40).collect();
        let mut b = vec![0i64; 32];
        b[1] = 1; // b = X: multiplication shifts negacyclically
        let pa = Poly::from_signed(&ctx, &a, 1, true);
        let pb = Poly::from_signed(&ctx, &b, 1, true);
        assert_eq!(pa.clone().into_ntt(&ctx).into_coeff(&ctx), pa);
        let mut prod = pa.into_ntt(&ctx);
        prod.mul_assign(&ctx, &pb.into_ntt(&ctx));
        let prod = prod.into_coeff(&ctx);
        for r in 0..prod.rows() {
            let m: Modulus = ctx.moduli()[prod.modulus_index(&ctx, r)];
            assert_eq!(m.center(prod.row(r)[0]), -a[31]);
            for i in 1..32 {
                assert_eq!(m.center(prod.row(r)[i]), a[i - 1]);
            }
        }
    }

    #[test]
    fn signed_coefficients_reduce_alike_on_the_fast_and_the_barrett_path() {
        let q = crate::ring::modulus::generate_ntt_primes(5, &[40]).unwrap()[0];
        let m = Modulus::new(q);
        let qi = q as i64;
        // Below q (the branch-free path), then with one value past q (Barrett for all).
        let small = vec![0, 1, -1, qi - 1, -(qi - 1), 12345, -54321];
        let mut wide = small.clone();
        wide.push(i64::MIN + 1);
        wide.push(i64::MAX);
        for coeffs in [small, wide] {
            let mut row = vec![0; coeffs.len()];
            reduce_signed(m, &coeffs, &mut row);
            for (&x, &c) in row.iter().zip(&coeffs) {
                assert_eq!(x as i128, i128::from(c).rem_euclid(i128::from(qi)), "{c}");
            }
        }
    }
}
