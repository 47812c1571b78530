//! ggml block formats (F32, F16, Q8_0, Q4_1, Q5_0, Q4_K, Q6_K): dequantization to f32
//! and a borrowed quantized matrix that the kernels read directly.
//!
//! Layouts (ggml `ggml-common.h`), every value computed in f32 exactly as ggml does:
//! - Q8_0: 32 weights as an f16 scale `d` and 32 i8 `q`; weight = `q * d`.
//! - Q4_1: 32 weights as f16 `d`, f16 `m` and 16 bytes whose low nibbles are weights
//!   0..16 and high nibbles weights 16..32; weight = `q * d + m`.
//! - Q5_0: 32 weights as f16 `d`, a little-endian u32 `qh` of fifth bits (bit `j` for
//!   weight `j`) and 16 nibble bytes as in Q4_1; weight = `((q | bit << 4) - 16) * d`.
//! - Q4_K: super-blocks of 256 weights: f16 `d`, f16 `dmin`, 12 bytes packing eight
//!   6-bit (scale, min) pairs, 128 nibble bytes. Sub-block `s` (32 weights) is
//!   `(d * scale_s) * q - (dmin * min_s)`; each 32 bytes of nibbles hold sub-blocks
//!   `2k` (low nibbles) and `2k + 1` (high nibbles).
//! - Q6_K: super-blocks of 256: 128 bytes of low nibbles `ql`, 64 bytes of 2-bit high
//!   parts `qh`, 16 i8 scales (one per 16 weights), f16 `d` last; weight =
//!   `(d * scale) * (q - 32)` with the 6-bit `q` assembled as described at
//!   [`dequantize_q6_k`].

use crate::error::{Error, Result};
use crate::gguf::{GgmlType, TensorInfo};

/// Weights per quantization block.
pub const BLOCK: usize = 32;
/// Bytes per Q4_1 block: f16 d, f16 m, 16 nibble pairs.
pub const Q4_1_BYTES: usize = 20;
/// Bytes per Q8_0 block: f16 d, 32 i8.
pub const Q8_0_BYTES: usize = 34;
/// Bytes per Q5_0 block: f16 d, u32 high bits, 16 nibble pairs.
pub const Q5_0_BYTES: usize = 22;
/// Weights per K-quant super-block.
pub const SUPER_BLOCK: usize = 256;
/// Bytes per Q4_K super-block: f16 d, f16 dmin, 12 scale bytes, 128 nibble bytes.
pub const Q4_K_BYTES: usize = 144;
/// Bytes per Q6_K super-block: 128 ql, 64 qh, 16 i8 scales, f16 d.
pub const Q6_K_BYTES: usize = 210;

/// The element formats this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Plain f32.
    F32,
    /// IEEE half precision.
    F16,
    /// 8-bit blocks with one f16 scale.
    Q8_0,
    /// 4-bit blocks with an f16 scale and an f16 minimum.
    Q4_1,
    /// 5-bit blocks with one f16 scale (offset 16).
    Q5_0,
    /// 4-bit super-blocks of 256 with 6-bit sub-block scales and minimums.
    Q4K,
    /// 6-bit super-blocks of 256 with 8-bit sub-block scales.
    Q6K,
}

impl Format {
    /// The format of a ggml type, or an error naming the tensor.
    ///
    /// # Errors
    /// [`Error::UnsupportedTensorType`] for any other ggml type.
    pub fn of(t: &TensorInfo) -> Result<Format> {
        match t.ggml_type {
            x if x == GgmlType::F32 => Ok(Format::F32),
            x if x == GgmlType::F16 => Ok(Format::F16),
            x if x == GgmlType::Q8_0 => Ok(Format::Q8_0),
            x if x == GgmlType::Q4_1 => Ok(Format::Q4_1),
            x if x == GgmlType::Q5_0 => Ok(Format::Q5_0),
            x if x == GgmlType::Q4_K => Ok(Format::Q4K),
            x if x == GgmlType::Q6_K => Ok(Format::Q6K),
            other => Err(Error::UnsupportedTensorType {
                type_name: other.name,
                name: t.name.clone(),
            }),
        }
    }

