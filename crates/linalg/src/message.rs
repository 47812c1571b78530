//! What crosses the wire: the client's encrypted input and the server's encrypted output,
//! and their binary format.
//!
//! Both messages open with magic `b"SLLA"`, a version byte (2 for an input, whose seed
//! table came with it; 1 otherwise), a kind byte (1 input, 2 output), the 8-byte
//! parameter fingerprint, the method byte, `d_in`, `d_out`, the three-number tiling tag,
//! the token count and the ciphertext count (u32 LE each).
//! - An input then holds the seed table: a u32 count (0, or the ciphertext count when
//!   every ciphertext is fresh with a ChaCha8 seed) and that many 32-byte seeds of `c1`,
//!   ahead of any `c0`, so that a server can compute everything `c1` feeds while the
//!   `c0`s upload ([`crate::Server::stream`]). Then, per ciphertext, a u32 length and the
//!   engine's serialization (seed-compressed: `c0` bit-packed at the prime's width, or
//!   rounded to fewer bits where the layout has precision to spare, plus the 32-byte
//!   seed of `c1`, which must equal its entry in the table).
//! - An output holds `down_bits` (u8), then per ciphertext the lengths of `c0` and `c1`
//!   (u32 each) and their residues mod `2^down_bits`, bit-packed LSB first.
//!
//! - A [`Layout`] (kind 3, header `n` = `d_out`, count 0) then holds `x_bits` (coefficients)
//!   or the segment length (slots) as u32, `down_bits` as u8 and the `d_out` column scales
//!   as f64 LE: the server sends one per prepared matrix when a session opens.
//!
//! Decoding takes the parameters and never trusts a length before checking it against
//! the bytes left, so malformed input is an `Err`, never a panic or a huge allocation;
//! trailing bytes are an error. Whether the counts fit the prepared matrix is checked by
//! [`crate::Server::apply`] and [`crate::Client::decrypt_decode`].

use std::sync::Arc;

use selene_ckks::ring::sampler::Expansion;
use selene_ckks::scheme::serialize::max_drop_bits;
use selene_ckks::{Ciphertext, Parameters};
use selene_codec::{packed_len, Reader, Writer};

use crate::coeff::CoeffLayout;
use crate::error::{Error, Result};
use crate::matrix::{Layout, LayoutKind};
use crate::modswitch::SwitchedCt;
use crate::slots::SlotLayout;
use crate::tiling::Tiling;
use crate::{MatrixShape, Method};

const MAGIC: [u8; 4] = *b"SLLA";
/// Version of outputs and layouts.
const VERSION: u8 = 1;
/// Version of inputs: 2 since the seed table.
const INPUT_VERSION: u8 = 2;

/// The version a message of `kind` travels under.
fn version(kind: u8) -> u8 {
    if kind == KIND_INPUT {
        INPUT_VERSION
    } else {
        VERSION
    }
}
const KIND_INPUT: u8 = 1;
const KIND_OUTPUT: u8 = 2;
const KIND_LAYOUT: u8 = 3;

/// Fields shared by both messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) fingerprint: [u8; 8],
    pub(crate) method: Method,
    pub(crate) shape: MatrixShape,
    pub(crate) tag: (usize, usize, usize),
    pub(crate) n: usize,
}

/// The client's encrypted `X` (`n x d_in`) in the layout of one prepared matrix.
#[derive(Clone, Debug)]
pub struct EncryptedInput {
    pub(crate) header: Header,
    pub(crate) cts: Vec<Ciphertext>,
    /// Low bits of each `c0` coefficient [`EncryptedInput::to_bytes`] drops
    /// ([`Ciphertext::encode_rounded`]); 0 on a parsed message.
    pub(crate) drop_bits: u32,
}

/// The server's encrypted `Y` (`n x d_out`), switched to the small download modulus.
#[derive(Clone, Debug)]
pub struct EncryptedOutput {
    pub(crate) header: Header,
    pub(crate) down_bits: u32,
    pub(crate) cts: Vec<SwitchedCt>,
}

