//! Selene's one byte codec: every wire and disk format reads through [`Reader`] and
//! writes through [`Writer`].
//!
//! Integers and floats are little-endian. A length or count read from the input is checked
//! against the caller's maximum, then against the bytes left, before the caller can
//! allocate for it (the habit of rustls's `msgs/codec.rs` and candle's GGUF reader); a
//! writer refuses a field longer than its maximum instead of cutting it. Every failure is
//! one [`CodecError`]: what was being read, at which byte, and why. Each format keeps its
//! own layout, magic and version; this crate knows none of them and depends on no other
//! Selene crate.
//!
//! ```
//! use selene_codec::{ErrorKind, Reader, Writer};
//!
//! let mut w = Writer::new();
//! w.header(b"DEMO", 1u16);
//! w.bytes_u16("name", b"alice", 16)?;
//! let bytes = w.into_bytes();
//!
//! let mut r = Reader::new(&bytes);
//! assert_eq!(r.header(b"DEMO", 1u16..=1)?, 1);
//! assert_eq!(r.str_u16("name", 16)?, "alice");
//! r.expect_end()?;
//! let short = Reader::new(&bytes[..8]).sub("header", 9).unwrap_err();
//! assert_eq!(short.kind, ErrorKind::Short { needed: 9, left: 8 });
//! # Ok::<(), selene_codec::CodecError>(())
//! ```

use std::ops::RangeInclusive;

/// Why a read or write failed: what was being read, where, and the [`ErrorKind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {offset}: {kind}")]
pub struct CodecError {
    /// The field being read or written (`"magic"`, `"version"`, or the caller's name).
    pub what: &'static str,
    /// Its byte offset from the start of the outermost input (or of the output so far).
    pub offset: usize,
    /// What is wrong.
    pub kind: ErrorKind,
}

/// The ways a field can be wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// The input ends before the field does.
    #[error("needs {needed} bytes, {left} left")]
    Short {
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left.
        left: usize,
    },
    /// A length or count above the maximum the format allows.
    #[error("{value} is above the maximum {max}")]
    OverMax {
        /// The length or count.
        value: u64,
        /// The largest accepted.
        max: u64,
    },
    /// Bytes left after the end of the object.
    #[error("{count} bytes after the end")]
    Trailing {
        /// How many.
        count: usize,
    },
    /// The input does not open with the format's magic.
    #[error("magic {found:02x?}, expected {expected:02x?}")]
    BadMagic {
        /// The four bytes found.
        found: [u8; 4],
        /// The format's magic.
        expected: [u8; 4],
    },
    /// A format version this build does not read.
    #[error("version {found} is not in {min}..={max}")]
    UnsupportedVersion {
        /// The version found.
        found: u64,
        /// Oldest version read.
        min: u64,
        /// Newest version read.
        max: u64,
    },
    /// A string that is not UTF-8 (`offset` is its first byte, after the prefix).
    #[error("not UTF-8 after {valid_up_to} bytes")]
    BadUtf8 {
        /// Bytes of valid UTF-8 before the first bad one.
        valid_up_to: usize,
    },
}

/// The codec's result type.
pub type Result<T, E = CodecError> = std::result::Result<T, E>;

fn err(what: &'static str, offset: usize, kind: ErrorKind) -> CodecError {
    CodecError { what, offset, kind }
}

mod sealed {
    pub trait Sealed {}
}

/// An unsigned integer width used for versions and length prefixes: `u8`, `u16`, `u32`,
/// `u64`.
pub trait Uint: Copy + PartialOrd + Into<u64> + sealed::Sealed {
    /// The largest value of the width.
    const MAX: u64;
    /// Reads one, little-endian.
    ///
    /// # Errors
    /// [`ErrorKind::Short`].
    fn read(r: &mut Reader<'_>, what: &'static str) -> Result<Self>;
    /// Writes `v` (at most [`Uint::MAX`], which the caller checked) little-endian.
    fn write(v: u64, w: &mut Writer);
}

macro_rules! uint {
    ($($t:ident),*) => {$(
        impl sealed::Sealed for $t {}
        impl Uint for $t {
            const MAX: u64 = $t::MAX as u64;
            fn read(r: &mut Reader<'_>, what: &'static str) -> Result<Self> {
                r.$t(what)
            }
            fn write(v: u64, w: &mut Writer) {
                w.$t(v as $t);
            }
        }
    )*};
}
uint!(u8, u16, u32, u64);

/// A bounds-checked cursor over input bytes. It never panics and never allocates.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Offset of `bytes` in the outermost input (non-zero for a [`Reader::sub`]).
    base: usize,
}

