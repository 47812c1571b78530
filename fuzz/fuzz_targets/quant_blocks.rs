//! ggml block dequantization (Q8_0, Q4_1, Q5_0, Q4_K, Q6_K, F16, F32) of untrusted
//! weight bytes: any bytes dequantize without a panic, and the SIMD path gives exactly
//! the scalar path's f32 bits (every NaN counts as one value: which operand's payload a
//! NaN result carries depends on the compiler's operand order).
//!
//! Input: one selector byte (the format), then the row's bytes, cut to whole blocks.
//! Seeds: `fuzz/examples/seeds.rs` (one hand-made block per format).
#![no_main]

use selene_model::quant::{dequantize_row, Format, QuantMatrix};

const FORMATS: [Format; 7] = [
    Format::Q8_0,
    Format::Q4_1,
    Format::Q5_0,
    Format::Q4K,
    Format::Q6K,
    Format::F16,
    Format::F32,
];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let format = FORMATS[usize::from(sel) % FORMATS.len()];
    let block_bytes = format.row_bytes(format.block_len());
    let blocks = bytes.len() / block_bytes;
    let cols = blocks * format.block_len();
    let bytes = &bytes[..blocks * block_bytes];
    let Ok(m) = QuantMatrix::new(format, 1, cols, bytes) else {
        return;
    };
    let fast = m.to_f32();
    let mut scalar = vec![0.0f32; cols];
    dequantize_row(format, bytes, &mut scalar);
    let bits = |v: &[f32]| {
        v.iter()
            .map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() })
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(&fast), bits(&scalar), "{format:?}");
});