fn put_u32(w: &mut Writer, v: usize) {
    // Every count written here is bounded by a ring degree or a matrix dimension.
    w.u32(v as u32);
}

fn put_header(w: &mut Writer, kind: u8, h: &Header, count: usize) {
    w.header(&MAGIC, version(kind));
    w.u8(kind);
    w.raw(&h.fingerprint);
    w.u8(match h.method {
        Method::Coefficients => 1,
        Method::Slots => 2,
    });
    for v in [
        h.shape.d_in,
        h.shape.d_out,
        h.tag.0,
        h.tag.1,
        h.tag.2,
        h.n,
        count,
    ] {
        put_u32(w, v);
    }
}

/// Reads the header up to `n`; the ciphertext count that follows is read by the caller,
/// which knows the size of its items.
fn read_header(r: &mut Reader<'_>, kind: u8, params: &Parameters) -> Result<Header> {
    r.header(&MAGIC, version(kind)..=version(kind))?;
    let at = r.offset();
    if r.u8("kind")? != kind {
        return Err(Error::Malformed {
            what: "kind",
            offset: at,
        });
    }
    let fingerprint = r.array("fingerprint")?;
    if fingerprint != params.fingerprint() {
        return Err(Error::ParamsMismatch {
            expected: params.fingerprint(),
            found: fingerprint,
        });
    }
    let at = r.offset();
    let method = match r.u8("method")? {
        1 => Method::Coefficients,
        2 => Method::Slots,
        _ => {
            return Err(Error::Malformed {
                what: "method",
                offset: at,
            })
        }
    };
    let mut v = [0usize; 6];
    for x in v.iter_mut() {
        *x = r.u32("header field")? as usize;
    }
    Ok(Header {
        fingerprint,
        method,
        shape: MatrixShape::new(v[0], v[1]),
        tag: (v[2], v[3], v[4]),
        n: v[5],
    })
}

impl EncryptedInput {
    /// The tiling tag of the layout it was encrypted for ([`crate::Layout::tag`]), so a
    /// server holding one matrix in several tilings picks the matching one.
    pub fn tag(&self) -> (usize, usize, usize) {
        self.header.tag
    }

    /// Number of tokens.
    pub fn tokens(&self) -> usize {
        self.header.n
    }

    /// Number of ciphertexts.
    pub fn ciphertexts(&self) -> usize {
        self.cts.len()
    }

    /// Ciphertext `i`, in the layout's order: public data the server holds anyway.
    pub fn ciphertext(&self, i: usize) -> Option<&Ciphertext> {
        self.cts.get(i)
    }

    /// Low bits of `c0` the serialization drops (chosen by the layout,
    /// [`crate::CoeffLayout::upload_drop_bits`]).
    pub fn drop_bits(&self) -> u32 {
        self.drop_bits
    }

    /// The same message serialized with `d` dropped bits instead (0: `c0` as encrypted,
    /// whole): for measuring what the rounding costs. A `d` the engine refuses keeps `c0`
    /// whole.
    pub fn with_drop_bits(mut self, d: u32) -> Self {
        self.drop_bits = d;
        self
    }

    /// Serializes the message (seed-compressed ciphertexts, `c0` rounded when
    /// [`EncryptedInput::drop_bits`] is not 0).
    pub fn to_bytes(&self, params: &Parameters) -> Vec<u8> {
        let mut w = Writer::new();
        put_header(&mut w, KIND_INPUT, &self.header, self.cts.len());
        let seeds = seed_table(&self.cts);
        put_u32(&mut w, seeds.len());
        for seed in &seeds {
            w.raw(seed);
        }
        for ct in &self.cts {
            // Only a fresh one-prime ciphertext rounds; anything else ships whole. A parsed
            // message (0) re-encodes each ciphertext as it arrived.
            let b = match self.drop_bits {
                0 => ct.encode(params),
                d => ct
                    .encode_rounded(params, d)
                    .unwrap_or_else(|_| ct.encode(params)),
            };
            put_u32(&mut w, b.len());
            w.raw(&b);
        }
        w.into_bytes()
    }

