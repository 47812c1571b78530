//! The fixed header and f32 body shared by the protocol's versioned plaintext blobs
//! (the release `SELR` and the public prefix's keys and values `SELP`): magic, a u16
//! version, then little-endian fields, then finite f32 values.

/// A checked view of a blob's fixed-size header.
pub(crate) struct BlobHeader<'a> {
    header: &'a [u8],
}

impl<'a> BlobHeader<'a> {
    /// The first `len` bytes of `bytes` when they start with `magic` and then `version`
    /// (u16 LE at offset 4); otherwise why not.
    pub(crate) fn read(
        bytes: &'a [u8],
        len: usize,
        magic: &[u8; 4],
        version: u16,
    ) -> Result<Self, &'static str> {
        let header = bytes.get(..len).ok_or("truncated header")?;
        if header.get(..4) != Some(magic.as_slice()) {
            return Err("bad magic");
        }
        let h = Self { header };
        if h.u16_at(4) != Some(version) {
            return Err("unknown version");
        }
        Ok(h)
    }

    /// The u16 LE at byte `i`, if the header holds it.
    pub(crate) fn u16_at(&self, i: usize) -> Option<u16> {
        self.header
            .get(i..i + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    /// The u32 LE at byte `i` as a usize, if the header holds it.
    pub(crate) fn u32_at(&self, i: usize) -> Option<usize> {
        self.header
            .get(i..i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
}

/// Little-endian f32 values of `body` (whose length the caller checked is a multiple of
/// 4), or `None` when one is not finite.
pub(crate) fn finite_f32s(body: &[u8]) -> Option<Vec<f32>> {
    let values: Vec<f32> = body
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    values.iter().all(|v| v.is_finite()).then_some(values)
}
