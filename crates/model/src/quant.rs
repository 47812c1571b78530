//! ggml block formats (F32, F16, Q8_0, Q4_1): dequantization to f32 and a borrowed
//! quantized matrix that the kernels read directly.
//!
//! Layouts (ggml `ggml-common.h`): Q8_0 blocks hold 32 weights as an f16 scale `d` and
//! 32 i8 `q`, weight = `q * d`; Q4_1 blocks hold 32 weights as f16 `d`, f16 `m` and 16
//! bytes whose low nibbles are weights 0..16 and high nibbles weights 16..32, weight =
//! `q * d + m`. Every path here computes exactly these f32 values.

use crate::error::{Error, Result};
use crate::gguf::{GgmlType, TensorInfo};

/// Weights per quantization block.
pub const BLOCK: usize = 32;
/// Bytes per Q4_1 block: f16 d, f16 m, 16 nibble pairs.
pub const Q4_1_BYTES: usize = 20;
/// Bytes per Q8_0 block: f16 d, 32 i8.
pub const Q8_0_BYTES: usize = 34;

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
        }
    }

    /// Elements per block.
    pub fn block_len(self) -> usize {
        match self {
            Format::F32 | Format::F16 => 1,
            Format::Q8_0 | Format::Q4_1 => BLOCK,
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
        if cols % format.block_len() != 0 {
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