    /// Bytes on the wire: the length of [`EncryptedInput::to_bytes`].
    pub fn wire_bytes(&self, params: &Parameters) -> usize {
        self.to_bytes(params).len()
    }

    /// Parses a message for `params`.
    ///
    /// # Errors
    /// [`Error::Malformed`] on short, trailing or inconsistent bytes, parameter mismatch,
    /// and the engine's decoding errors.
    pub fn from_bytes(bytes: &[u8], params: &Arc<Parameters>) -> Result<Self> {
        let mut rd = Reader::new(bytes);
        let header = read_header(&mut rd, KIND_INPUT, params)?;
        // Each ciphertext takes at least its 4-byte length and a seeded body of `N`
        // coefficients of the first prime: a count the bytes cannot hold is refused before
        // anything is reserved (reserving by a 4-byte floor let a frame ask for 36x its
        // size in `Ciphertext` slots).
        let count = rd.count_u32("ciphertext count", usize::MAX, min_input_ct_bytes(params))?;
        let seeds = read_seed_table(&mut rd, count)?;
        let mut cts = Vec::with_capacity(count);
        for i in 0..count {
            let at = rd.offset();
            let ct = rd.bytes_u32("ciphertext", usize::MAX)?;
            let ct = Ciphertext::decode(ct, params)?;
            check_seed(&ct, &seeds, i, at)?;
            cts.push(ct);
        }
        rd.expect_end()?;
        Ok(Self {
            header,
            cts,
            drop_bits: 0,
        })
    }
}

/// Bytes of an input's header, ciphertext count and seed count: magic, version, kind,
/// fingerprint, method, six u32 fields and the two counts.
const INPUT_HEAD_BYTES: usize = 4 + 1 + 1 + 8 + 1 + 6 * 4 + 4 + 4;

/// The seeds of `cts`' `c1` when every one is fresh from secret-key encryption with a
/// ChaCha8 seed at level 0 (what the table promises a reader); empty otherwise.
fn seed_table(cts: &[Ciphertext]) -> Vec<[u8; 32]> {
    cts.iter()
        .map(|ct| {
            ct.seed()
                .filter(|s| s.expansion == Expansion::ChaCha8 && ct.level() == 0)
                .map(|s| s.bytes)
        })
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default()
}

/// Reads the seed table of an input of `count` ciphertexts: its count must be 0 or
/// `count`.
fn read_seed_table(rd: &mut Reader<'_>, count: usize) -> Result<Vec<[u8; 32]>> {
    let at = rd.offset();
    let seeds = rd.u32("seed count")? as usize;
    if seeds != 0 && seeds != count {
        return Err(Error::Malformed {
            what: "seed count",
            offset: at,
        });
    }
    (0..seeds).map(|_| Ok(rd.array("seed")?)).collect()
}

/// Errors unless ciphertext `i` (at `offset`) is what `seeds` promised: fresh at level 0
/// with a ChaCha8 seed equal to entry `i` (nothing to check without a table).
fn check_seed(ct: &Ciphertext, seeds: &[[u8; 32]], i: usize, offset: usize) -> Result<()> {
    let Some(want) = seeds.get(i) else {
        return Ok(());
    };
    let same = ct
        .seed()
        .is_some_and(|s| s.expansion == Expansion::ChaCha8 && &s.bytes == want);
    if !same || ct.level() != 0 {
        return Err(Error::Malformed {
            what: "a ciphertext other than its seed table entry",
            offset,
        });
    }
    Ok(())
}