    /// Bytes taken by a row of `len` elements (`len` a multiple of the block length).
    pub fn row_bytes(self, len: usize) -> usize {
        match self {
            Format::F32 => len * 4,
            Format::F16 => len * 2,
            Format::Q8_0 => len / BLOCK * Q8_0_BYTES,
            Format::Q4_1 => len / BLOCK * Q4_1_BYTES,
            Format::Q5_0 => len / BLOCK * Q5_0_BYTES,
            Format::Q4K => len / SUPER_BLOCK * Q4_K_BYTES,
            Format::Q6K => len / SUPER_BLOCK * Q6_K_BYTES,
        }
    }

    /// Elements per block.
    pub fn block_len(self) -> usize {
        match self {
            Format::F32 | Format::F16 => 1,
            Format::Q8_0 | Format::Q4_1 | Format::Q5_0 => BLOCK,
            Format::Q4K | Format::Q6K => SUPER_BLOCK,
        }
    }
}

/// Converts an IEEE 754 half to f32 exactly (subnormals, infinities and NaN included).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    match exp {
        // Zero and subnormals: man * 2^-24, exact in f32.
        0 => {
            let mag = man as f32 * f32::from_bits(0x3380_0000);
            f32::from_bits(mag.to_bits() | sign)
        }
        0x1f => f32::from_bits(sign | 0x7f80_0000 | (man << 13)),
        // Rebias the exponent from 15 to 127.
        e => f32::from_bits(sign | ((e + 112) << 23) | (man << 13)),
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]))
}

/// Dequantizes one row (`out.len()` elements) from its bytes, with scalar code.
///
/// The caller passes `bytes.len() == format.row_bytes(out.len())`.
pub fn dequantize_row(format: Format, bytes: &[u8], out: &mut [f32]) {
    debug_assert_eq!(bytes.len(), format.row_bytes(out.len()));
    match format {
        Format::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        Format::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        Format::Q8_0 => {
            for (o, b) in out
                .chunks_exact_mut(BLOCK)
                .zip(bytes.chunks_exact(Q8_0_BYTES))
            {
                let d = f16_at(b, 0);
                for (w, &q) in o.iter_mut().zip(&b[2..]) {
                    *w = f32::from(q as i8) * d;
                }
            }
        }
        Format::Q4_1 => {
            for (o, b) in out
                .chunks_exact_mut(BLOCK)
                .zip(bytes.chunks_exact(Q4_1_BYTES))
            {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let (lo, hi) = o.split_at_mut(BLOCK / 2);
                for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[4..]) {
                    *l = f32::from(q & 0x0f) * d + m;
                    *h = f32::from(q >> 4) * d + m;
                }
            }
        }
        Format::Q5_0 => {
            for (o, b) in out
                .chunks_exact_mut(BLOCK)
                .zip(bytes.chunks_exact(Q5_0_BYTES))
            {
                let d = f16_at(b, 0);
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                let (lo, hi) = o.split_at_mut(BLOCK / 2);
                for (j, ((l, h), &q)) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[6..]).enumerate() {
                    let bit_lo = ((qh >> j) & 1) << 4;
                    let bit_hi = ((qh >> (j + 16)) & 1) << 4;
                    *l = ((u32::from(q & 0x0f) | bit_lo) as i32 - 16) as f32 * d;
                    *h = ((u32::from(q >> 4) | bit_hi) as i32 - 16) as f32 * d;
                }
            }
        }
        Format::Q4K => {
            for (o, b) in out
                .chunks_exact_mut(SUPER_BLOCK)
                .zip(bytes.chunks_exact(Q4_K_BYTES))
            {
                dequantize_q4_k(b, o);
            }
        }
        Format::Q6K => {
            for (o, b) in out
                .chunks_exact_mut(SUPER_BLOCK)
                .zip(bytes.chunks_exact(Q6_K_BYTES))
            {
                dequantize_q6_k(b, o);
            }
        }
    }
}

