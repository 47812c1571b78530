//! Inner kernels: dequantization, quantized x f32 dot products and an f32 "A times B
//! transposed" tile product, with AVX2+FMA versions (and an AVX-512 tile product) picked
//! at run time and scalar versions everywhere else (and as the tests' oracle).
//!
//! The AVX2 dequantization computes `q * d + m` with a separate multiply and add, so it
//! is bit-identical to the scalar one; the dot products use the same weights but sum in
//! another order (f32 rounding differences only). The K-quants' dot products multiply
//! bytes: the activations go as three 8-bit limbs that carry them to f32 precision
//! (see the `limbs` module).

use crate::quant::{self, Format, BLOCK};

mod limbs;

pub use limbs::Activation;

/// True when the CPU has AVX2, FMA and F16C (checked once).
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

/// True when the CPU also has AVX-512F and VL (checked once).
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        has_avx2() && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl")
    })
}

/// Dequantizes one row into `out`; `bytes.len() == format.row_bytes(out.len())`.
pub fn dequantize_row(format: Format, bytes: &[u8], out: &mut [f32]) {
    debug_assert_eq!(bytes.len(), format.row_bytes(out.len()));
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && format != Format::F32 && format != Format::F16 {
        // SAFETY: the CPU supports avx2, fma and f16c (checked above); the lengths
        // match (debug-asserted above, guaranteed by every caller via `row_bytes`), and
        // the kernels index only inside `bytes` and `out` by whole blocks.
        unsafe { avx2::dequantize_row(format, bytes, out) };
        return;
    }
    quant::dequantize_row(format, bytes, out);
}

/// `sum_i a[i] * b[i]` over equal-length slices.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: avx2+fma checked; the kernel reads min(len) elements of each slice.
        return unsafe { avx2::dot(a, b) };
    }
    dot_scalar(a, b)
}

/// Scalar dot product with eight partial sums (also the oracle in tests).
pub fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Dot product of one quantized row with `x`, reading the blocks directly.
///
/// `act` is `x` prepared by [`Activation::new`] (block sums for Q4_1 and Q4_K, limbs for
/// the K-quants); `scratch` has `x.len()` elements and serves formats without a direct
/// kernel.
pub fn dot_row(
    format: Format,
    row: &[u8],
    x: &[f32],
    act: &Activation,
    scratch: &mut [f32],
) -> f32 {
    debug_assert_eq!(row.len(), format.row_bytes(x.len()));
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        let xsum = &act.sums;
        match format {
            // SAFETY: avx2+fma+f16c checked; `row` holds x.len()/32 whole blocks and
            // `xsum` one sum per block (callers size both from the matrix shape).
            Format::Q4_1 => return unsafe { avx2::dot_q4_1(row, x, xsum) },
            // SAFETY: as above, `row` holds x.len()/32 whole Q8_0 blocks.
            Format::Q8_0 => return unsafe { avx2::dot_q8_0(row, x) },
            // SAFETY: as above, `row` holds x.len()/32 whole Q5_0 blocks.
            Format::Q5_0 => return unsafe { avx2::dot_q5_0(row, x) },
            // SAFETY: as above, `row` holds x.len()/256 whole Q4_K super-blocks, and
            // `act` the limbs, scales and sums of as many.
            Format::Q4K if act.has_limbs() => return unsafe { limbs::avx2::dot_q4_k(row, act) },
            // SAFETY: as above, `row` holds x.len()/256 whole Q6_K super-blocks.
            Format::Q6K if act.has_limbs() => return unsafe { limbs::avx2::dot_q6_k(row, act) },
            // No direct kernel: dequantize into scratch, then dot.
            _ => {}
        }
    }
    dequantize_row(format, row, scratch);
    dot(scratch, x)
}

/// Tile product `out_t[j * n + t] = dot(x[t], w[j])` for `n` rows of `x` and `r` rows of
/// `w`, all of length `k` (row-major): `out_t` is `r x n`. The row-major kernel (AVX2 or
/// scalar); [`gemm`] picks the fastest layout for the CPU.
///
/// # Panics
/// When the slices are shorter than those shapes (the scalar path indexes them).
pub fn gemm_nt(x: &[f32], n: usize, w: &[f32], r: usize, k: usize, out_t: &mut [f32]) {
    let fits = x.len() == n * k && w.len() == r * k && out_t.len() == r * n;
    debug_assert!(fits);
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && fits {
        // SAFETY: avx2+fma checked; the slice lengths are exactly n*k, r*k and r*n
        // (checked just above), and the kernel reads rows by those strides only.
        unsafe { avx2::gemm_nt(x, n, w, r, k, out_t) };
        return;
    }
    for j in 0..r {
        for t in 0..n {
            out_t[j * n + t] = dot_scalar(&x[t * k..(t + 1) * k], &w[j * k..(j + 1) * k]);
        }
    }
}

/// The activations of a tile product (`n` tokens of `k` values), laid out once per
/// product for the CPU's kernel: transposed to `k x n` where AVX-512 runs the broadcast
/// kernel ([`gemm`]), as given elsewhere.
pub struct TileInput<'a> {
    data: std::borrow::Cow<'a, [f32]>,
    n: usize,
    k: usize,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    transposed: bool,
}