/// An encrypted input read as its bytes arrive ([`crate::Server::stream`]): the header,
/// ciphertext count and seed table once they are in, then each ciphertext once all of it
/// is. Every length is checked against the input's announced size, as
/// [`EncryptedInput::from_bytes`] checks it against the bytes.
#[derive(Debug)]
pub(crate) struct InputReader {
    pub(crate) header: Header,
    /// Ciphertexts the input holds.
    pub(crate) count: usize,
    /// The seeds of their `c1` (empty when the input has no table).
    pub(crate) seeds: Vec<[u8; 32]>,
    /// Ciphertexts read so far.
    pub(crate) read: usize,
    /// The input's size in bytes.
    total: usize,
    /// Where the next ciphertext's length sits.
    at: usize,
}

impl InputReader {
    /// Reads the header, the ciphertext count and the seed table from `prefix`, the
    /// first bytes of an input of `total` bytes; `Ok(None)` while they have not all
    /// arrived.
    ///
    /// # Errors
    /// As [`EncryptedInput::from_bytes`] for the header and the table, or a count the
    /// `total` bytes cannot hold.
    pub(crate) fn start(prefix: &[u8], total: usize, params: &Parameters) -> Result<Option<Self>> {
        let prefix = &prefix[..prefix.len().min(total)];
        let whole = prefix.len() == total;
        if prefix.len() < INPUT_HEAD_BYTES && !whole {
            return Ok(None);
        }
        let mut rd = Reader::new(prefix);
        let header = read_header(&mut rd, KIND_INPUT, params)?;
        let at = rd.offset();
        let count = rd.u32("ciphertext count")? as usize;
        // Each ciphertext takes its table entry, if any, on top of its own bytes.
        if count.saturating_mul(min_input_ct_bytes(params)) > total - rd.offset() {
            return Err(Error::Malformed {
                what: "ciphertext count",
                offset: at,
            });
        }
        let (seeds_at, listed) = (rd.offset(), rd.clone().u32("seed count")? as usize);
        if listed != 0 && listed != count {
            return Err(Error::Malformed {
                what: "seed count",
                offset: seeds_at,
            });
        }
        if prefix.len() < (seeds_at + 4 + 32 * listed).min(total) && !whole {
            return Ok(None);
        }
        let seeds = read_seed_table(&mut rd, count)?;
        Ok(Some(Self {
            header,
            count,
            seeds,
            read: 0,
            total,
            at: rd.offset(),
        }))
    }

    /// The ciphertexts after those read so far that lie whole in `prefix` (the same
    /// input's first bytes, at least as many as before).
    ///
    /// # Errors
    /// A ciphertext length past the input's end, or one the engine cannot decode.
    pub(crate) fn next_whole(
        &mut self,
        prefix: &[u8],
        params: &Arc<Parameters>,
    ) -> Result<Vec<Ciphertext>> {
        let prefix = &prefix[..prefix.len().min(self.total)];
        let mut cts = Vec::new();
        while self.read < self.count && self.at + 4 <= prefix.len() {
            let mut rd = Reader::new(&prefix[self.at..]);
            let len = rd.u32("ciphertext length")? as usize;
            if len > self.total - self.at - 4 {
                return Err(Error::Malformed {
                    what: "ciphertext length",
                    offset: self.at,
                });
            }
            let Some(body) = prefix.get(self.at + 4..self.at + 4 + len) else {
                break;
            };
            let ct = Ciphertext::decode(body, params)?;
            check_seed(&ct, &self.seeds, self.read, self.at)?;
            cts.push(ct);
            self.at += 4 + len;
            self.read += 1;
        }
        Ok(cts)
    }

    /// Errors unless every ciphertext was read and they end the input exactly.
    pub(crate) fn check_end(&self) -> Result<()> {
        if self.read != self.count || self.at != self.total {
            return Err(Error::Malformed {
                what: "end of a streamed input",
                offset: self.at,
            });
        }
        Ok(())
    }
}