/// The 6-bit (scale, min) of Q4_K sub-block `j` (0..8) from the 12 packed bytes `s`:
/// sub-blocks 0..4 keep theirs in the low 6 bits of bytes `j` (scale) and `j + 4`
/// (min); sub-blocks 4..8 take 4 low bits from a nibble of byte `j + 4` and their 2
/// high bits from the top bits of bytes `j - 4` (scale) and `j` (min).
pub(crate) fn q4_k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Dequantizes one Q4_K super-block (144 bytes) into 256 weights.
fn dequantize_q4_k(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..Q4_K_BYTES];
    // Each 64 outputs read 32 bytes: low nibbles for sub-block 2k, high for 2k + 1.
    for (k, (o, q)) in out
        .chunks_exact_mut(64)
        .zip(qs.chunks_exact(32))
        .enumerate()
    {
        let (sc1, m1) = q4_k_scale_min(2 * k, scales);
        let (sc2, m2) = q4_k_scale_min(2 * k + 1, scales);
        let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
        let (lo, hi) = o.split_at_mut(32);
        for ((l, h), &byte) in lo.iter_mut().zip(hi.iter_mut()).zip(q) {
            *l = d1 * f32::from(byte & 0x0f) - min1;
            *h = d2 * f32::from(byte >> 4) - min2;
        }
    }
}

