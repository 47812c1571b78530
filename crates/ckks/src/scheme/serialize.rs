//! Versioned binary format for ciphertexts and public keys.
//!
//! Every object: magic `b"SELN"`, format version (u16 LE), kind (u8), the 8-byte parameter
//! fingerprint; then the object's header fields and its residues, bit-packed row by row at
//! each prime's bit width (LSB first). A fresh (seeded) ciphertext or key ships the 32-byte
//! seed instead of its uniform `a` component: keys expand it by ChaCha20, a ciphertext by
//! the stream its flags name (ChaCha20 or ChaCha8, [`crate::ring::sampler::Expansion`]).
//! Decoding takes the `Parameters`: every size comes from them, never from the stream, and
//! is checked against the input length before anything is allocated; every residue is
//! checked below its prime; trailing bytes are an error. Integrity against tampering is
//! the transport's job (TLS); decoding guarantees only that malformed input yields `Err`,
//! never a panic.

use std::sync::Arc;

use selene_codec::{Reader, Writer};

use crate::error::{Error, Result};
use crate::params::Parameters;
use crate::ring::sampler::{uniform_poly_by, Expansion, Seed};
use crate::ring::{Ntt, Poly};
use crate::rlwe::{GaloisKey, KeySwitchKey, PublicKey, RelinKey};

use super::ciphertext::Ciphertext;
use super::{Encoding, Scale};

/// Magic bytes opening every object.
pub const MAGIC: [u8; 4] = *b"SELN";
/// Current format version.
pub const VERSION: u16 = 1;
/// Length of the common header.
pub const HEADER_LEN: usize = 4 + 2 + 1 + 8;
/// A ciphertext's flags: both components follow.
const FLAG_FULL: u8 = 0;
/// `c0` and the seed of `c1`, expanded by ChaCha20 (builds before wire version 4 write it).
const FLAG_SEED_CHACHA20: u8 = 1;
/// `c0` and the seed of `c1`, expanded by ChaCha8 (fresh ciphertexts since wire version
/// 4). A reader without this flag refuses it as an invalid header.
const FLAG_SEED_CHACHA8: u8 = 2;
/// A fresh ChaCha8-seeded ciphertext at level 0 whose `c0` ships in coefficient form
/// without its low `d` bits (a u8 after the flags), then the seed of `c1`
/// ([`Ciphertext::encode_rounded`]).
const FLAG_ROUNDED_CHACHA8: u8 = 3;
/// Most low bits a rounded `c0` may drop for a first prime of `q_bits` bits
/// ([`Ciphertext::encode_rounded`]): at most 32, and at least 8 bits stay.
pub fn max_drop_bits(q_bits: u32) -> u32 {
    q_bits.saturating_sub(8).min(32)
}

/// Object kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A ciphertext.
    Ciphertext = 1,
    /// A public key.
    PublicKey = 2,
    /// A relinearization key.
    RelinKey = 3,
    /// A Galois key.
    GaloisKey = 4,
}

fn header(w: &mut Writer, kind: Kind, params: &Parameters) {
    w.header(&MAGIC, VERSION);
    w.u8(kind as u8);
    w.raw(&params.fingerprint());
}

/// Bytes of `rows` bit-packed rows of a polynomial (`q_rows` Q rows, `p_rows` P rows).
fn packed_len(params: &Parameters, q_rows: usize, p_rows: usize) -> usize {
    let ring = params.ring();
    let n = ring.n();
    (0..q_rows + p_rows)
        .map(|r| n * ring.moduli()[ring.modulus_index(q_rows, r)].bits() as usize / 8)
        .sum()
}

fn pack(params: &Parameters, p: &Poly<Ntt>, w: &mut Writer) {
    let ring = params.ring();
    for r in 0..p.rows() {
        // N * bits is a multiple of 8 (N >= 1024), so rows need no padding.
        w.bits(p.row(r), ring.moduli()[p.modulus_index(ring, r)].bits());
    }
}

/// Reads the common header, checking magic, version, kind and parameter fingerprint.
fn read_header(r: &mut Reader<'_>, kind: Kind, params: &Parameters) -> Result<()> {
    r.header(&MAGIC, VERSION..=VERSION)?;
    let k = r.u8("kind")?;
    if k != kind as u8 {
        return Err(Error::WrongKind {
            expected: kind as u8,
            found: k,
        });
    }
    let found = r.array("parameter fingerprint")?;
    if found != params.fingerprint() {
        return Err(Error::ParameterMismatch {
            expected: params.fingerprint(),
            found,
        });
    }
    Ok(())
}