/// The fewest bytes an encrypted input's ciphertext takes on the wire: its length prefix,
/// a seeded body of `N` coefficients of the first prime (`c0`, rounded as far as the
/// engine allows) and the 32-byte seed.
fn min_input_ct_bytes(params: &Parameters) -> usize {
    let q_bits = params.ring().moduli()[0].bits();
    let kept = (q_bits - max_drop_bits(q_bits)) as usize;
    4 + (params.n() * kept).div_ceil(8) + 32
}

/// `count` values of `bits` bits, bit-packed in `bytes`.
fn unpack(bytes: &[u8], count: usize, bits: u32) -> Vec<u64> {
    let mut out = vec![0; count];
    selene_codec::unpack_bits(bytes, bits, &mut out);
    out
}

impl EncryptedOutput {
    /// Number of tokens.
    pub fn tokens(&self) -> usize {
        self.header.n
    }

    /// Number of ciphertexts.
    pub fn ciphertexts(&self) -> usize {
        self.cts.len()
    }

    /// Bits of the download modulus `2^down_bits`.
    pub fn down_bits(&self) -> u32 {
        self.down_bits
    }

    /// Ciphertext `i` as the server computed it, mod `2^down_bits`: `c0` at the used
    /// positions only (coefficient method) or in full (slots), and all of `c1`. Public
    /// data (the server's own view; the key-recovery test plays that server).
    pub fn switched(&self, i: usize) -> Option<(&[u64], &[u64])> {
        self.cts
            .get(i)
            .map(|ct| (ct.c0.as_slice(), ct.c1.as_slice()))
    }

    /// Ciphertext `i`, mutably (values taken mod `2^down_bits` when serialized): what an
    /// active server can send instead of the product, for tests of the client's checks.
    pub fn switched_mut(&mut self, i: usize) -> Option<(&mut [u64], &mut [u64])> {
        self.cts
            .get_mut(i)
            .map(|ct| (ct.c0.as_mut_slice(), ct.c1.as_mut_slice()))
    }

    /// Serializes the message.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        put_header(&mut w, KIND_OUTPUT, &self.header, self.cts.len());
        // Download bits are at most 60.
        w.u8(self.down_bits as u8);
        for ct in &self.cts {
            put_u32(&mut w, ct.c0.len());
            put_u32(&mut w, ct.c1.len());
            w.bits(&ct.c0, self.down_bits);
            w.bits(&ct.c1, self.down_bits);
        }
        w.into_bytes()
    }

    /// Bytes on the wire: the length of [`EncryptedOutput::to_bytes`].
    pub fn wire_bytes(&self) -> usize {
        let body: usize = self
            .cts
            .iter()
            .map(|ct| {
                8 + packed_len(ct.c0.len(), self.down_bits)
                    + packed_len(ct.c1.len(), self.down_bits)
            })
            .sum();
        MAGIC.len() + 2 + 8 + 1 + 7 * 4 + 1 + body
    }

    /// Parses a message for `params`.
    ///
    /// # Errors
    /// [`Error::Malformed`] on short, trailing or inconsistent bytes (components longer
    /// than `N`, a download modulus outside `1..=60` bits), parameter mismatch.
    pub fn from_bytes(bytes: &[u8], params: &Arc<Parameters>) -> Result<Self> {
        let mut rd = Reader::new(bytes);
        let header = read_header(&mut rd, KIND_OUTPUT, params)?;
        // Each ciphertext takes at least its two 4-byte lengths and a full `c1` of at
        // least one bit per coefficient: a count the bytes cannot hold is refused before
        // anything is reserved.
        let count = rd.count_u32("ciphertext count", usize::MAX, 8 + params.n() / 8)?;
        let at = rd.offset();
        let down_bits = u32::from(rd.u8("download bits")?);
        if !(1..=60).contains(&down_bits) {
            return Err(Error::Malformed {
                what: "download bits",
                offset: at,
            });
        }
        let mut cts = Vec::with_capacity(count);
        for _ in 0..count {
            let (l0, l1) = (rd.u32("c0 length")?, rd.u32("c1 length")?);
            let (l0, l1) = (l0 as usize, l1 as usize);
            // `c1` is always whole (decryption needs all of it); `c0` may be cut to the
            // coefficients read.
            if l0 > params.n() || l1 != params.n() {
                return Err(Error::Malformed {
                    what: "component length",
                    offset: rd.offset(),
                });
            }
            let c0 = unpack(rd.take("c0", packed_len(l0, down_bits))?, l0, down_bits);
            let c1 = unpack(rd.take("c1", packed_len(l1, down_bits))?, l1, down_bits);
            cts.push(SwitchedCt { c0, c1 });
        }
        rd.expect_end()?;
        Ok(Self {
            header,
            down_bits,
            cts,
        })
    }
}

