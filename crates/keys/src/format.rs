//! The keystore's binary encoding: little-endian integers, length-prefixed fields with
//! caps, and a bounds-checked reader that names the field it ran out on. No length read
//! from the file allocates before it is checked against the bytes left and its cap.

use crate::error::{Error, Result};

/// Appends fields to a buffer.
#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// A byte string of at most `u16::MAX` bytes (callers keep theirs under [`MAX_FIELD`]).
    pub(crate) fn bytes16(&mut self, b: &[u8]) {
        let len = b.len().min(MAX_FIELD);
        self.u16(len as u16);
        self.raw(&b[..len]);
    }
    pub(crate) fn str16(&mut self, s: &str) {
        self.bytes16(s.as_bytes());
    }
    /// A byte string of at most [`MAX_POLICY`] bytes.
    pub(crate) fn bytes32(&mut self, b: &[u8]) {
        let len = b.len().min(MAX_POLICY);
        self.u32(len as u32);
        self.raw(&b[..len]);
    }
}

/// Cap on a short field (names, paths, wrapped keys).
pub(crate) const MAX_FIELD: usize = 4096;
/// Cap on the policy text.
pub(crate) const MAX_POLICY: usize = 64 * 1024;

/// Reads fields from a byte slice, erroring on short data.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8]> {
        let left = self.bytes.len() - self.pos;
        if n > left {
            return Err(Error::Truncated {
                field,
                offset: self.pos,
                needed: n,
                left,
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8> {
        Ok(self.array::<1>(field)?[0])
    }
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn bytes16(&mut self, field: &'static str) -> Result<&'a [u8]> {
        let n = self.u16(field)? as usize;
        if n > MAX_FIELD {
            return Err(Error::InvalidField {
                field,
                value: n as u64,
            });
        }
        self.take(n, field)
    }

    pub(crate) fn str16(&mut self, field: &'static str) -> Result<String> {
        let b = self.bytes16(field)?;
        String::from_utf8(b.to_vec()).map_err(|e| Error::InvalidField {
            field,
            value: e.utf8_error().valid_up_to() as u64,
        })
    }

    pub(crate) fn bytes32(&mut self, field: &'static str) -> Result<&'a [u8]> {
        let n = self.u32(field)? as usize;
        if n > MAX_POLICY {
            return Err(Error::InvalidField {
                field,
                value: n as u64,
            });
        }
        self.take(n, field)
    }

    pub(crate) fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_short_input_names_the_field() {
        let mut w = Writer::default();
        w.u8(7);
        w.u32(0xdead_beef);
        w.str16("alice");
        w.bytes32(b"policy");
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.u8("a").unwrap(), 7);
        assert_eq!(r.u32("b").unwrap(), 0xdead_beef);
        assert_eq!(r.str16("c").unwrap(), "alice");
        assert_eq!(r.bytes32("d").unwrap(), b"policy");
        assert_eq!(r.left(), 0);
        let mut r = Reader::new(&w.buf[..7]);
        r.u8("a").unwrap();
        r.u32("b").unwrap();
        match r.str16("name") {
            Err(Error::Truncated { field: "name", .. }) => {}
            other => panic!("{other:?}"),
        }
        let huge = [0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            Reader::new(&huge).bytes32("p"),
            Err(Error::InvalidField { field: "p", .. })
        ));
    }
}