/// The body of `len` bytes that must end the input: errors on short or trailing input
/// before anything is decoded.
fn exact_body<'a>(r: &mut Reader<'a>, len: usize) -> Result<Reader<'a>> {
    let body = r.sub("body", len)?;
    r.expect_end()?;
    Ok(body)
}

fn read_poly(
    r: &mut Reader<'_>,
    params: &Parameters,
    level: usize,
    with_p: bool,
) -> Result<Poly<Ntt>> {
    let ring = params.ring();
    let n = ring.n();
    let mut p = Poly::<Ntt>::zero(ring, level, with_p);
    let q_rows = p.q_rows();
    for row in 0..p.rows() {
        let idx = ring.modulus_index(q_rows, row);
        let m = ring.moduli()[idx];
        let bits = m.bits();
        let src = r.take("residues", n * bits as usize / 8)?;
        let row_values = p.row_mut(row);
        selene_codec::unpack_bits(src, bits, row_values);
        if let Some((k, &v)) = row_values.iter().enumerate().find(|(_, &v)| v >= m.value()) {
            return Err(Error::CoefficientOutOfRange {
                row: idx,
                index: k,
                value: v,
                modulus: m.value(),
            });
        }
    }
    Ok(p)
}

impl Ciphertext {
    /// Serializes the ciphertext (compressed to its seed while fresh; with `c0` rounded
    /// as it arrived, when it was decoded from a rounded form).
    pub fn encode(&self, params: &Parameters) -> Vec<u8> {
        if self.dropped_bits > 0 {
            if let Ok(bytes) = self.encode_rounded(params, self.dropped_bits) {
                return bytes;
            }
        }
        self.encode_whole(params)
    }

    /// The common header, level, scale, encoding and `flag` of a ciphertext, in a writer
    /// with room for `body` more bytes.
    fn writer_with_header(&self, params: &Parameters, flag: u8, body: usize) -> Writer {
        let mut w = Writer::with_capacity(HEADER_LEN + 12 + body);
        header(&mut w, Kind::Ciphertext, params);
        // Levels are below the prime count, which is far below 256.
        w.u8(self.level() as u8);
        w.f64(self.scale.0);
        w.u8(match self.encoding {
            Encoding::Slots => 0,
            Encoding::Coefficients => 1,
        });
        w.u8(flag);
        w
    }

    /// [`Self::encode`] with `c0` whole.
    fn encode_whole(&self, params: &Parameters) -> Vec<u8> {
        let body = packed_len(params, self.level() + 1, 0);
        let flag = match self.seed.map(|s| s.expansion) {
            None => FLAG_FULL,
            Some(Expansion::ChaCha20) => FLAG_SEED_CHACHA20,
            Some(Expansion::ChaCha8) => FLAG_SEED_CHACHA8,
        };
        let mut w = self.writer_with_header(params, flag, 2 * body);
        pack(params, &self.c0, &mut w);
        match &self.seed {
            Some(seed) => w.raw(&seed.bytes),
            None => pack(params, &self.c1, &mut w),
        }
        w.into_bytes()
    }

    /// Serializes a fresh (ChaCha8-seeded) ciphertext at level 0 with `c0` rounded: in
    /// coefficient form, each coefficient `x` sent as `floor(x / 2^d)` in `bits(q) - d`
    /// bits and read back as the midpoint `floor(x / 2^d) 2^d + 2^(d-1)`. That adds an
    /// error of at most `2^(d-1)` to every coefficient of the decryption, uniform and
    /// independent of the message's scale, so a caller whose message sits far above its
    /// encryption noise trades precision it does not use for `d N` bits of upload (the
    /// compression of `c0` by dropping low bits, as Kyber's `Compress_q` does: Bos et
    /// al., EuroS&P 2018). What the reader sees is a function of
    /// the ciphertext, so IND-CPA security is unchanged. `d = 0` ships `c0` whole.
    /// (The last interval below `q` may be shorter than `2^d`; its midpoint is its own.)
    ///
    /// # Errors
    /// [`Error::InvalidRounding`] for a ciphertext that is not fresh with a ChaCha8 seed
    /// at level 0, or `d` above `min(32, bits(q) - 8)`.
    pub fn encode_rounded(&self, params: &Parameters, d: u32) -> Result<Vec<u8>> {
        if d == 0 {
            return Ok(self.encode_whole(params));
        }
        let ring = params.ring();
        let q = ring.moduli()[0];
        let max = max_drop_bits(q.bits());
        let fresh = self.seed.is_some_and(|s| s.expansion == Expansion::ChaCha8);
        if self.level() != 0 || !fresh || d > max {
            return Err(Error::InvalidRounding {
                drop_bits: d,
                max,
                level: self.level(),
            });
        }
        let mut x = self.c0.row(0).to_vec();
        ring.plan(0).backward(&mut x);
        for v in &mut x {
            *v >>= d;
        }
        let body = 1 + rounded_len(params, d) + 32;
        let mut w = self.writer_with_header(params, FLAG_ROUNDED_CHACHA8, body);
        // d <= 32.
        w.u8(d as u8);
        w.bits(&x, q.bits() - d);
        if let Some(seed) = &self.seed {
            w.raw(&seed.bytes);
        }
        Ok(w.into_bytes())
    }