impl<'a> TileInput<'a> {
    /// Lays out `x` (`n x k`, row-major) for [`gemm`].
    ///
    /// # Panics
    /// When `x.len() != n * k`.
    pub fn new(x: &'a [f32], n: usize, k: usize) -> Self {
        assert_eq!(x.len(), n * k, "tile input is not n x k");
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            let mut xt = vec![0.0f32; n * k];
            transpose_par(x, n, k, &mut xt);
            return Self {
                data: xt.into(),
                n,
                k,
                transposed: true,
            };
        }
        Self {
            data: x.into(),
            n,
            k,
            transposed: false,
        }
    }
}

/// Columns of `src` per parallel task of [`transpose_par`].
const TRANSPOSE_BAND: usize = 64;

/// `dst[c * rows + r] = src[r * cols + c]`: `src` (`rows x cols`, row-major) transposed,
/// in parallel bands of columns.
///
/// # Panics
/// When either slice is not `rows x cols`.
pub fn transpose_par(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    use rayon::prelude::*;
    assert!(
        src.len() == rows * cols && dst.len() == rows * cols,
        "transpose shapes"
    );
    if rows == 0 {
        return;
    }
    dst.par_chunks_mut(TRANSPOSE_BAND * rows)
        .enumerate()
        .for_each(|(b, band)| transpose_band(src, rows, cols, b * TRANSPOSE_BAND, band));
}

/// Rows `c0..c0 + band.len() / rows` of `src` transposed into `band`.
fn transpose_band(src: &[f32], rows: usize, cols: usize, c0: usize, band: &mut [f32]) {
    let width = band.len() / rows;
    let (mut r8, mut w8) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        (r8, w8) = (rows - rows % 8, width - width % 8);
        for r in (0..r8).step_by(8) {
            for c in (0..w8).step_by(8) {
                // SAFETY: avx2 checked; rows r..r+8 < rows and columns c0+c..c0+c+8 <=
                // cols of src, and band rows c..c+8 < width, columns r..r+8 < rows.
                unsafe { avx2::transpose8(src, cols, r, c0 + c, band, rows, c, r) };
            }
        }
    }
    // Edges (everything without AVX2): rows past r8 for all columns, and columns past w8.
    for c in 0..width {
        let from = if c < w8 { r8 } else { 0 };
        for r in from..rows {
            band[c * rows + r] = src[r * cols + c0 + c];
        }
    }
}

/// Tile product `out_t[j * n + t] = dot(x[t], w[j])` for the `n` tokens of `x` and `r`
/// rows of `w` (row-major, `r x k`): `out_t` is `r x n`.
///
/// # Panics
/// When `w` or `out_t` do not have those shapes.
pub fn gemm(x: &TileInput<'_>, w: &[f32], r: usize, out_t: &mut [f32]) {
    let (n, k) = (x.n, x.k);
    assert!(
        w.len() == r * k && out_t.len() == r * n,
        "tile product shapes"
    );
    #[cfg(target_arch = "x86_64")]
    if x.transposed {
        // SAFETY: `transposed` is only set where avx512f+vl, avx2 and fma were detected;
        // `x.data` is `k x n`, `w` is `r x k` and `out_t` is `r x n` (asserted above).
        unsafe { avx512::gemm_xt(&x.data, n, w, r, k, out_t) };
        return;
    }
    gemm_nt(&x.data, n, w, r, k, out_t);
}

/// Columns per pass of the tile products: 48 rows of 1024 f32 are 192 KiB, so the tile's
/// chunk stays in L2 while all tokens pass over it (the rows of a down projection are
/// 8960 long), and so do the transposed tokens' 1024 columns in the AVX-512 kernel.
#[cfg(target_arch = "x86_64")]
const GEMM_KC: usize = 1024;

