//! The crate's error type.

use selene_codec::{CodecError, ErrorKind};

use crate::scheme::encoding::Encoding;

/// Everything that can go wrong in `selene-ckks`. Variants carry the offending values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Ring degree outside the supported range.
    #[error("log N = {log_n} is outside the supported range {min}..={max}")]
    InvalidLogN {
        /// Requested log N.
        log_n: u32,
        /// Smallest supported.
        min: u32,
        /// Largest supported.
        max: u32,
    },
    /// A prime size outside what the ring supports.
    #[error("prime size {bits} bits is outside {min}..={max} for log N = {log_n}")]
    InvalidPrimeBits {
        /// Requested bits.
        bits: u32,
        /// Smallest allowed.
        min: u32,
        /// Largest allowed.
        max: u32,
        /// Ring degree.
        log_n: u32,
    },
    /// No `Q` primes or no special primes were requested.
    #[error("need at least one Q prime and one P prime, got {q} and {p}")]
    EmptyModulusChain {
        /// Number of Q primes requested.
        q: usize,
        /// Number of P primes requested.
        p: usize,
    },
    /// Not enough NTT-friendly primes of some size.
    #[error("not enough NTT-friendly primes of {bits} bits for log N = {log_n}")]
    NotEnoughPrimes {
        /// Prime size.
        bits: u32,
        /// Ring degree.
        log_n: u32,
    },
    /// More primes than the lazy `u128` accumulations allow.
    #[error("{count} primes requested, at most {max} are supported")]
    TooManyPrimes {
        /// Primes requested (Q and P).
        count: usize,
        /// Supported maximum.
        max: usize,
    },
    /// Number of key-switching digits out of range.
    #[error("dnum = {dnum} must be in 1..={q_primes} (number of Q primes)")]
    InvalidDnum {
        /// Requested digits.
        dnum: usize,
        /// Number of Q primes.
        q_primes: usize,
    },
    /// A gadget base needs one prime per key-switching digit, `8 <= w <= 61` bits, and
    /// every prime wider than `w` bits.
    #[error(
        "gadget base 2^{log_base} needs one Q prime per key-switching digit (dnum = {dnum}, \
         {q_primes} Q primes), 8 <= log_base <= 61, and every prime wider than it"
    )]
    InvalidGadgetBase {
        /// Requested bits of the base.
        log_base: u32,
        /// Key-switching digits.
        dnum: usize,
        /// Number of Q primes.
        q_primes: usize,
    },
    /// Scale outside `(0, 2^62)` or not representable.
    #[error("log scale {log_scale} must be in 1..=61")]
    InvalidLogScale {
        /// Requested log2 of the scale.
        log_scale: u32,
    },
    /// The parameter set is weaker than the HE-standard 128-bit bound.
    #[error(
        "log QP = {log_qp:.2} exceeds the 128-bit HE-standard bound {max_log_qp} for N = 2^{log_n}; \
         use Security::DangerousNoSecurityCheck to build it anyway"
    )]
    InsecureParameters {
        /// Ring degree.
        log_n: u32,
        /// Exact log2 of QP.
        log_qp: f64,
        /// Bound for this ring degree.
        max_log_qp: u32,
    },
    /// Operands at different levels.
    #[error("level mismatch: {left} vs {right}")]
    LevelMismatch {
        /// Level of the first operand.
        left: usize,
        /// Level of the second operand.
        right: usize,
    },
    /// Operands at different scales.
    #[error("scale mismatch: 2^{:.4} vs 2^{:.4}", left.log2(), right.log2())]
    ScaleMismatch {
        /// Scale of the first operand.
        left: f64,
        /// Scale of the second operand.
        right: f64,
    },
    /// Operands with different encodings.
    #[error("encoding mismatch: {left:?} vs {right:?}")]
    EncodingMismatch {
        /// Encoding of the first operand.
        left: Encoding,
        /// Encoding of the second operand.
        right: Encoding,
    },
    /// A level that does not exist or is too low for the operation.
    #[error("level {level} is outside {min}..={max} for this operation")]
    InvalidLevel {
        /// Requested or current level.
        level: usize,
        /// Lowest allowed.
        min: usize,
        /// Highest allowed.
        max: usize,
    },
    /// More values than the encoding has room for.
    #[error("{got} values do not fit in {max} slots/coefficients")]
    TooManyValues {
        /// Values given.
        got: usize,
        /// Capacity.
        max: usize,
    },
    /// A value times the scale does not fit the encoder's integer range.
    #[error("value {value} times scale 2^{log_scale:.2} exceeds 2^62")]
    ValueOutOfRange {
        /// The offending value.
        value: f64,
        /// log2 of the scale.
        log_scale: f64,
    },
    /// The canonical embedding rejected its input.
    #[error("slot encoding failed")]
    Embedding(#[from] crate::embedding::EmbeddingError),
    /// A packing of a count that is not a power of two at most `2^log_gap`, or of nothing.
    #[error("cannot pack {count} ciphertexts on a grid of 2^{log_gap}: the count must be a power of two, at most the grid, with at least one ciphertext")]
    InvalidPacking {
        /// Ciphertexts given.
        count: usize,
        /// `log2` of the grid of the inputs' useful coefficients.
        log_gap: u32,
    },
    /// A rotation or conjugation without its Galois key.
    #[error("no Galois key for element {galois_element}")]
    MissingGaloisKey {
        /// The missing Galois element.
        galois_element: u64,
    },
    /// A ciphertext product without a relinearization key.
    #[error("no relinearization key in this evaluator")]
    MissingRelinKey,
    /// An object made for another parameter set.
    #[error("parameter fingerprint mismatch: expected {expected:02x?}, found {found:02x?}")]
    ParameterMismatch {
        /// Fingerprint of the parameters in use.
        expected: [u8; 8],
        /// Fingerprint carried by the object.
        found: [u8; 8],
    },
    /// Invalid flooding configuration.
    #[error("flooding sigma {sigma} must be finite and in [0, 2^60]")]
    InvalidFloodingSigma {
        /// The requested standard deviation.
        sigma: f64,
    },
    /// A power-of-two modulus `2^bits` outside what the modulus switch supports.
    #[error("power-of-two modulus 2^{bits} is outside 2^1..=2^{max}")]
    InvalidPow2Bits {
        /// Requested bits.
        bits: u32,
        /// Largest supported.
        max: u32,
    },
    /// A rounded encoding ([`crate::Ciphertext::encode_rounded`]) of a ciphertext that is
    /// not fresh at level 0, or dropping more bits than it allows.
    #[error(
        "a rounded ciphertext drops 1..={max} low bits of c0 of a fresh (ChaCha8-seeded) \
         ciphertext at level 0; got {drop_bits} bits at level {level}"
    )]
    InvalidRounding {
        /// Bits asked to drop.
        drop_bits: u32,
        /// Largest allowed for this prime.
        max: u32,
        /// The ciphertext's level.
        level: usize,
    },
    /// `c1 s` of a ciphertext switched to `2^bits` does not lift exactly through `q` (or
    /// `q p`).
    #[error("2^{bits} ciphertexts at log N = {log_n} need a lift modulus of at least {} bits, q (times the first P prime) gives {q_bits}", bits + log_n + 2)]
    Pow2LiftTooWide {
        /// Bits of the power-of-two modulus.
        bits: u32,
        /// Ring degree.
        log_n: u32,
        /// Bits the lift is computed in: `q`'s, or `q p`'s less one.
        q_bits: u32,
    },
    /// A switched component with other than `N` values.
    #[error("switched component has {found} values, expected {expected}")]
    Pow2Length {
        /// Values given.
        found: usize,
        /// The ring degree.
        expected: usize,
    },
    /// Serialized input ended early.
    #[error("truncated input: needed {needed} bytes at offset {offset}, {available} available")]
    Truncated {
        /// Offset of the read.
        offset: usize,
        /// Bytes needed.
        needed: usize,
        /// Bytes left.
        available: usize,
    },
    /// Serialized input does not start with the magic.
    #[error("bad magic {found:02x?}")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// Unknown format version.
    #[error("unsupported format version {found} (supported: {supported})")]
    UnsupportedVersion {
        /// Version in the stream.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// The serialized object is of another kind.
    #[error("wrong object kind {found} (expected {expected})")]
    WrongKind {
        /// Expected kind tag.
        expected: u8,
        /// Kind tag in the stream.
        found: u8,
    },
    /// A header field has an invalid value.
    #[error("invalid header field {field}: {value}")]
    InvalidHeader {
        /// Which field.
        field: &'static str,
        /// Its raw value.
        value: u64,
    },
    /// A coefficient is not below its prime.
    #[error("coefficient {index} of row {row} is {value}, not below its prime {modulus}")]
    CoefficientOutOfRange {
        /// Row (prime index).
        row: usize,
        /// Coefficient index.
        index: usize,
        /// The value read.
        value: u64,
        /// The prime.
        modulus: u64,
    },
    /// Bytes left over after the object.
    #[error("{count} trailing bytes after the object")]
    TrailingBytes {
        /// Number of extra bytes.
        count: usize,
    },
    /// Any other decoding error of the shared codec (no format of this crate has length
    /// prefixes or strings, so none is expected).
    #[error(transparent)]
    Codec(CodecError),
}

impl From<CodecError> for Error {
    /// The codec's errors as this crate's own variants, which the tests match on.
    fn from(e: CodecError) -> Self {
        match e.kind {
            ErrorKind::Short { needed, left } => Error::Truncated {
                offset: e.offset,
                needed,
                available: left,
            },
            ErrorKind::Trailing { count } => Error::TrailingBytes { count },
            ErrorKind::BadMagic { found, .. } => Error::BadMagic { found },
            // Every version of this crate is a u16.
            ErrorKind::UnsupportedVersion { found, max, .. } => Error::UnsupportedVersion {
                found: found as u16,
                supported: max as u16,
            },
            ErrorKind::OverMax { .. } | ErrorKind::BadUtf8 { .. } => Error::Codec(e),
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