macro_rules! read_num {
    ($($(#[$doc:meta])* $name:ident: $t:ty;)*) => {$(
        $(#[$doc])*
        ///
        /// # Errors
        /// [`ErrorKind::Short`].
        pub fn $name(&mut self, what: &'static str) -> Result<$t> {
            self.array(what).map(<$t>::from_le_bytes)
        }
    )*};
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            pos: 0,
            base: 0,
        }
    }

    /// Offset of the next byte from the start of the outermost input.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn short(&self, what: &'static str, needed: usize) -> CodecError {
        let left = self.remaining();
        err(what, self.offset(), ErrorKind::Short { needed, left })
    }

    /// The next `n` bytes.
    ///
    /// # Errors
    /// [`ErrorKind::Short`] when fewer are left.
    pub fn take(&mut self, what: &'static str, n: usize) -> Result<&'a [u8]> {
        let out = self
            .pos
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.pos..end));
        let out = out.ok_or_else(|| self.short(what, n))?;
        self.pos += n;
        Ok(out)
    }

    /// The next `N` bytes as an array (fingerprints, seeds, tags).
    ///
    /// # Errors
    /// [`ErrorKind::Short`].
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(what, N)?);
        Ok(out)
    }

    read_num! {
        /// A `u8`.
        u8: u8;
        /// A little-endian `u16`.
        u16: u16;
        /// A little-endian `u32`.
        u32: u32;
        /// A little-endian `u64`.
        u64: u64;
        /// A little-endian `i64`.
        i64: i64;
        /// A little-endian `f32` (any bit pattern; finiteness is the format's business).
        f32: f32;
        /// A little-endian `f64` (any bit pattern).
        f64: f64;
    }

    /// A length or count prefix of width `P`, at most `max`, whose `item_bytes`-byte
    /// items fit in the bytes left after it.
    fn prefix<P: Uint>(
        &mut self,
        what: &'static str,
        max: usize,
        item_bytes: usize,
    ) -> Result<usize> {
        let at = self.offset();
        let value: u64 = P::read(self, what)?.into();
        let max = (max as u64).min(P::MAX);
        if value > max {
            return Err(err(what, at, ErrorKind::OverMax { value, max }));
        }
        // `value <= max`, which came from a usize.
        let n = value as usize;
        if n.saturating_mul(item_bytes) > self.remaining() {
            return Err(self.short(what, n.saturating_mul(item_bytes)));
        }
        Ok(n)
    }

    /// A byte string behind a `u16` length of at most `max`.
    ///
    /// # Errors
    /// [`ErrorKind::OverMax`] (at the prefix) before [`ErrorKind::Short`].
    pub fn bytes_u16(&mut self, what: &'static str, max: usize) -> Result<&'a [u8]> {
        let n = self.prefix::<u16>(what, max, 1)?;
        self.take(what, n)
    }

    /// A byte string behind a `u32` length of at most `max`.
    ///
    /// # Errors
    /// [`ErrorKind::OverMax`] (at the prefix) before [`ErrorKind::Short`].
    pub fn bytes_u32(&mut self, what: &'static str, max: usize) -> Result<&'a [u8]> {
        let n = self.prefix::<u32>(what, max, 1)?;
        self.take(what, n)
    }

    /// A byte string behind a `u64` length of at most `max`.
    ///
    /// # Errors
    /// [`ErrorKind::OverMax`] (at the prefix) before [`ErrorKind::Short`].
    pub fn bytes_u64(&mut self, what: &'static str, max: usize) -> Result<&'a [u8]> {
        let n = self.prefix::<u64>(what, max, 1)?;
        self.take(what, n)
    }

    fn utf8(&self, what: &'static str, bytes: &'a [u8]) -> Result<&'a str> {
        std::str::from_utf8(bytes).map_err(|e| {
            let kind = ErrorKind::BadUtf8 {
                valid_up_to: e.valid_up_to(),
            };
            err(what, self.offset() - bytes.len(), kind)
        })
    }

    /// A UTF-8 string behind a `u16` byte length of at most `max`.
    ///
    /// # Errors
    /// As [`Reader::bytes_u16`], and [`ErrorKind::BadUtf8`].
    pub fn str_u16(&mut self, what: &'static str, max: usize) -> Result<&'a str> {
        let b = self.bytes_u16(what, max)?;
        self.utf8(what, b)
    }

    /// A UTF-8 string behind a `u32` byte length of at most `max`.
    ///
    /// # Errors
    /// As [`Reader::bytes_u32`], and [`ErrorKind::BadUtf8`].
    pub fn str_u32(&mut self, what: &'static str, max: usize) -> Result<&'a str> {
        let b = self.bytes_u32(what, max)?;
        self.utf8(what, b)
    }

    /// A UTF-8 string behind a `u64` byte length of at most `max`.
    ///
    /// # Errors
    /// As [`Reader::bytes_u64`], and [`ErrorKind::BadUtf8`].
    pub fn str_u64(&mut self, what: &'static str, max: usize) -> Result<&'a str> {
        let b = self.bytes_u64(what, max)?;
        self.utf8(what, b)
    }

    /// A `u32` count of at most `max` items of at least `item_bytes` bytes each, all of
    /// which fit in the bytes left: safe to pass to `Vec::with_capacity`.
    ///
    /// # Errors
    /// [`ErrorKind::OverMax`] (at the count) before [`ErrorKind::Short`].
    pub fn count_u32(
        &mut self,
        what: &'static str,
        max: usize,
        item_bytes: usize,
    ) -> Result<usize> {
        self.prefix::<u32>(what, max, item_bytes)
    }

    /// A `u64` count, as [`Reader::count_u32`].
    ///
    /// # Errors
    /// [`ErrorKind::OverMax`] (at the count) before [`ErrorKind::Short`].
    pub fn count_u64(
        &mut self,
        what: &'static str,
        max: usize,
        item_bytes: usize,
    ) -> Result<usize> {
        self.prefix::<u64>(what, max, item_bytes)
    }

    /// A reader over the next `n` bytes, which this one skips; its offsets stay those of
    /// the outermost input.
    ///
    /// # Errors
    /// [`ErrorKind::Short`].
    pub fn sub(&mut self, what: &'static str, n: usize) -> Result<Reader<'a>> {
        let base = self.offset();
        Ok(Reader {
            bytes: self.take(what, n)?,
            pos: 0,
            base,
        })
    }

    /// Checks that every byte was read.
    ///
    /// # Errors
    /// [`ErrorKind::Trailing`], named `"trailing bytes"`, at the first unread byte.
    pub fn expect_end(&self) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(err(
                "trailing bytes",
                self.offset(),
                ErrorKind::Trailing { count },
            )),
        }
    }

    /// Checks the 4-byte magic (named `"magic"`).
    ///
    /// # Errors
    /// [`ErrorKind::Short`], [`ErrorKind::BadMagic`].
    pub fn magic(&mut self, expected: &[u8; 4]) -> Result<()> {
        let at = self.offset();
        let found = self.array("magic")?;
        if &found != expected {
            let kind = ErrorKind::BadMagic {
                found,
                expected: *expected,
            };
            return Err(err("magic", at, kind));
        }
        Ok(())
    }

    /// A version (named `"version"`) of width `V` within `supported`.
    ///
    /// # Errors
    /// [`ErrorKind::Short`], [`ErrorKind::UnsupportedVersion`].
    pub fn version<V: Uint>(&mut self, supported: RangeInclusive<V>) -> Result<V> {
        let at = self.offset();
        let v = V::read(self, "version")?;
        if !supported.contains(&v) {
            let kind = ErrorKind::UnsupportedVersion {
                found: v.into(),
                min: (*supported.start()).into(),
                max: (*supported.end()).into(),
            };
            return Err(err("version", at, kind));
        }
        Ok(v)
    }

    /// The common header: [`Reader::magic`] then [`Reader::version`].
    ///
    /// # Errors
    /// As those two.
    pub fn header<V: Uint>(&mut self, magic: &[u8; 4], supported: RangeInclusive<V>) -> Result<V> {
        self.magic(magic)?;
        self.version(supported)
    }
}

/// Bytes of `count` fields of `bits` bits packed by [`Writer::bits`].
pub fn packed_len(count: usize, bits: u32) -> usize {
    (count * bits as usize).div_ceil(8)
}

/// Reads `out.len()` fields of `bits` bits (`1 <= bits <= 64`) packed as
/// [`Writer::bits`] packs them from the start of `bytes`; missing bytes read as zero (the
/// caller takes exactly [`packed_len`] bytes first, so a short input is its error).
pub fn unpack_bits(bytes: &[u8], bits: u32, out: &mut [u64]) {
    debug_assert!((1..=64).contains(&bits));
    let mask = if bits == 64 {
        u128::from(u64::MAX)
    } else {
        (1u128 << bits) - 1
    };
    let (mut acc, mut have, mut at) = (0u128, 0u32, 0usize);
    for x in out.iter_mut() {
        if have < bits {
            // A whole word where eight bytes remain (have < 64, so it fits), else bytes.
            if let Some(word) = bytes.get(at..at + 8) {
                let mut w = [0u8; 8];
                w.copy_from_slice(word);
                acc |= u128::from(u64::from_le_bytes(w)) << have;
                have += 64;
                at += 8;
            } else {
                while have < bits {
                    acc |= u128::from(bytes.get(at).copied().unwrap_or(0)) << have;
                    have += 8;
                    at += 1;
                }
            }
        }
        *x = (acc & mask) as u64;
        acc >>= bits;
        have -= bits;
    }
}

/// Appends fields to a byte buffer: the mirror of [`Reader`].
#[derive(Clone, Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

macro_rules! write_num {
    ($($name:ident: $t:ty),*) => {$(
        #[doc = concat!("Appends a little-endian `", stringify!($t), "`.")]
        pub fn $name(&mut self, v: $t) {
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    )*};
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Appends bytes as they are (fixed-size fields: magics, seeds, tags).
    pub fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    write_num!(u8: u8, u16: u16, u32: u32, u64: u64, i64: i64, f32: f32, f64: f64);

    /// Appends `values` as consecutive `bits`-bit fields, least significant bit first
    /// and without gaps, the last byte padded with zeros: `packed_len(values.len(),
    /// bits)` bytes, which [`unpack_bits`] reads back. Each value must be below
    /// `2^bits` (`1 <= bits <= 64`); higher bits would spill into the next field.
    pub fn bits(&mut self, values: &[u64], bits: u32) {
        debug_assert!((1..=64).contains(&bits));
        debug_assert!(values.iter().all(|&v| bits == 64 || v >> bits == 0));
        self.buf.reserve(packed_len(values.len(), bits));
        // Whole 64-bit words while they fill: the same bytes as one byte at a time,
        // since both are little-endian.
        let (mut acc, mut have) = (0u128, 0u32);
        for &v in values {
            acc |= u128::from(v) << have;
            have += bits;
            if have >= 64 {
                self.buf.extend_from_slice(&(acc as u64).to_le_bytes());
                acc >>= 64;
                have -= 64;
            }
        }
        let rest = have.div_ceil(8) as usize;
        self.buf.extend_from_slice(&acc.to_le_bytes()[..rest]);
    }

    /// Writes `n` as a prefix of width `P`, refusing it above `max` (or the width).
    fn prefix<P: Uint>(&mut self, what: &'static str, n: usize, max: usize) -> Result<()> {
        let (value, max) = (n as u64, (max as u64).min(P::MAX));
        if value > max {
            let kind = ErrorKind::OverMax { value, max };
            return Err(err(what, self.len(), kind));
        }
        P::write(value, self);
        Ok(())
    }

    /// Appends `b` behind a `u16` length.
    ///
    /// # Errors
    /// [`ErrorKind::OverMax`] when `b` is longer than `max` or `u16::MAX`; nothing is
    /// written then.
    pub fn bytes_u16(&mut self, what: &'static str, b: &[u8], max: usize) -> Result<()> {
        self.prefix::<u16>(what, b.len(), max)?;
        self.raw(b);
        Ok(())
    }

    /// Appends `b` behind a `u32` length.
    ///
    /// # Errors
    /// [`ErrorKind::OverMax`] when `b` is longer than `max` or `u32::MAX`.
    pub fn bytes_u32(&mut self, what: &'static str, b: &[u8], max: usize) -> Result<()> {
        self.prefix::<u32>(what, b.len(), max)?;
        self.raw(b);
        Ok(())
    }

    /// Appends `b` behind a `u64` length.
    ///
    /// # Errors
    /// [`ErrorKind::OverMax`] when `b` is longer than `max`.
    pub fn bytes_u64(&mut self, what: &'static str, b: &[u8], max: usize) -> Result<()> {
        self.prefix::<u64>(what, b.len(), max)?;
        self.raw(b);
        Ok(())
    }

    /// Appends a `u32` item count (the items follow).
    ///
    /// # Errors
    /// [`ErrorKind::OverMax`] when `n` is above `max` or `u32::MAX`.
    pub fn count_u32(&mut self, what: &'static str, n: usize, max: usize) -> Result<()> {
        self.prefix::<u32>(what, n, max)
    }

    /// Appends the common header: the magic, then the version at its width.
    pub fn header<V: Uint>(&mut self, magic: &[u8; 4], version: V) {
        self.raw(magic);
        V::write(version.into(), self);
    }
}

#[cfg(test)]
mod tests;
