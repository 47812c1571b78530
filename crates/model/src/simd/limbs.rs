//! Dot products of K-quant rows with activations split into three signed 8-bit limbs,
//! so the inner loop multiplies bytes (`vpmaddubsw`, 32 products per instruction)
//! instead of converting every weight to f32 for an FMA (8 per instruction).
//!
//! Each super-block of 256 activations gets a scale `s = max|x| / 127`, and
//! `x / s = a + b / 254 + c / 254^2` with integers `a, b, c` in `[-127, 127]`: `a` the
//! rounded quotient, `b` and `c` the rounded remainders scaled by 254 in turn. The
//! representation error is at most `s / (2 * 254^2)`, about `2^-24` of the block's
//! largest value, which is f32's own unit roundoff, so these products keep f32
//! accuracy (the fixtures' logit error against transformers in f32 is unchanged in
//! order of magnitude). Quantizing activations to one 8-bit or 16-bit limb, as int8
//! engines do, was measured at 3e-4 to 2e-3 of logit error on Qwen2.5: too coarse for
//! the 1e-3 the fixtures hold.
//!
//! A weight row's super-block then contributes `d * s * (A + B / 254 + C / 254^2)`,
//! where `A, B, C` are exact integer sums of `scale_j * q * limb` over its sub-blocks,
//! and the offsets (Q4_K's minimums, Q6_K's `- 32`) multiply exact f32 sums of `x`.

use crate::quant::{BLOCK, SUPER_BLOCK};

/// The limbs' radix: `b` and `c` are remainders times 254, which keeps them in
/// `[-127, 127]` (a remainder lies in `[-1/2, 1/2]`).
const RADIX: f32 = 254.0;
/// `1.5 * 2^23`: adding and subtracting it rounds an f32 of magnitude below `2^22` to
/// the nearest integer (ties to even) in two additions that vectorize, where
/// `f32::round` is a library call per value.
const ROUNDER: f32 = 12_582_912.0;

/// `v` rounded to the nearest integer, for `|v| < 2^22`.
#[inline]
fn round(v: f32) -> f32 {
    (v + ROUNDER) - ROUNDER
}

/// Values per Q6_K scale group.
const GROUP: usize = 16;

/// One activation row prepared for the quantized dot products: sums per 32 (Q4_1's and
/// Q4_K's minimums), and, when the row is whole super-blocks, sums per 16 (Q6_K's
/// offset) and the three limbs with their scales.
#[derive(Clone, Debug, Default)]
pub struct Activation {
    /// Sums over consecutive blocks of 32.
    pub(crate) sums: Vec<f32>,
    /// Sums over consecutive groups of 16 (empty when `limbs` is).
    pub(crate) sums16: Vec<f32>,
    /// `a`, `b` and `c` of every value, one after the other (`3 * len`; empty when the
    /// length is not a multiple of 256).
    pub(crate) limbs: Vec<i8>,
    /// `s` per super-block of 256 (NaN where the block holds a NaN or an infinity, so
    /// the product is NaN as it would be in f32).
    pub(crate) scales: Vec<f32>,
}

impl Activation {
    /// Prepares `x` (any length; the limbs only when it is whole super-blocks).
    pub fn new(x: &[f32]) -> Self {
        Self::with_limbs(x, true)
    }

    /// Prepares `x`, with the limbs only when `limbs` is set (only the K-quants' kernels
    /// read them) and `x` is whole super-blocks.
    pub fn with_limbs(x: &[f32], limbs: bool) -> Self {
        let mut a = Activation {
            sums: x
                .chunks_exact(BLOCK)
                .map(|c| c.iter().sum::<f32>())
                .collect(),
            ..Activation::default()
        };
        if limbs {
            a.split(x);
        }
        a
    }