    /// Parses a ciphertext for `params`.
    pub fn decode(bytes: &[u8], params: &Arc<Parameters>) -> Result<Self> {
        let mut rd = Reader::new(bytes);
        read_header(&mut rd, Kind::Ciphertext, params)?;
        let level = rd.u8("level")? as usize;
        if level > params.max_level() {
            return Err(Error::InvalidHeader {
                field: "level",
                value: level as u64,
            });
        }
        let scale_bits = rd.u64("scale")?;
        let scale = f64::from_bits(scale_bits);
        if !scale.is_finite() || scale <= 0.0 {
            return Err(Error::InvalidHeader {
                field: "scale",
                value: scale_bits,
            });
        }
        let encoding = match rd.u8("encoding")? {
            0 => Encoding::Slots,
            1 => Encoding::Coefficients,
            e => {
                return Err(Error::InvalidHeader {
                    field: "encoding",
                    value: e.into(),
                })
            }
        };
        let seeded = match rd.u8("flags")? {
            FLAG_FULL => None,
            FLAG_SEED_CHACHA20 => Some(Expansion::ChaCha20),
            FLAG_SEED_CHACHA8 => Some(Expansion::ChaCha8),
            FLAG_ROUNDED_CHACHA8 => {
                let (c0, dropped_bits) = read_rounded_c0(&mut rd, params, level)?;
                let bytes = rd.array("seed")?;
                rd.expect_end()?;
                let expansion = Expansion::ChaCha8;
                return Ok(Self {
                    c0,
                    c1: uniform_poly_by(params.ring(), &bytes, 0, false, expansion),
                    scale: Scale(scale),
                    encoding,
                    seed: Some(Seed { bytes, expansion }),
                    dropped_bits,
                });
            }
            f => {
                return Err(Error::InvalidHeader {
                    field: "flags",
                    value: f.into(),
                })
            }
        };
        let body = packed_len(params, level + 1, 0);
        let len = if seeded.is_some() {
            body + 32
        } else {
            2 * body
        };
        let mut rd = exact_body(&mut rd, len)?;
        let c0 = read_poly(&mut rd, params, level, false)?;
        let (c1, seed) = match seeded {
            Some(expansion) => {
                let bytes = rd.array("seed")?;
                let c1 = uniform_poly_by(params.ring(), &bytes, level, false, expansion);
                (c1, Some(Seed { bytes, expansion }))
            }
            None => (read_poly(&mut rd, params, level, false)?, None),
        };
        Ok(Self {
            c0,
            c1,
            scale: Scale(scale),
            encoding,
            seed,
            dropped_bits: 0,
        })
    }
}

/// Bytes of a rounded `c0` that dropped `d` bits.
fn rounded_len(params: &Parameters, d: u32) -> usize {
    // N * bits is a multiple of 8 (N >= 1024).
    params.n() * (params.ring().moduli()[0].bits() - d) as usize / 8
}