/// Dequantizes one Q6_K super-block (210 bytes) into 256 weights.
///
/// Each half of 128 weights reads 64 bytes of `ql` and 32 of `qh`. For `l` in 0..32,
/// weight `l` takes the low nibble of `ql[l]`, weight `l + 32` the low nibble of
/// `ql[l + 32]`, weights `l + 64` and `l + 96` the high nibbles of those two bytes;
/// their 2 high bits are bits 0-1, 2-3, 4-5 and 6-7 of `qh[l]`. Every 16 weights share
/// one i8 scale, in output order.
fn dequantize_q6_k(b: &[u8], out: &mut [f32]) {
    let (ql, rest) = b.split_at(128);
    let (qh, rest) = rest.split_at(64);
    let (scales, d) = rest.split_at(16);
    let d = f16_at(d, 0);
    for (half, o) in out.chunks_exact_mut(128).enumerate() {
        let ql = &ql[half * 64..half * 64 + 64];
        let qh = &qh[half * 32..half * 32 + 32];
        let sc = &scales[half * 8..half * 8 + 8];
        for l in 0..32 {
            let h = qh[l];
            let q = [
                (ql[l] & 0x0f) | ((h & 3) << 4),
                (ql[l + 32] & 0x0f) | (((h >> 2) & 3) << 4),
                (ql[l] >> 4) | (((h >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((h >> 6) & 3) << 4),
            ];
            for (g, &qv) in q.iter().enumerate() {
                // Output l + 32 g lies in 16-weight group 2 g + l / 16.
                let scale = f32::from(sc[2 * g + l / 16] as i8);
                o[l + 32 * g] = d * scale * f32::from(qv as i8 - 32);
            }
        }
    }
}

/// A row-major matrix of quantized rows borrowed from the GGUF bytes: `rows` outputs,
/// each a row of `cols` weights (ggml's `dims = [cols, rows]`).
#[derive(Debug, Clone, Copy)]
pub struct QuantMatrix<'a> {
    format: Format,
    rows: usize,
    cols: usize,
    data: &'a [u8],
}

impl<'a> QuantMatrix<'a> {
    /// Wraps `data` as `rows x cols` in `format`.
    ///
    /// # Errors
    /// [`Error::Shape`] when the byte length or column count does not fit the format.
    pub fn new(format: Format, rows: usize, cols: usize, data: &'a [u8]) -> Result<Self> {
        if !cols.is_multiple_of(format.block_len()) {
            return Err(Error::Shape {
                what: "quantized matrix columns (multiple of the block length)",
                found: cols,
                expected: cols.next_multiple_of(format.block_len()),
            });
        }
        let expected = rows * format.row_bytes(cols);
        if data.len() != expected {
            return Err(Error::Shape {
                what: "quantized matrix bytes",
                found: data.len(),
                expected,
            });
        }
        Ok(QuantMatrix {
            format,
            rows,
            cols,
            data,
        })
    }

    /// Wraps bytes whose shape the caller already checked against the tensor index.
    pub(crate) fn new_unchecked(format: Format, rows: usize, cols: usize, data: &'a [u8]) -> Self {
        debug_assert_eq!(data.len(), rows * format.row_bytes(cols));
        QuantMatrix {
            format,
            rows,
            cols,
            data,
        }
    }

    /// The element format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Number of rows (outputs).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (inputs).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of row `r`; callers keep `r < rows`.
    pub(crate) fn row_bytes(&self, r: usize) -> &'a [u8] {
        let n = self.format.row_bytes(self.cols);
        &self.data[r * n..(r + 1) * n]
    }

    /// Dequantizes rows `start..start + out.len() / cols` into `out`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `out` is not whole rows or the rows run past the matrix.
    pub fn dequantize_rows(&self, start: usize, out: &mut [f32]) -> Result<()> {
        let n = out.len().checked_div(self.cols).unwrap_or(0);
        if out.len() != n * self.cols || start.saturating_add(n) > self.rows {
            return Err(Error::Shape {
                what: "dequantized rows (whole rows inside the matrix)",
                found: out.len(),
                expected: self.rows.saturating_sub(start) * self.cols,
            });
        }
        for (i, o) in out.chunks_exact_mut(self.cols).enumerate() {
            crate::simd::dequantize_row(self.format, self.row_bytes(start + i), o);
        }
        Ok(())
    }

    /// The whole matrix in f32, row-major.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for (r, o) in out.chunks_exact_mut(self.cols.max(1)).enumerate() {
            crate::simd::dequantize_row(self.format, self.row_bytes(r), o);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_known_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8000).to_bits(), 0x8000_0000);
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
    }

    #[test]
    fn q4_1_block_layout() {
        // d = 0.5 (0x3800), m = -1 (0xbc00); byte j = (j+1) << 4 | j.
        let mut b = vec![0x00, 0x38, 0x00, 0xbc];
        b.extend((0..16u8).map(|j| ((j + 1) % 16) << 4 | j));
        let mut out = [0.0; 32];
        dequantize_row(Format::Q4_1, &b, &mut out);
        for j in 0..16 {
            assert_eq!(out[j], j as f32 * 0.5 - 1.0);
            assert_eq!(out[j + 16], ((j + 1) % 16) as f32 * 0.5 - 1.0);
        }
    }

    #[test]
    fn q8_0_block_layout() {
        let mut b = vec![0x00, 0x40]; // d = 2
        b.extend((0..32).map(|j| (j as i8 - 16) as u8));
        let mut out = [0.0; 32];
        dequantize_row(Format::Q8_0, &b, &mut out);
        for (j, &o) in out.iter().enumerate() {
            assert_eq!(o, (j as f32 - 16.0) * 2.0);
        }
    }

    #[test]
    fn q5_0_block_layout() {
        // d = 0.5; qh sets the fifth bit of weights 1 and 20 only; byte j =
        // (15 - j) << 4 | j, so weight j has nibble j and weight j + 16 nibble 15 - j.
        let qh: u32 = (1 << 1) | (1 << 20);
        let mut b = vec![0x00, 0x38];
        b.extend(qh.to_le_bytes());
        b.extend((0..16u8).map(|j| (15 - j) << 4 | j));
        assert_eq!(b.len(), Q5_0_BYTES);
        let mut out = [0.0; 32];
        dequantize_row(Format::Q5_0, &b, &mut out);
        for j in 0..16 {
            let lo = j as i32 + if j == 1 { 16 } else { 0 } - 16;
            let hi = (15 - j) as i32 + if j + 16 == 20 { 16 } else { 0 } - 16;
            assert_eq!(out[j], lo as f32 * 0.5, "weight {j}");
            assert_eq!(out[j + 16], hi as f32 * 0.5, "weight {}", j + 16);
        }
    }

    /// Packs eight 6-bit (scale, min) pairs the way Q4_K stores them.
    fn pack_q4_k_scales(sc: [u8; 8], mn: [u8; 8]) -> [u8; 12] {
        let mut s = [0u8; 12];
        for j in 0..4 {
            s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            s[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
            s[j + 8] = (sc[j + 4] & 0x0f) | ((mn[j + 4] & 0x0f) << 4);
        }
        s
    }

    #[test]
    fn q4_k_super_block_layout() {
        // Distinct 6-bit scales and mins, several above 15 to exercise the high bits.
        let sc = [1, 2, 63, 17, 33, 5, 48, 9];
        let mn = [0, 7, 20, 63, 1, 40, 3, 31];
        let (d, dmin) = (0.25f32, 0.125f32); // f16 0x3400, 0x3000
        let mut b = vec![0x00, 0x34, 0x00, 0x30];
        b.extend(pack_q4_k_scales(sc, mn));
        // Byte i of nibble group k: low nibble (i + k) % 16, high nibble (i * 3) % 16.
        for k in 0..4 {
            b.extend((0..32).map(|i| (((i * 3) % 16) << 4 | ((i + k) % 16)) as u8));
        }
        assert_eq!(b.len(), Q4_K_BYTES);
        for (j, (&s, &m)) in sc.iter().zip(&mn).enumerate() {
            assert_eq!(q4_k_scale_min(j, &b[4..16]), (s, m), "sub-block {j}");
        }
        let mut out = vec![0.0; SUPER_BLOCK];
        dequantize_row(Format::Q4K, &b, &mut out);
        for (i, &o) in out.iter().enumerate() {
            let (sub, l) = (i / 32, i % 32);
            let k = sub / 2;
            let q = if sub % 2 == 0 {
                (l + k) % 16
            } else {
                (l * 3) % 16
            };
            let want = d * f32::from(sc[sub]) * q as f32 - dmin * f32::from(mn[sub]);
            assert_eq!(o, want, "weight {i}");
        }
    }

    #[test]
    fn q6_k_super_block_layout() {
        // Weight w gets the 6-bit value (w * 7 + 3) % 64; pack it by the documented rule.
        let value = |w: usize| ((w * 7 + 3) % 64) as u8;
        let (mut ql, mut qh) = (vec![0u8; 128], vec![0u8; 64]);
        for half in 0..2 {
            for l in 0..32 {
                for g in 0..4 {
                    let q = value(half * 128 + l + 32 * g);
                    let byte = half * 64 + l + 32 * (g % 2);
                    ql[byte] |= if g < 2 { q & 0x0f } else { (q & 0x0f) << 4 };
                    qh[half * 32 + l] |= (q >> 4) << (2 * g);
                }
            }
        }
        let scales: [i8; 16] = [
            1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12, 13, -14, 127, -128,
        ];
        let mut b = ql;
        b.extend(qh);
        b.extend(scales.map(|s| s as u8));
        b.extend([0x00, 0x30]); // d = 0.125
        assert_eq!(b.len(), Q6_K_BYTES);
        let mut out = vec![0.0; SUPER_BLOCK];
        dequantize_row(Format::Q6K, &b, &mut out);
        for (w, &o) in out.iter().enumerate() {
            let want = 0.125 * f32::from(scales[w / 16]) * f32::from(value(w) as i8 - 32);
            assert_eq!(o, want, "weight {w}");
        }
    }

    #[test]
    fn k_quant_rows_need_whole_super_blocks() {
        assert_eq!(Format::Q4K.row_bytes(512), 2 * Q4_K_BYTES);
        assert_eq!(Format::Q6K.block_len(), 256);
        assert!(QuantMatrix::new(Format::Q4K, 1, 896, &[0; 504]).is_err());
        assert!(QuantMatrix::new(Format::Q6K, 1, 256, &[0; 210]).is_ok());
    }

    #[test]
    fn matrix_checks_its_shape() {
        let m = QuantMatrix::new(Format::Q4_1, 2, 32, &[0; 40]).unwrap();
        let mut out = vec![0.0; 32];
        assert!(m.dequantize_rows(1, &mut out).is_ok());
        assert!(m.dequantize_rows(2, &mut out).is_err());
        assert!(m.dequantize_rows(0, &mut out[..31]).is_err());
        assert!(QuantMatrix::new(Format::Q4_1, 2, 32, &[0; 39]).is_err());
        assert!(QuantMatrix::new(Format::Q8_0, 1, 31, &[0; 34]).is_err());
    }
}
