//! The release's wire form: the (noise-flooded) hidden-state rows a selective client
//! hands the server after its encrypted layers. Decoded once, on the server, before the
//! release cap is checked and the plaintext tail runs.

use crate::codec::blob::{finite_f32s, BlobHeader};
use crate::error::{Error, Result};

const RELEASE_MAGIC: &[u8; 4] = b"SELR";
const RELEASE_VERSION: u16 = 1;
const RELEASE_HEADER: usize = 4 + 2 + 4 + 4;

/// Encodes a release (`n` rows of `d` f32 values, row-major) in its versioned wire form
/// (the inverse of [`decode_release`]).
pub fn encode_release(values: &[f32], n: usize, d: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(RELEASE_HEADER + 4 * values.len());
    out.extend_from_slice(RELEASE_MAGIC);
    out.extend_from_slice(&RELEASE_VERSION.to_le_bytes());
    // n and d are bounded by the context length and the model width.
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out.extend_from_slice(&(d as u32).to_le_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Decodes a release for a model of width `d`, checking magic, version, width, length
/// and finiteness before allocating.
///
/// # Errors
/// [`Error::MalformedRelease`] naming what is wrong.
pub fn decode_release(bytes: &[u8], d: usize) -> Result<Vec<f32>> {
    let bad = |what: &'static str| Error::MalformedRelease { what };
    let header =
        BlobHeader::read(bytes, RELEASE_HEADER, RELEASE_MAGIC, RELEASE_VERSION).map_err(bad)?;
    let n = header.u32_at(6).ok_or(bad("truncated header"))?;
    if header.u32_at(10) != Some(d) {
        return Err(bad("width differs from the model's"));
    }
    let body = bytes.get(RELEASE_HEADER..).ok_or(bad("truncated header"))?;
    if n == 0 || body.len() != n.saturating_mul(d).saturating_mul(4) {
        return Err(bad("length does not match n x d"));
    }
    let values = finite_f32s(body).ok_or(bad("non-finite value"))?;
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_round_trips_and_rejects_malformed_bytes() {
        let v: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        let bytes = encode_release(&v, 3, 4);
        assert_eq!(decode_release(&bytes, 4).unwrap(), v);
        for cut in 0..bytes.len() {
            assert!(decode_release(&bytes[..cut], 4).is_err(), "prefix {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode_release(&long, 4).is_err());
        assert!(decode_release(&bytes, 5).is_err());
        let mut magic = bytes.clone();
        magic[0] ^= 1;
        assert!(decode_release(&magic, 4).is_err());
        let mut nan = bytes.clone();
        nan[RELEASE_HEADER..RELEASE_HEADER + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(decode_release(&nan, 4).is_err());
    }
}