/// The register-blocked tile product's body, `$t` rows of `x` against `$r` rows of `w`
/// per step (`$t * $r` accumulators of 8 lanes), for the target-feature function that
/// expands it (its 16 registers decide the block).
/// Columns go in chunks of [`GEMM_KC`]; blocks' tails past a multiple of 8 columns, and
/// rows or tokens outside the blocks, go through [`dot`](avx2::dot).
#[cfg(target_arch = "x86_64")]
macro_rules! tile_product {
    ($x:ident, $n:ident, $w:ident, $r:ident, $k:ident, $out:ident, $t:literal, $rows:literal) => {{
        use std::arch::x86_64::*;
        let (x, n, w, r, k, out_t) = ($x, $n, $w, $r, $k, $out);
        let k8 = k - k % 8;
        let (px, pw) = (x.as_ptr(), w.as_ptr());
        let tail =
            |t: usize, j: usize| -> f32 { (k8..k).map(|i| x[t * k + i] * w[j * k + i]).sum() };
        let (nb, rb) = (n - n % $t, r - r % $rows);
        for t in (0..nb).step_by($t) {
            for j in (0..rb).step_by($rows) {
                for a in 0..$t {
                    for b in 0..$rows {
                        out_t[(j + b) * n + t + a] = tail(t + a, j + b);
                    }
                }
            }
        }
        // Columns in chunks of `GEMM_KC`, so the chunk of the tile's rows (and of the
        // block's tokens) stays in L2 while every block passes over it.
        for c0 in (0..k8).step_by(GEMM_KC) {
            let c1 = (c0 + GEMM_KC).min(k8);
            for t in (0..nb).step_by($t) {
                for j in (0..rb).step_by($rows) {
                    let mut acc = [[_mm256_setzero_ps(); $rows]; $t];
                    for i in (c0..c1).step_by(8) {
                        // SAFETY: rows t..t+$t of x and j..j+$rows of w exist (loop
                        // bounds) and i + 8 <= k8 <= k, so every load stays in its row.
                        unsafe {
                            let wv: [__m256; $rows] =
                                std::array::from_fn(|b| _mm256_loadu_ps(pw.add((j + b) * k + i)));
                            for (a, acc_a) in acc.iter_mut().enumerate() {
                                let xv = _mm256_loadu_ps(px.add((t + a) * k + i));
                                for (b, acc_ab) in acc_a.iter_mut().enumerate() {
                                    *acc_ab = _mm256_fmadd_ps(xv, wv[b], *acc_ab);
                                }
                            }
                        }
                    }
                    for (a, acc_a) in acc.iter().enumerate() {
                        for (b, acc_ab) in acc_a.iter().enumerate() {
                            // SAFETY: the expanding function enables avx2.
                            out_t[(j + b) * n + t + a] += unsafe { avx2::hsum(*acc_ab) };
                        }
                    }
                }
            }
        }
        // SAFETY (both loops): the expanding function enables avx2 and fma; rows t of x
        // and j of w exist.
        let dot = |t: usize, j: usize| unsafe {
            avx2::dot(&x[t * k..(t + 1) * k], &w[j * k..(j + 1) * k])
        };
        for t in 0..nb {
            for j in rb..r {
                out_t[j * n + t] = dot(t, j);
            }
        }
        for t in nb..n {
            for j in 0..r {
                out_t[j * n + t] = dot(t, j);
            }
        }
    }};
}