/// Largest matrix dimension a layout may announce (SmolLM2's widest is 49,152).
const MAX_LAYOUT_DIM: usize = 1 << 20;

impl Layout {
    /// Serializes the layout (public data: the server sends it to the client).
    pub fn to_bytes(&self) -> Vec<u8> {
        let (extra, down_bits, scales) = match &self.kind {
            LayoutKind::Coefficients(c) => (c.x_bits as usize, c.down_bits, &c.col_scale),
            LayoutKind::Slots(s) => (s.segment, s.down_bits, &s.col_scale),
        };
        let header = Header {
            fingerprint: self.fingerprint,
            method: self.method(),
            shape: self.shape,
            tag: self.tag(),
            n: scales.len(),
        };
        let mut w = Writer::with_capacity(64 + 8 * scales.len());
        put_header(&mut w, KIND_LAYOUT, &header, 0);
        put_u32(&mut w, extra);
        // Download bits are below 64 for every method.
        w.u8(down_bits as u8);
        for &s in scales {
            w.f64(s);
        }
        w.into_bytes()
    }

    /// Parses a layout made for `params`, checking every field against what the method
    /// derives from the parameters (tiling within the ring, the method's bit widths,
    /// finite positive column scales) before allocating.
    ///
    /// # Errors
    /// [`Error::Malformed`] naming the first bad field, [`Error::ParamsMismatch`] for a
    /// layout made for other parameters.
    pub fn from_bytes(bytes: &[u8], params: &Parameters) -> Result<Self> {
        let mut rd = Reader::new(bytes);
        let h = read_header(&mut rd, KIND_LAYOUT, params)?;
        let count = rd.u32("ciphertext count")?;
        let bad = |what: &'static str, offset: usize| Error::Malformed { what, offset };
        let (d_in, d_out) = (h.shape.d_in, h.shape.d_out);
        if count != 0
            || d_in == 0
            || d_out == 0
            || d_in > MAX_LAYOUT_DIM
            || d_out > MAX_LAYOUT_DIM
            || h.n != d_out
        {
            return Err(bad("layout shape", 0));
        }
        let extra = rd.u32("layout method field")? as usize;
        let down_bits = u32::from(rd.u8("download bits")?);
        if rd.remaining() != d_out * 8 {
            return Err(bad("column scale count", rd.offset()));
        }
        let col_scale = (0..d_out)
            .map(|_| rd.f64("column scale"))
            .collect::<selene_codec::Result<Vec<f64>>>()?;
        if col_scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(bad("column scale", 0));
        }
        let (a, b, c) = h.tag;
        let kind = match h.method {
            Method::Coefficients => {
                let q_bits = params.ring().moduli()[0].bits();
                let want_down = crate::coeff::down_bits(params);
                let packs = crate::coeff::packs(params);
                // Unpacked, the tiling is a function of the ring, the shape and n_b:
                // recompute it. Packed, the server chose it for a link: check that it
                // fits the ring, has a power-of-two k_i (the packing grid) and no block
                // wider than the matrix needs.
                let tiling = Tiling {
                    n_b: a,
                    k_i: b,
                    k_o: c,
                };
                let fits = if packs {
                    tiling.packed_fits(params.n(), d_in, d_out)
                } else {
                    (1..=params.n()).contains(&a)
                        && Tiling::choose(params.n(), d_in, d_out, a, q_bits, want_down) == tiling
                };
                let pack_levels = if packs && fits {
                    tiling.pack_levels(d_out)
                } else {
                    0
                };
                if !fits || extra != crate::coeff::x_bits(params, pack_levels)? as usize {
                    return Err(bad("coefficient tiling or input bits", 0));
                }
                if down_bits != want_down {
                    return Err(bad("download bits", 0));
                }
                LayoutKind::Coefficients(CoeffLayout {
                    tiling,
                    col_scale,
                    x_bits: extra as u32,
                    w_bits: crate::coeff::w_bits(params),
                    down_bits,
                    pack_levels,
                    hoist_levels: tiling.hoist_levels(
                        d_in,
                        d_out,
                        pack_levels,
                        crate::coeff::packing(params),
                    ),
                    merge_gain_bits: if crate::coeff::exact_merges(params) {
                        0
                    } else {
                        pack_levels
                    },
                })
            }
            Method::Slots => {
                let segment = d_in + d_out - 1;
                let slots = params.slots();
                if extra != segment
                    || segment > slots
                    || a != slots / segment
                    || (b, c) != crate::slots::bsgs(d_in)
                    || down_bits != crate::slots::DOWN_BITS
                {
                    return Err(bad("slot layout", 0));
                }
                LayoutKind::Slots(SlotLayout {
                    baby: b,
                    giant: c,
                    segment,
                    tokens_per_ct: a,
                    col_scale,
                    down_bits,
                })
            }
        };
        Ok(Layout {
            shape: h.shape,
            fingerprint: h.fingerprint,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_packing_round_trips() {
        for bits in [1u32, 7, 24, 36, 60] {
            let mask = (1u64 << bits) - 1;
            let v: Vec<u64> = (0..37u64)
                .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) & mask)
                .collect();
            let mut w = Writer::new();
            w.bits(&v, bits);
            let out = w.into_bytes();
            assert_eq!(out.len(), packed_len(v.len(), bits));
            assert_eq!(unpack(&out, v.len(), bits), v);
        }
    }