/// Reads a rounded `c0` ([`Ciphertext::encode_rounded`]): the dropped bits `d`, then the
/// truncated coefficients, each at most `(q - 1) / 2^d`; returns `c0` in NTT form with
/// every coefficient at the midpoint of its interval (the last, `[m 2^d, q)`, may be
/// shorter), and `d`.
fn read_rounded_c0(
    rd: &mut Reader<'_>,
    params: &Parameters,
    level: usize,
) -> Result<(Poly<Ntt>, u32)> {
    let ring = params.ring();
    let q = ring.moduli()[0];
    if level != 0 {
        return Err(Error::InvalidHeader {
            field: "level",
            value: level as u64,
        });
    }
    let d = u32::from(rd.u8("dropped bits")?);
    if d == 0 || d > max_drop_bits(q.bits()) {
        return Err(Error::InvalidHeader {
            field: "dropped bits",
            value: d.into(),
        });
    }
    let src = rd.take("rounded residues", rounded_len(params, d))?;
    let mut c0 = Poly::<Ntt>::zero(ring, 0, false);
    let row = c0.row_mut(0);
    selene_codec::unpack_bits(src, q.bits() - d, row);
    let top = (q.value() - 1) >> d;
    if let Some((k, &v)) = row.iter().enumerate().find(|(_, &v)| v > top) {
        return Err(Error::CoefficientOutOfRange {
            row: 0,
            index: k,
            value: v << d,
            modulus: q.value(),
        });
    }
    // Every midpoint stays below q, so re-encoding finds the same interval.
    let half = 1u64 << (d - 1);
    let last_half = (q.value() - (top << d)) / 2;
    for v in row.iter_mut() {
        *v = (*v << d) + if *v == top { last_half } else { half };
    }
    ring.plan(0).forward(row);
    Ok((c0, d))
}

impl PublicKey {
    /// Serializes the key (`b` plus the seed of `a`).
    pub fn encode(&self) -> Vec<u8> {
        let params = self.params();
        let mut w = Writer::new();
        header(&mut w, Kind::PublicKey, params);
        w.raw(self.seed());
        pack(params, &self.b, &mut w);
        w.into_bytes()
    }

    /// Parses a public key for `params`.
    pub fn decode(bytes: &[u8], params: &Arc<Parameters>) -> Result<Self> {
        let mut rd = Reader::new(bytes);
        read_header(&mut rd, Kind::PublicKey, params)?;
        let len = 32 + packed_len(params, params.max_level() + 1, params.p().len());
        let mut rd = exact_body(&mut rd, len)?;
        let seed = rd.array("seed")?;
        let b = read_poly(&mut rd, params, params.max_level(), true)?;
        Ok(Self::from_parts(params.clone(), b, seed))
    }
}

fn encode_ksk(ksk: &KeySwitchKey, kind: Kind, extra: u64) -> Vec<u8> {
    let params = ksk.params();
    let mut w = Writer::new();
    header(&mut w, kind, params);
    w.u64(extra);
    w.raw(ksk.seed());
    for b in ksk.b() {
        pack(params, b, &mut w);
    }
    w.into_bytes()
}

fn decode_ksk(bytes: &[u8], params: &Arc<Parameters>, kind: Kind) -> Result<(u64, KeySwitchKey)> {
    let mut rd = Reader::new(bytes);
    read_header(&mut rd, kind, params)?;
    let extra = rd.u64("key header")?;
    let one = packed_len(params, params.max_level() + 1, params.p().len());
    let mut rd = exact_body(&mut rd, 32 + params.key_digits() * one)?;
    let seed = rd.array("seed")?;
    let b = (0..params.key_digits())
        .map(|_| read_poly(&mut rd, params, params.max_level(), true))
        .collect::<Result<Vec<_>>>()?;
    Ok((extra, KeySwitchKey::from_parts(params.clone(), b, seed)))
}

impl RelinKey {
    /// Serializes the key (`b` per digit plus the seed of the `a`s).
    pub fn encode(&self) -> Vec<u8> {
        encode_ksk(&self.ksk, Kind::RelinKey, 0)
    }

    /// Parses a relinearization key for `params`.
    pub fn decode(bytes: &[u8], params: &Arc<Parameters>) -> Result<Self> {
        let (extra, ksk) = decode_ksk(bytes, params, Kind::RelinKey)?;
        if extra != 0 {
            return Err(Error::InvalidHeader {
                field: "reserved",
                value: extra,
            });
        }
        Ok(Self::from_ksk(ksk))
    }
}

impl GaloisKey {
    /// Serializes the key with its Galois element.
    pub fn encode(&self) -> Vec<u8> {
        encode_ksk(&self.key_switch_key(), Kind::GaloisKey, self.element())
    }

    /// Parses a Galois key for `params`.
    pub fn decode(bytes: &[u8], params: &Arc<Parameters>) -> Result<Self> {
        let (g, ksk) = decode_ksk(bytes, params, Kind::GaloisKey)?;
        if g % 2 == 0 || g >= 2 * params.n() as u64 {
            return Err(Error::InvalidHeader {
                field: "galois_element",
                value: g,
            });
        }
        Ok(Self::from_ksk(g, ksk))
    }
}