    /// Fills the sums per 16, the limbs and their scales (nothing unless `x` is whole
    /// super-blocks).
    fn split(&mut self, x: &[f32]) {
        if x.is_empty() || !x.len().is_multiple_of(SUPER_BLOCK) {
            return;
        }
        self.sums16
            .extend(x.chunks_exact(GROUP).map(|c| c.iter().sum::<f32>()));
        let n = x.len();
        self.limbs.resize(3 * n, 0);
        let (la, rest) = self.limbs.split_at_mut(n);
        let (lb, lc) = rest.split_at_mut(n);
        for (i, block) in x.chunks_exact(SUPER_BLOCK).enumerate() {
            let max = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let finite = block.iter().all(|v| v.is_finite());
            let s = if finite { max / 127.0 } else { f32::NAN };
            self.scales.push(s);
            if s == 0.0 || s.is_nan() {
                // Zero (limbs stay 0) or not finite (the NaN scale carries it).
                continue;
            }
            let inv = 1.0 / s;
            let range = i * SUPER_BLOCK..(i + 1) * SUPER_BLOCK;
            for (((v, a), b), c) in block
                .iter()
                .zip(&mut la[range.clone()])
                .zip(&mut lb[range.clone()])
                .zip(&mut lc[range])
            {
                // `v * inv` may exceed 127 by a rounding: clamp, the remainder keeps it.
                let u = (v * inv).clamp(-127.0, 127.0);
                let ra = round(u);
                let r1 = (u - ra) * RADIX;
                let rb = round(r1);
                let rc = round((r1 - rb) * RADIX);
                *a = ra as i8;
                *b = rb as i8;
                *c = rc.clamp(-127.0, 127.0) as i8;
            }
        }
    }

    /// Whether the limbs are there (the row is whole super-blocks).
    pub(crate) fn has_limbs(&self) -> bool {
        !self.limbs.is_empty()
    }