    #[test]
    fn layouts_round_trip_and_reject_tampering() {
        use crate::{LinalgPreset, PreparedMatrix};
        let shape = MatrixShape::new(8, 5);
        let w: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin()).collect();
        for (preset, method) in [
            (LinalgPreset::Coeff11, Method::Coefficients),
            (LinalgPreset::Coeff12Wide, Method::Coefficients),
            (LinalgPreset::Slots13, Method::Slots),
        ] {
            let params = preset.build().unwrap();
            let m = PreparedMatrix::new(&params, &w, shape, method, 1).unwrap();
            let bytes = m.layout().to_bytes();
            assert_eq!(&Layout::from_bytes(&bytes, &params).unwrap(), m.layout());
            for cut in 0..bytes.len() {
                assert!(
                    Layout::from_bytes(&bytes[..cut], &params).is_err(),
                    "cut {cut}"
                );
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(Layout::from_bytes(&long, &params).is_err());
            // A flipped bit in magic, version, kind or fingerprint is refused; anywhere
            // else in the header it is refused or makes another valid layout (e.g. a
            // different n_b), never this one.
            for i in 0..bytes.len() - 5 * 8 {
                let mut b = bytes.clone();
                b[i] ^= 0x10;
                if let Ok(l) = Layout::from_bytes(&b, &params) {
                    assert!(i >= 14 && &l != m.layout(), "byte {i}");
                }
            }
            let other = LinalgPreset::Coeff12.build().unwrap();
            assert!(Layout::from_bytes(&bytes, &other).is_err());
        }
    }
}