/// The tile product where the CPU has AVX-512: activations transposed (`k x n`), so the
/// accumulators run along the tokens. Each step loads two 16-token vectors and
/// broadcasts one weight per row to 12 rows: 24 FMAs of 16 lanes for 14 loads, no
/// horizontal sums, and whole-vector stores into `out_t`'s rows (the row-major kernel
/// pays a horizontal sum per accumulator and loads two operands per FMA pair;
/// docs/benchmarks.md compares them).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::GEMM_KC;
    use std::arch::x86_64::*;

    /// Weight rows per block (24 accumulators of the 32 registers).
    const ROWS: usize = 12;
    /// Tokens per block: two vectors of 16.
    const TOKENS: usize = 32;

    /// The lanes of a 16-token vector that hold one of the `left` tokens still to go.
    fn lanes(left: usize) -> __mmask16 {
        if left >= 16 {
            0xffff
        } else {
            ((1u32 << left) - 1) as __mmask16
        }
    }

    /// `out_t[j * n + t] = sum_i w[j * k + i] xt[i * n + t]` (`xt` is `k x n`, `w`
    /// `r x k`, `out_t` `r x n`), columns in chunks of [`GEMM_KC`].
    ///
    /// # Safety
    /// The CPU has avx512f+vl, avx2 and fma, and the slices have exactly those lengths.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    pub(super) unsafe fn gemm_xt(
        xt: &[f32],
        n: usize,
        w: &[f32],
        r: usize,
        k: usize,
        out_t: &mut [f32],
    ) {
        debug_assert!(xt.len() == n * k && w.len() == r * k && out_t.len() == r * n);
        out_t.fill(0.0);
        for c0 in (0..k).step_by(GEMM_KC) {
            let c1 = (c0 + GEMM_KC).min(k);
            for j in (0..r).step_by(ROWS) {
                let rows = (r - j).min(ROWS);
                for t in (0..n).step_by(TOKENS) {
                    let left = n - t;
                    let (m0, m1) = (lanes(left), lanes(left.saturating_sub(16)));
                    let at = Block {
                        xt,
                        n,
                        w,
                        k,
                        j,
                        t,
                        c0,
                        c1,
                        m0,
                        m1,
                    };
                    macro_rules! rows {
                        ($($b:literal)*) => {
                            match (rows, left > 16) {
                                // SAFETY: the features are this function's; rows j..j+b
                                // of w and of out_t exist, and columns c0..c1 of xt.
                                $(($b, true) => unsafe { at.run::<$b, 2>(out_t) },
                                ($b, false) => unsafe { at.run::<$b, 1>(out_t) },)*
                                _ => unreachable!("rows is 1..=ROWS"),
                            }
                        };
                    }
                    rows!(1 2 3 4 5 6 7 8 9 10 11 12);
                }
            }
        }
    }

    /// One block of [`gemm_xt`]: rows `j..j + B` of `w`, tokens `t..t + 16 A` (lanes
    /// past `n` masked), columns `c0..c1`, added into `out_t`.
    #[derive(Clone, Copy)]
    struct Block<'s> {
        xt: &'s [f32],
        n: usize,
        w: &'s [f32],
        k: usize,
        j: usize,
        t: usize,
        c0: usize,
        c1: usize,
        m0: __mmask16,
        m1: __mmask16,
    }

    impl Block<'_> {
        /// # Safety
        /// As [`gemm_xt`], and `j + B <= r`, `t < n`, `c1 <= k`.
        #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
        unsafe fn run<const B: usize, const A: usize>(&self, out_t: &mut [f32]) {
            let Block {
                xt,
                n,
                w,
                k,
                j,
                t,
                c0,
                c1,
                m0,
                m1,
            } = *self;
            let masks = [m0, m1];
            let (px, pw) = (xt.as_ptr(), w.as_ptr());
            let mut acc = [[_mm512_setzero_ps(); A]; B];
            for i in c0..c1 {
                // `wrapping_add`: a masked lane may point past the slice; it is never read.
                let xv: [__m512; A] = std::array::from_fn(|a| {
                    // SAFETY: the unmasked lanes are tokens t + 16a + l < n of row i < k.
                    unsafe { _mm512_maskz_loadu_ps(masks[a], px.wrapping_add(i * n + t + 16 * a)) }
                });
                for (b, acc_b) in acc.iter_mut().enumerate() {
                    // SAFETY: row j + b < r and column i < k of w.
                    let wb = _mm512_set1_ps(unsafe { *pw.add((j + b) * k + i) });
                    for (acc_ba, x) in acc_b.iter_mut().zip(xv) {
                        *acc_ba = _mm512_fmadd_ps(wb, x, *acc_ba);
                    }
                }
            }
            let po = out_t.as_mut_ptr();
            for (b, acc_b) in acc.iter().enumerate() {
                for (a, acc_ba) in acc_b.iter().enumerate() {
                    let p = po.wrapping_add((j + b) * n + t + 16 * a);
                    // SAFETY: the unmasked lanes are tokens < n of row j + b < r.
                    unsafe {
                        let sum = _mm512_add_ps(_mm512_maskz_loadu_ps(masks[a], p), *acc_ba);
                        _mm512_mask_storeu_ps(p, masks[a], sum);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use crate::quant::{Q4_1_BYTES, Q8_0_BYTES};
    use std::arch::x86_64::*;

    /// The 8 x 8 block of `src` (row stride `s_stride`) at `(sr, sc)`, transposed into
    /// `dst` (row stride `d_stride`) at `(dr, dc)`: three rounds of unpacks, shuffles
    /// and lane swaps.
    ///
    /// # Safety
    /// AVX2 is present; both blocks lie inside their slices.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn transpose8(
        src: &[f32],
        s_stride: usize,
        sr: usize,
        sc: usize,
        dst: &mut [f32],
        d_stride: usize,
        dr: usize,
        dc: usize,
    ) {
        debug_assert!((sr + 7) * s_stride + sc + 8 <= src.len());
        debug_assert!((dr + 7) * d_stride + dc + 8 <= dst.len());
        let (ps, pd) = (src.as_ptr(), dst.as_mut_ptr());
        // SAFETY: the caller keeps all eight rows of both blocks inside the slices.
        let r: [__m256; 8] =
            std::array::from_fn(|i| unsafe { _mm256_loadu_ps(ps.add((sr + i) * s_stride + sc)) });
        let t: [__m256; 8] = std::array::from_fn(|i| {
            let (a, b) = (r[i & !1], r[i | 1]);
            if i % 2 == 0 {
                _mm256_unpacklo_ps(a, b)
            } else {
                _mm256_unpackhi_ps(a, b)
            }
        });
        // u[4h + 2q + p]: from t[4h + q] and t[4h + q + 2], low (p = 0) or high pairs.
        let u: [__m256; 8] = std::array::from_fn(|i| {
            let (h, q, p) = (i / 4, (i / 2) % 2, i % 2);
            let (a, b) = (t[4 * h + q], t[4 * h + q + 2]);
            if p == 0 {
                _mm256_shuffle_ps::<0x44>(a, b)
            } else {
                _mm256_shuffle_ps::<0xee>(a, b)
            }
        });
        for i in 0..8 {
            // u[j] holds column j (low lane) and j + 4 (high lane) of rows 0..4, u[4 + j]
            // the same of rows 4..8: output row i joins their lanes.
            let j = i % 4;
            let v = if i < 4 {
                _mm256_permute2f128_ps::<0x20>(u[j], u[4 + j])
            } else {
                _mm256_permute2f128_ps::<0x31>(u[j], u[4 + j])
            };
            // SAFETY: as above.
            unsafe { _mm256_storeu_ps(pd.add((dr + i) * d_stride + dc), v) };
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// The f16 at `p` as f32 (F16C).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn half(p: *const u8) -> f32 {
        // SAFETY: the caller points at two readable bytes.
        let h = unsafe { p.cast::<u16>().read_unaligned() };
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h))))
    }

    /// The 32 Q4_1 nibbles of the block at `b` as four f32 vectors (weights 0..8,
    /// 8..16, 16..24, 24..32), not yet scaled.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_nibbles(b: *const u8) -> [__m256; 4] {
        // SAFETY: the caller points at a whole 20-byte block; the 16 nibble bytes start
        // at offset 4.
        let q = unsafe { _mm_loadu_si128(b.add(4).cast()) };
        let mask = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(q, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
        let cvt = |v: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
        [
            cvt(lo),
            cvt(_mm_srli_si128(lo, 8)),
            cvt(hi),
            cvt(_mm_srli_si128(hi, 8)),
        ]
    }

    /// The 32 Q8_0 quants of the block at `b` as four f32 vectors, not yet scaled.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q8_values(b: *const u8) -> [__m256; 4] {
        // SAFETY: the caller points at a whole 34-byte block; quants start at offset 2.
        let (a, c) = unsafe {
            (
                _mm_loadu_si128(b.add(2).cast()),
                _mm_loadu_si128(b.add(18).cast()),
            )
        };
        let cvt = |v: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
        [
            cvt(a),
            cvt(_mm_srli_si128(a, 8)),
            cvt(c),
            cvt(_mm_srli_si128(c, 8)),
        ]
    }

    /// The 32 Q5_0 values `q - 16` of the block at `b` as four f32 vectors (weights
    /// 0..8, 8..16, 16..24, 24..32), not yet scaled: the nibbles as in Q4_1 (offset 6),
    /// each widened by its fifth bit from `qh`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q5_values(p: *const u8) -> [__m256; 4] {
        // Byte j of a spread vector holds qh's byte j / 8; bit j % 8 of it is weight j's.
        let spread_lo = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
        let spread_hi = _mm_setr_epi8(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
        let bit = _mm_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
        let (mask, sixteen) = (_mm_set1_epi8(0x0f), _mm_set1_epi8(0x10));
        let offset = _mm256_set1_ps(16.0);
        // SAFETY: the caller points at a whole 22-byte block (qh at 2, nibbles at 6..22).
        let (qh, q) = unsafe {
            (
                _mm_set1_epi32(p.add(2).cast::<i32>().read_unaligned()),
                _mm_loadu_si128(p.add(6).cast()),
            )
        };
        let high = |spread| {
            let s = _mm_and_si128(_mm_shuffle_epi8(qh, spread), bit);
            _mm_and_si128(_mm_cmpeq_epi8(s, bit), sixteen)
        };
        let lo = _mm_or_si128(_mm_and_si128(q, mask), high(spread_lo));
        let hi = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(q, 4), mask), high(spread_hi));
        // q - 16 is exact in f32, as the scalar integer subtraction is.
        let cvt = |v: __m128i| _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)), offset);
        [
            cvt(lo),
            cvt(_mm_srli_si128(lo, 8)),
            cvt(hi),
            cvt(_mm_srli_si128(hi, 8)),
        ]
    }

    /// Dequantizes Q5_0 blocks: `(q - 16) * d`, the scalar code's f32 operations.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dequantize_q5_0(bytes: &[u8], out: &mut [f32]) {
        for (o, b) in out
            .chunks_exact_mut(BLOCK)
            .zip(bytes.chunks_exact(crate::quant::Q5_0_BYTES))
        {
            let p = b.as_ptr();
            // SAFETY: `b` is one whole 22-byte block and `o` 32 floats (chunks_exact).
            unsafe {
                let d = _mm256_set1_ps(half(p));
                for (i, vi) in q5_values(p).iter().enumerate() {
                    _mm256_storeu_ps(o.as_mut_ptr().add(8 * i), _mm256_mul_ps(*vi, d));
                }
            }
        }
    }

    /// Dot product of a Q5_0 row with `x`, reading the blocks directly.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_q5_0(row: &[u8], x: &[f32]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (b, xb) in row
            .chunks_exact(crate::quant::Q5_0_BYTES)
            .zip(x.chunks_exact(BLOCK))
        {
            let (p, px) = (b.as_ptr(), xb.as_ptr());
            // SAFETY: `b` is a whole block and `xb` 32 floats (chunks_exact).
            unsafe {
                let v = q5_values(p);
                let mut blk = _mm256_mul_ps(v[0], _mm256_loadu_ps(px));
                blk = _mm256_fmadd_ps(v[1], _mm256_loadu_ps(px.add(8)), blk);
                blk = _mm256_fmadd_ps(v[2], _mm256_loadu_ps(px.add(16)), blk);
                blk = _mm256_fmadd_ps(v[3], _mm256_loadu_ps(px.add(24)), blk);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(half(p)), blk, acc);
            }
        }
        // SAFETY: avx2 enabled in this function.
        unsafe { hsum(acc) }
    }

    /// Eight bytes at `p` widened to eight i32 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn widen8(p: *const u8) -> __m256i {
        // SAFETY: the caller points at eight readable bytes.
        unsafe { _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast())) }
    }

    /// Dequantizes Q4_K super-blocks with the scalar code's operations: per sub-block
    /// `d1 = d * scale`, `m1 = dmin * min` in f32, then `d1 * q - m1` (multiply, then
    /// subtract; no fused multiply-add, so the results are bit-identical).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dequantize_q4_k(bytes: &[u8], out: &mut [f32]) {
        let mask = _mm256_set1_epi32(0x0f);
        for (o, b) in out
            .chunks_exact_mut(quant::SUPER_BLOCK)
            .zip(bytes.chunks_exact(quant::Q4_K_BYTES))
        {
            let (d, dmin) = (quant::f16_to_f32(u16::from_le_bytes([b[0], b[1]])), {
                quant::f16_to_f32(u16::from_le_bytes([b[2], b[3]]))
            });
            let scales = &b[4..16];
            for k in 0..4 {
                let (sc1, m1) = quant::q4_k_scale_min(2 * k, scales);
                let (sc2, m2) = quant::q4_k_scale_min(2 * k + 1, scales);
                let d1 = _mm256_set1_ps(d * f32::from(sc1));
                let min1 = _mm256_set1_ps(dmin * f32::from(m1));
                let d2 = _mm256_set1_ps(d * f32::from(sc2));
                let min2 = _mm256_set1_ps(dmin * f32::from(m2));
                for c in 0..4 {
                    // SAFETY: bytes 16 + 32k + 8c .. + 8 lie inside the 144-byte block;
                    // outputs 64k + 8c (+ 32) .. + 8 inside the 256 of `o`.
                    unsafe {
                        let q = widen8(b.as_ptr().add(16 + 32 * k + 8 * c));
                        let lo = _mm256_cvtepi32_ps(_mm256_and_si256(q, mask));
                        let hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(q, 4));
                        let base = o.as_mut_ptr().add(64 * k + 8 * c);
                        _mm256_storeu_ps(base, _mm256_sub_ps(_mm256_mul_ps(d1, lo), min1));
                        _mm256_storeu_ps(base.add(32), _mm256_sub_ps(_mm256_mul_ps(d2, hi), min2));
                    }
                }
            }
        }
    }

    /// Dequantizes Q6_K super-blocks with the scalar code's operations: `d * scale` in
    /// f32, then times `q - 32`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dequantize_q6_k(bytes: &[u8], out: &mut [f32]) {
        let (mask4, mask2) = (_mm256_set1_epi32(0x0f), _mm256_set1_epi32(3));
        let thirty_two = _mm256_set1_epi32(32);
        for (o, b) in out
            .chunks_exact_mut(quant::SUPER_BLOCK)
            .zip(bytes.chunks_exact(quant::Q6_K_BYTES))
        {
            let d = quant::f16_to_f32(u16::from_le_bytes([b[208], b[209]]));
            let scales = &b[192..208];
            for half in 0..2 {
                for c in 0..4 {
                    let l = 8 * c;
                    // SAFETY: ql bytes 64 half + l (+ 32) .. + 8 lie in 0..128, qh bytes
                    // 128 + 32 half + l .. + 8 in 128..192; outputs 128 half + l + 32 g
                    // .. + 8 inside the 256 of `o`.
                    unsafe {
                        let p = b.as_ptr();
                        let qa = widen8(p.add(64 * half + l));
                        let qb = widen8(p.add(64 * half + l + 32));
                        let h = widen8(p.add(128 + 32 * half + l));
                        let high = |shift| {
                            _mm256_slli_epi32(
                                _mm256_and_si256(
                                    _mm256_srlv_epi32(h, _mm256_set1_epi32(shift)),
                                    mask2,
                                ),
                                4,
                            )
                        };
                        let q = [
                            _mm256_or_si256(_mm256_and_si256(qa, mask4), high(0)),
                            _mm256_or_si256(_mm256_and_si256(qb, mask4), high(2)),
                            _mm256_or_si256(_mm256_srli_epi32(qa, 4), high(4)),
                            _mm256_or_si256(_mm256_srli_epi32(qb, 4), high(6)),
                        ];
                        for (g, qg) in q.iter().enumerate() {
                            let scale = f32::from(scales[8 * half + 2 * g + l / 16] as i8);
                            let ds = _mm256_set1_ps(d * scale);
                            let v = _mm256_cvtepi32_ps(_mm256_sub_epi32(*qg, thirty_two));
                            _mm256_storeu_ps(
                                o.as_mut_ptr().add(128 * half + l + 32 * g),
                                _mm256_mul_ps(ds, v),
                            );
                        }
                    }
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dequantize_row(format: Format, bytes: &[u8], out: &mut [f32]) {
        // SAFETY (all three): the caller's guarantees (whole blocks) carry over.
        match format {
            Format::Q5_0 => return unsafe { dequantize_q5_0(bytes, out) },
            Format::Q4K => return unsafe { dequantize_q4_k(bytes, out) },
            Format::Q6K => return unsafe { dequantize_q6_k(bytes, out) },
            _ => {}
        }
        let (block_bytes, q4) = match format {
            Format::Q4_1 => (Q4_1_BYTES, true),
            _ => (Q8_0_BYTES, false),
        };
        for (o, b) in out
            .chunks_exact_mut(BLOCK)
            .zip(bytes.chunks_exact(block_bytes))
        {
            let p = b.as_ptr();
            // SAFETY: `b` is one whole block and `o` 32 floats (chunks_exact).
            unsafe {
                let d = _mm256_set1_ps(half(p));
                let (v, m) = if q4 {
                    (q4_nibbles(p), _mm256_set1_ps(half(p.add(2))))
                } else {
                    (q8_values(p), _mm256_setzero_ps())
                };
                for (i, vi) in v.iter().enumerate() {
                    let w = _mm256_mul_ps(*vi, d);
                    let w = if q4 { _mm256_add_ps(w, m) } else { w };
                    _mm256_storeu_ps(o.as_mut_ptr().add(8 * i), w);
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: every load reads 8 floats at i < n - 7 (or 32 at i < n - 31).
        unsafe {
            while i + 32 <= n {
                for (j, acc_j) in acc.iter_mut().enumerate() {
                    let x = _mm256_loadu_ps(pa.add(i + 8 * j));
                    let y = _mm256_loadu_ps(pb.add(i + 8 * j));
                    *acc_j = _mm256_fmadd_ps(x, y, *acc_j);
                }
                i += 32;
            }
            while i + 8 <= n {
                acc[0] = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i)),
                    _mm256_loadu_ps(pb.add(i)),
                    acc[0],
                );
                i += 8;
            }
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        // SAFETY: avx2 enabled in this function.
        let mut total = unsafe { hsum(s) };
        for j in i..n {
            total += a[j] * b[j];
        }
        total
    }

    /// `[d, m, 0, 0]` from the two f16 at the start of a Q4_1 block (one F16C op).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scales(p: *const u8) -> __m128 {
        // SAFETY: the caller points at a block, whose first four bytes are d and m.
        let dm = unsafe { p.cast::<i32>().read_unaligned() };
        _mm_cvtph_ps(_mm_cvtsi32_si128(dm))
    }

    /// `sum_b d_b * (q_b . x_b) + m_b * sum(x_b)` over the row's Q4_1 blocks; two
    /// accumulators and a shallow sum tree per block keep the FMA units busy.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_q4_1(row: &[u8], x: &[f32], xsum: &[f32]) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut acc_m = 0.0f32;
        for (i, ((b, xb), &s)) in row
            .chunks_exact(Q4_1_BYTES)
            .zip(x.chunks_exact(BLOCK))
            .zip(xsum)
            .enumerate()
        {
            let (p, px) = (b.as_ptr(), xb.as_ptr());
            // SAFETY: `b` is a whole block and `xb` 32 floats (chunks_exact).
            unsafe {
                let v = q4_nibbles(p);
                let a = _mm256_fmadd_ps(
                    v[1],
                    _mm256_loadu_ps(px.add(8)),
                    _mm256_mul_ps(v[0], _mm256_loadu_ps(px)),
                );
                let c = _mm256_fmadd_ps(
                    v[3],
                    _mm256_loadu_ps(px.add(24)),
                    _mm256_mul_ps(v[2], _mm256_loadu_ps(px.add(16))),
                );
                let dm = scales(p);
                let k = i & 1;
                acc[k] = _mm256_fmadd_ps(_mm256_broadcastss_ps(dm), _mm256_add_ps(a, c), acc[k]);
                acc_m += _mm_cvtss_f32(_mm_movehdup_ps(dm)) * s;
            }
        }
        // SAFETY: avx2 enabled in this function.
        unsafe { hsum(_mm256_add_ps(acc[0], acc[1])) + acc_m }
    }

    /// `sum_b d_b * (q_b . x_b)` over the row's Q8_0 blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_q8_0(row: &[u8], x: &[f32]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (b, xb) in row.chunks_exact(Q8_0_BYTES).zip(x.chunks_exact(BLOCK)) {
            let (p, px) = (b.as_ptr(), xb.as_ptr());
            // SAFETY: `b` is a whole block and `xb` 32 floats (chunks_exact).
            unsafe {
                let v = q8_values(p);
                let mut blk = _mm256_mul_ps(v[0], _mm256_loadu_ps(px));
                blk = _mm256_fmadd_ps(v[1], _mm256_loadu_ps(px.add(8)), blk);
                blk = _mm256_fmadd_ps(v[2], _mm256_loadu_ps(px.add(16)), blk);
                blk = _mm256_fmadd_ps(v[3], _mm256_loadu_ps(px.add(24)), blk);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(half(p)), blk, acc);
            }
        }
        // SAFETY: avx2 enabled in this function.
        unsafe { hsum(acc) }
    }

    /// Register-blocked tile product: 4 rows of `x` against 3 rows of `w` per step
    /// (12 accumulators, 7 loads per 12 FMAs), remainders one row pair at a time.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gemm_nt(
        x: &[f32],
        n: usize,
        w: &[f32],
        r: usize,
        k: usize,
        out_t: &mut [f32],
    ) {
        tile_product!(x, n, w, r, k, out_t, 4, 3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{Q4_1_BYTES, Q8_0_BYTES};

    fn lcg(seed: &mut u64) -> u8 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 33) as u8
    }

    fn random_row(format: Format, cols: usize, seed: &mut u64) -> Vec<u8> {
        let mut row: Vec<u8> = (0..format.row_bytes(cols)).map(|_| lcg(seed)).collect();
        // Keep the f16 scales small and finite: d, m in about [-1, 1].
        // (f16 high bytes: Q4_1 d and m, Q4_K d and dmin; Q6_K keeps d last.)
        let (block, highs): (usize, &[usize]) = match format {
            Format::Q4_1 => (Q4_1_BYTES, &[1, 3]),
            Format::Q5_0 => (quant::Q5_0_BYTES, &[1]),
            Format::Q4K => (quant::Q4_K_BYTES, &[1, 3]),
            Format::Q6K => (quant::Q6_K_BYTES, &[209]),
            _ => (Q8_0_BYTES, &[1]),
        };
        for b in row.chunks_exact_mut(block) {
            for &h in highs {
                b[h] = 0x20 | (b[h] & 0x83);
            }
        }
        row
    }

    #[test]
    fn simd_dequantization_is_bit_identical_to_scalar() {
        let mut seed = 7;
        for format in [
            Format::Q4_1,
            Format::Q8_0,
            Format::Q5_0,
            Format::Q4K,
            Format::Q6K,
        ] {
            let row = random_row(format, 256, &mut seed);
            let (mut a, mut b) = (vec![0.0; 256], vec![0.0; 256]);
            dequantize_row(format, &row, &mut a);
            quant::dequantize_row(format, &row, &mut b);
            assert_eq!(a, b, "{format:?}");
        }
    }

    #[test]
    fn quantized_dot_matches_dequantized_f64_dot() {
        let mut seed = 11;
        for format in [
            Format::Q4_1,
            Format::Q8_0,
            Format::Q5_0,
            Format::Q4K,
            Format::Q6K,
            Format::F16,
            Format::F32,
        ] {
            let cols = 768;
            let row = match format {
                Format::F16 => (0..cols)
                    .flat_map(|i| (0x3000u16 + i as u16).to_le_bytes())
                    .collect(),
                Format::F32 => (0..cols)
                    .flat_map(|i| (i as f32 * 0.01).to_le_bytes())
                    .collect(),
                _ => random_row(format, cols, &mut seed),
            };
            let x: Vec<f32> = (0..cols)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                .collect();
            let mut w = vec![0.0; cols];
            quant::dequantize_row(format, &row, &mut w);
            let exact: f64 = w
                .iter()
                .zip(&x)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            let act = Activation::new(&x);
            let mut scratch = vec![0.0; cols];
            let got = dot_row(format, &row, &x, &act, &mut scratch);
            let scale: f64 = w
                .iter()
                .zip(&x)
                .map(|(a, b)| f64::from((a * b).abs()))
                .sum();
            assert!(
                (f64::from(got) - exact).abs() <= 1e-6 * scale.max(1.0),
                "{format:?}: {got} vs {exact}"
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_available_kernel_agrees_with_scalar() {
        let mut seed = 5;
        let cols = 1536;
        let x: Vec<f32> = (0..cols)
            .map(|i| ((i * 29 % 97) as f32 - 48.0) / 20.0)
            .collect();
        let act = Activation::new(&x);
        let xs = &act.sums;
        for format in [
            Format::Q4_1,
            Format::Q8_0,
            Format::Q5_0,
            Format::Q4K,
            Format::Q6K,
        ] {
            let row = random_row(format, cols, &mut seed);
            let mut w = vec![0.0; cols];
            quant::dequantize_row(format, &row, &mut w);
            let exact = dot_scalar(&w, &x);
            let mut got = Vec::new();
            if has_avx2() {
                // SAFETY: features checked; row and x hold cols/32 whole blocks.
                got.push(unsafe {
                    match format {
                        Format::Q4_1 => avx2::dot_q4_1(&row, &x, xs),
                        Format::Q5_0 => avx2::dot_q5_0(&row, &x),
                        Format::Q4K => limbs::avx2::dot_q4_k(&row, &act),
                        Format::Q6K => limbs::avx2::dot_q6_k(&row, &act),
                        _ => avx2::dot_q8_0(&row, &x),
                    }
                });
            }
            for g in got {
                assert!(
                    (g - exact).abs() < 1e-3 * (1.0 + exact.abs()),
                    "{format:?}: {g} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn transpose_moves_every_value_once() {
        // Full 8 x 8 blocks, edges of every width, bands past TRANSPOSE_BAND columns.
        for (rows, cols) in [
            (1, 1),
            (7, 9),
            (8, 8),
            (13, 70),
            (64, 130),
            (129, 17),
            (3, 0),
        ] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let mut dst = vec![f32::NAN; rows * cols];
            transpose_par(&src, rows, cols, &mut dst);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        dst[c * rows + r],
                        src[r * cols + c],
                        "{rows}x{cols} at {r},{c}"
                    );
                }
            }
        }
    }

    #[test]
    fn gemm_tile_matches_scalar_dots_with_remainders() {
        // Every kernel this CPU has: the dispatcher (the transposed AVX-512 kernel where
        // the CPU has it) and the row-major one.
        #[allow(clippy::type_complexity)]
        let kernels: Vec<(&str, fn(&[f32], usize, &[f32], usize, usize, &mut [f32]))> = vec![
            ("dispatch", |x, n, w, r, k, o| {
                gemm(&TileInput::new(x, n, k), w, r, o)
            }),
            ("row-major", gemm_nt),
        ];
        for (name, kernel) in kernels {
            for (n, r, k) in [
                (9, 7, 40),
                (4, 3, 8),
                (1, 1, 5),
                (13, 48, 576),
                (17, 7, 2100),
                (33, 25, 1030),
                (32, 12, 3),
                (70, 13, 64),
                (16, 24, 1),
            ] {
                let x: Vec<f32> = (0..n * k)
                    .map(|i| ((i * 7 % 23) as f32 - 11.0) / 7.0)
                    .collect();
                let w: Vec<f32> = (0..r * k)
                    .map(|i| ((i * 5 % 19) as f32 - 9.0) / 5.0)
                    .collect();
                let mut out = vec![f32::NAN; r * n];
                kernel(&x, n, &w, r, k, &mut out);
                for j in 0..r {
                    for t in 0..n {
                        let exact: f64 = (0..k)
                            .map(|i| f64::from(x[t * k + i]) * f64::from(w[j * k + i]))
                            .sum();
                        assert!(
                            (f64::from(out[j * n + t]) - exact).abs() < 1e-4 * (1.0 + exact.abs()),
                            "{name}: n={n} r={r} k={k} t={t} j={j}"
                        );
                    }
                }
            }
        }
    }
}