    /// The value the limbs represent at `i` (the reference the kernels are tested on).
    #[cfg(test)]
    fn represented(&self, i: usize) -> f64 {
        let n = self.limbs.len() / 3;
        let (a, b, c) = (
            f64::from(self.limbs[i]),
            f64::from(self.limbs[n + i]),
            f64::from(self.limbs[2 * n + i]),
        );
        let r = f64::from(RADIX);
        f64::from(self.scales[i / SUPER_BLOCK]) * (a + b / r + c / (r * r))
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use super::{Activation, RADIX};
    use crate::quant::{self, SUPER_BLOCK};
    use crate::simd::avx2::{half, hsum};
    use std::arch::x86_64::*;

    /// `A + B / 254 + C / 254^2` of three integer accumulators, per lane.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn combine(a: __m256i, b: __m256i, c: __m256i) -> __m256 {
        let r1 = _mm256_set1_ps(1.0 / RADIX);
        let r2 = _mm256_set1_ps(1.0 / (RADIX * RADIX));
        let f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(b), r1, _mm256_cvtepi32_ps(a));
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(c), r2, f)
    }

    /// The 8 six-bit scales and 8 minimums of a Q4_K super-block's 12 scale bytes,
    /// each as 8 bytes (little-endian in a `u64`).
    #[inline]
    pub(super) fn q4_k_scales_mins(s: &[u8]) -> (u64, u64) {
        let word = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
        let (a, b, c) = (word(0), word(4), word(8));
        // Sub-blocks 0..4 keep the low six bits of bytes 0..4 (scales) and 4..8
        // (minimums); 4..8 take four bits from bytes 8..12 and their top two from the
        // high bits of bytes 0..4 and 4..8 (see `quant::q4_k_scale_min`).
        let sc_lo = a & 0x3f3f_3f3f;
        let m_lo = b & 0x3f3f_3f3f;
        let sc_hi = (c & 0x0f0f_0f0f) | ((a >> 2) & 0x3030_3030);
        let m_hi = ((c >> 4) & 0x0f0f_0f0f) | ((b >> 2) & 0x3030_3030);
        (
            u64::from(sc_lo) | (u64::from(sc_hi) << 32),
            u64::from(m_lo) | (u64::from(m_hi) << 32),
        )
    }

    /// `shuffle_epi8` masks that copy 16-bit word `j` of each 128-bit lane to all eight.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn word_broadcast(j: i8) -> __m256i {
        _mm256_set1_epi16(i16::from(2 * j) | (i16::from(2 * j + 1) << 8))
    }

    /// Dot product of a Q4_K row with the activation `x` (its limbs present): per
    /// sub-block `d sc (q . x) - dmin m sum(x)`, the first from byte products.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::simd) unsafe fn dot_q4_k(row: &[u8], x: &Activation) -> f32 {
        let n = x.limbs.len() / 3;
        let mask = _mm256_set1_epi8(0x0f);
        let mut acc = _mm256_setzero_ps();
        let mut acc_min = _mm256_setzero_ps();
        let sel: [__m256i; 8] = std::array::from_fn(|j| {
            // SAFETY: avx2 is enabled in this function.
            unsafe { word_broadcast(j as i8) }
        });
        for (i, b) in row.chunks_exact(quant::Q4_K_BYTES).enumerate() {
            // SAFETY: the block's first four bytes are its two f16 factors.
            let (d, dmin) = unsafe { (half(b.as_ptr()), half(b.as_ptr().add(2))) };
            let (sc, mins) = q4_k_scales_mins(&b[4..16]);
            let sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64)));
            let base = i * SUPER_BLOCK;
            let (mut ia, mut ib, mut ic) = (
                _mm256_setzero_si256(),
                _mm256_setzero_si256(),
                _mm256_setzero_si256(),
            );
            // SAFETY: `b` is one whole 144-byte super-block (chunks_exact) whose nibbles
            // are bytes 16 + 32k .. + 32, k < 4; the limbs hold 3n bytes and this block's
            // are base .. base + 256 of each third, in bounds since row and x have the
            // same number of super-blocks (callers size both from the matrix shape).
            unsafe {
                let p = b.as_ptr().add(16);
                let la = x.limbs.as_ptr().add(base);
                let (lb, lc) = (la.add(n), la.add(2 * n));
                for k in 0..4 {
                    let v = _mm256_loadu_si256(p.add(32 * k).cast());
                    let lo = _mm256_and_si256(v, mask);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
                    let s_lo = _mm256_shuffle_epi8(sc16, sel[2 * k]);
                    let s_hi = _mm256_shuffle_epi8(sc16, sel[2 * k + 1]);
                    let term = |q: __m256i, l: *const i8, s: __m256i| {
                        _mm256_madd_epi16(_mm256_maddubs_epi16(q, _mm256_loadu_si256(l.cast())), s)
                    };
                    let (o_lo, o_hi) = (64 * k, 64 * k + 32);
                    ia = _mm256_add_epi32(ia, term(lo, la.add(o_lo), s_lo));
                    ib = _mm256_add_epi32(ib, term(lo, lb.add(o_lo), s_lo));
                    ic = _mm256_add_epi32(ic, term(lo, lc.add(o_lo), s_lo));
                    ia = _mm256_add_epi32(ia, term(hi, la.add(o_hi), s_hi));
                    ib = _mm256_add_epi32(ib, term(hi, lb.add(o_hi), s_hi));
                    ic = _mm256_add_epi32(ic, term(hi, lc.add(o_hi), s_hi));
                }
                let ds = _mm256_set1_ps(d * x.scales[i]);
                acc = _mm256_fmadd_ps(ds, combine(ia, ib, ic), acc);
                let m = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(mins as i64)));
                let sums = _mm256_loadu_ps(x.sums.as_ptr().add(8 * i));
                acc_min = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_mul_ps(m, sums), acc_min);
            }
        }
        // SAFETY: avx2 is enabled in this function.
        unsafe { hsum(acc) - hsum(acc_min) }
    }

    /// Dot product of a Q6_K row with the activation `x` (its limbs present): per
    /// 16-value group `d sc ((q - 32) . x) = d sc (q . x) - 32 d sc sum(x)`, the first
    /// from byte products (`q` is unsigned, as `vpmaddubsw` needs).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::simd) unsafe fn dot_q6_k(row: &[u8], x: &Activation) -> f32 {
        let n = x.limbs.len() / 3;
        let (mask4, mask30) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(0x30));
        // Low lane: word 0 of each dword; high lane: word 1 (see below).
        let pick = _mm256_setr_epi8(
            0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2,
            3, 2, 3,
        );
        let mut acc = _mm256_setzero_ps();
        let mut acc_off = _mm256_setzero_ps();
        for (i, b) in row.chunks_exact(quant::Q6_K_BYTES).enumerate() {
            // SAFETY: bytes 208, 209 of the 210-byte block are its f16 factor.
            let d = unsafe { half(b.as_ptr().add(208)) };
            let base = i * SUPER_BLOCK;
            let (mut ia, mut ib, mut ic) = (
                _mm256_setzero_si256(),
                _mm256_setzero_si256(),
                _mm256_setzero_si256(),
            );
            // SAFETY: `b` is one whole 210-byte super-block (chunks_exact): ql bytes
            // 0..128, qh 128..192, scales 192..208; the limbs and sums are in bounds as
            // in `dot_q4_k` (base + 256 <= n, 16 i + 16 <= n / 16).
            unsafe {
                let p = b.as_ptr();
                // The 16 scales as i16, scale 2j and 2j + 1 in dword j.
                let sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(192).cast()));
                let la = x.limbs.as_ptr().add(base);
                let (lb, lc) = (la.add(n), la.add(2 * n));
                for half in 0..2 {
                    let qa = _mm256_loadu_si256(p.add(64 * half).cast());
                    let qb = _mm256_loadu_si256(p.add(64 * half + 32).cast());
                    let h = _mm256_loadu_si256(p.add(128 + 32 * half).cast());
                    // Weight 128 half + 32 g + l (byte l) takes a nibble of qa or qb and
                    // bits 2g, 2g + 1 of h as its bits 4, 5.
                    let q = [
                        _mm256_or_si256(
                            _mm256_and_si256(qa, mask4),
                            _mm256_and_si256(_mm256_slli_epi16(h, 4), mask30),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(qb, mask4),
                            _mm256_and_si256(_mm256_slli_epi16(h, 2), mask30),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(qa, 4), mask4),
                            _mm256_and_si256(h, mask30),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(qb, 4), mask4),
                            _mm256_and_si256(_mm256_srli_epi16(h, 2), mask30),
                        ),
                    ];
                    for (g, qg) in q.iter().enumerate() {
                        // Bytes 0..16 (words 0..8 of the products) use scale
                        // 8 half + 2g, bytes 16..32 the next one: dword 4 half + g
                        // broadcast, then its low word to the low lane, high to high.
                        let j = _mm256_set1_epi32((4 * half + g) as i32);
                        let s = _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(sc, j), pick);
                        let o = 128 * half + 32 * g;
                        let term = |l: *const i8| {
                            _mm256_madd_epi16(
                                _mm256_maddubs_epi16(*qg, _mm256_loadu_si256(l.add(o).cast())),
                                s,
                            )
                        };
                        ia = _mm256_add_epi32(ia, term(la));
                        ib = _mm256_add_epi32(ib, term(lb));
                        ic = _mm256_add_epi32(ic, term(lc));
                    }
                }
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d * x.scales[i]), combine(ia, ib, ic), acc);
                let s0 =
                    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.add(192).cast())));
                let s1 =
                    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.add(200).cast())));
                let sums = x.sums16.as_ptr().add(16 * i);
                let t = _mm256_fmadd_ps(
                    s1,
                    _mm256_loadu_ps(sums.add(8)),
                    _mm256_mul_ps(s0, _mm256_loadu_ps(sums)),
                );
                acc_off = _mm256_fmadd_ps(_mm256_set1_ps(32.0 * d), t, acc_off);
            }
        }
        // SAFETY: avx2 is enabled in this function.
        unsafe { hsum(acc) - hsum(acc_off) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{self, Format};

    #[test]
    fn limbs_represent_each_value_to_f32_precision() {
        let x: Vec<f32> = (0..512)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) * if i < 256 { 1e-3 } else { 37.0 })
            .collect();
        let a = Activation::new(&x);
        assert!(a.has_limbs());
        for (i, v) in x.iter().enumerate() {
            let max = x[i / 256 * 256..][..256]
                .iter()
                .fold(0.0f32, |m, v| m.max(v.abs()));
            let err = (a.represented(i) - f64::from(*v)).abs();
            assert!(err <= f64::from(max) * 2f64.powi(-23), "{i}: {v} err {err}");
        }
        // Limbs are never -128 (vpmaddubsw's pair sums stay in i16).
        assert!(a.limbs.iter().all(|&l| l != i8::MIN));
    }

    /// Random K-quant rows of `cols` columns with f16 factors of magnitude about 1.
    fn random_row(format: Format, cols: usize, seed: &mut u64) -> Vec<u8> {
        let mut row: Vec<u8> = (0..format.row_bytes(cols))
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (*seed >> 33) as u8
            })
            .collect();
        let (block, highs): (usize, &[usize]) = match format {
            Format::Q4K => (quant::Q4_K_BYTES, &[1, 3]),
            _ => (quant::Q6_K_BYTES, &[209]),
        };
        for b in row.chunks_exact_mut(block) {
            for &h in highs {
                b[h] = 0x38 | (b[h] & 0x83);
            }
        }
        row
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn limb_kernels_equal_the_f64_product_with_the_represented_activations() {
        if !(is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        {
            eprintln!("skipped: no AVX2+FMA+F16C");
            return;
        }
        let mut seed = 19;
        let cols = 1536;
        // Activations over six orders of magnitude, with an outlier block.
        let x: Vec<f32> = (0..cols)
            .map(|i| {
                let v = ((i * 7919 % 2003) as f32 - 1001.0) / 1001.0;
                if (512..768).contains(&i) {
                    v * 300.0
                } else {
                    v * 10f32.powi((i % 6) as i32 - 3)
                }
            })
            .collect();
        let act = Activation::new(&x);
        for format in [Format::Q4K, Format::Q6K] {
            for _ in 0..20 {
                let row = random_row(format, cols, &mut seed);
                let mut w = vec![0.0; cols];
                quant::dequantize_row(format, &row, &mut w);
                let exact: f64 = (0..cols)
                    .map(|i| f64::from(w[i]) * act.represented(i))
                    .sum();
                let magnitude: f64 = (0..cols)
                    .map(|i| (f64::from(w[i]) * f64::from(x[i])).abs())
                    .sum();
                // SAFETY: features checked above; row and act hold cols/256 super-blocks.
                let got = unsafe {
                    match format {
                        Format::Q4K => avx2::dot_q4_k(&row, &act),
                        _ => avx2::dot_q6_k(&row, &act),
                    }
                };
                // The integer sums are exact; only the f32 combination and the offsets'
                // f32 sums round (a few ulps of the terms' magnitude).
                assert!(
                    (f64::from(got) - exact).abs() <= 1e-6 * magnitude,
                    "{format:?}: {got} vs {exact} (magnitude {magnitude})"
                );
            }
        }
        // A NaN in the activations gives NaN, as the f32 product would.
        let mut bad = x.clone();
        bad[1000] = f32::NAN;
        let act = Activation::new(&bad);
        let row = random_row(Format::Q4K, cols, &mut seed);
        // SAFETY: as above.
        assert!(unsafe { avx2::dot_q4_k(&row, &act) }.is_nan());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn packed_q4_k_scales_and_minimums_unpack_as_the_scalar_code_does() {
        let mut seed = 23u64;
        for _ in 0..200 {
            let s: Vec<u8> = (0..12)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(7);
                    (seed >> 40) as u8
                })
                .collect();
            let (sc, m) = avx2::q4_k_scales_mins(&s);
            for j in 0..8 {
                let (want_sc, want_m) = quant::q4_k_scale_min(j, &s);
                assert_eq!((sc >> (8 * j)) as u8, want_sc, "scale {j} of {s:?}");
                assert_eq!((m >> (8 * j)) as u8, want_m, "minimum {j} of {s:?}");
            }
        }
    }

    #[test]
    fn zero_and_non_finite_blocks_get_zero_limbs_and_a_scale_that_says_so() {
        let mut x = vec![0.0f32; 512];
        x[300] = f32::INFINITY;
        let a = Activation::new(&x);
        assert_eq!(a.scales[0], 0.0);
        assert!(a.scales[1].is_nan());
        assert!(a.limbs.iter().all(|&l| l == 0));
        // A length that is not whole super-blocks gets the sums only.
        let b = Activation::new(&[1.0; 96]);
        assert_eq!(b.sums, vec![32.0; 3]);
        assert!(!b.has_limbs());
    }
}
