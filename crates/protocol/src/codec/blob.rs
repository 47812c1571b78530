//! The fixed header and f32 body shared by the protocol's versioned plaintext blobs
//! (the release `SELR` and the public prefix's keys and values `SELP`): magic, a u16
//! version, then little-endian fields, then finite f32 values, read through
//! `selene_codec::Reader`.

use selene_codec::Reader;

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
        let header = Reader::new(bytes)
            .take("header", len)
            .map_err(|_| "truncated header")?;
        let mut r = Reader::new(header);
        r.magic(magic).map_err(|_| "bad magic")?;
        r.version(version..=version)
            .map_err(|_| "unknown version")?;
        Ok(Self { header })
    }

    /// The u16 LE at byte `i`, if the header holds it.
    pub(crate) fn u16_at(&self, i: usize) -> Option<u16> {
        Reader::new(self.header.get(i..)?).u16("field").ok()
    }

    /// The u32 LE at byte `i` as a usize, if the header holds it.
    pub(crate) fn u32_at(&self, i: usize) -> Option<usize> {
        let v = Reader::new(self.header.get(i..)?).u32("field").ok()?;
        Some(v as usize)
    }
}

/// Little-endian f32 values of `body` (whose length the caller checked is a multiple of
/// 4), or `None` when one is not finite.
pub(crate) fn finite_f32s(body: &[u8]) -> Option<Vec<f32>> {
    let mut r = Reader::new(body);
    let values = (0..body.len() / 4)
        .map(|_| r.f32("value"))
        .collect::<selene_codec::Result<Vec<f32>>>()
        .ok()?;
    values.iter().all(|v| v.is_finite()).then_some(values)
}
