//! The crate's error type: every shape, layout or parameter mismatch names both values.

use crate::Method;

/// Errors of encrypted matrix products.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A matrix dimension is zero.
    #[error("empty matrix shape {d_in} x {d_out}")]
    EmptyShape {
        /// Inputs.
        d_in: usize,
        /// Outputs.
        d_out: usize,
    },
    /// A slice has the wrong length for the declared shape.
    #[error("{what}: got {found} values, expected {expected}")]
    Length {
        /// Which argument.
        what: &'static str,
        /// Length given.
        found: usize,
        /// Length the shape asks for.
        expected: usize,
    },
    /// A value is NaN or infinite.
    #[error("{what}: non-finite value at index {index}")]
    NonFinite {
        /// Which argument.
        what: &'static str,
        /// Position of the first bad value.
        index: usize,
    },
    /// An input or output was made for another matrix shape.
    #[error("shape mismatch: data is for {found_in} -> {found_out}, matrix is {d_in} -> {d_out}")]
    ShapeMismatch {
        /// The matrix's inputs.
        d_in: usize,
        /// The matrix's outputs.
        d_out: usize,
        /// Inputs of the data.
        found_in: usize,
        /// Outputs of the data.
        found_out: usize,
    },
    /// An input or output was made for another method.
    #[error("method mismatch: data uses {found:?}, matrix uses {expected:?}")]
    MethodMismatch {
        /// The matrix's method.
        expected: Method,
        /// The data's method.
        found: Method,
    },
    /// An input or output was made for another tiling of the same shape.
    #[error("layout mismatch: data tiled {found:?}, matrix tiled {expected:?}")]
    LayoutMismatch {
        /// The matrix's (tokens, inputs, outputs) block sizes.
        expected: (usize, usize, usize),
        /// The data's block sizes.
        found: (usize, usize, usize),
    },
    /// Data and matrix use different CKKS parameter sets.
    #[error("parameter mismatch: data {found:02x?}, matrix {expected:02x?}")]
    ParamsMismatch {
        /// Fingerprint of the matrix's parameters.
        expected: [u8; 8],
        /// Fingerprint of the data's parameters.
        found: [u8; 8],
    },
    /// A layout's column scale differs from the one the client derives from its own
    /// column norms (the decoding scales are pinned: a server may not choose them).
    #[error(
        "decoding scale of column {column} is {found}, the model's column norm gives {expected}"
    )]
    ScaleMismatch {
        /// The column.
        column: usize,
        /// The layout's scale.
        found: f64,
        /// The scale the client derives.
        expected: f64,
    },
    /// A decrypted output above its Cauchy-Schwarz bound `||x_t|| ||w_j||` (plus the
    /// rounding and noise margins): the server's answer is not the product.
    #[error("decrypted output at token {token}, column {column} is {value:e}, above its bound {bound:e} (||x|| ||w_j||)")]
    OutputOutOfBound {
        /// Token row.
        token: usize,
        /// Output column.
        column: usize,
        /// The decoded value.
        value: f64,
        /// Its bound.
        bound: f64,
    },
    /// The wrong number of ciphertexts arrived.
    #[error("{what}: got {found} ciphertexts, expected {expected}")]
    CiphertextCount {
        /// Which message.
        what: &'static str,
        /// Count received.
        found: usize,
        /// Count the layout asks for.
        expected: usize,
    },
    /// The parameter set cannot hold this method's products at the requested precision.
    #[error("parameters too small: prime of {q_bits} bits, need at least {min_bits}")]
    ModulusTooSmall {
        /// Bits of the ciphertext prime.
        q_bits: u32,
        /// Bits needed.
        min_bits: u32,
    },
    /// The slot layout does not fit: `d_in + d_out - 1` must not exceed the slot count.
    #[error("slot layout needs {needed} slots, the ring has {slots}")]
    TooFewSlots {
        /// Slots needed by one token.
        needed: usize,
        /// Slots available.
        slots: usize,
    },
    /// The tokens-per-ciphertext request is zero or exceeds what the ring holds.
    #[error("invalid tokens per ciphertext {n_b} (1..={max})")]
    TokensPerCiphertext {
        /// Requested.
        n_b: usize,
        /// Largest possible.
        max: usize,
    },
    /// A streamed product's input turned out to be one it cannot take as it arrives.
    #[error("this product cannot be streamed: {reason}")]
    NotStreamable {
        /// Why.
        reason: &'static str,
    },
    /// A tiling asked of a packed layout that it cannot hold.
    #[error("tiling (n_b, k_i, k_o) = {tiling:?} does not fit this preset's packed layout")]
    InvalidTiling {
        /// The tiling asked for.
        tiling: (usize, usize, usize),
    },
    /// A message's bytes are short, trailing or inconsistent.
    #[error("malformed message: {what} at byte {offset}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// Byte offset.
        offset: usize,
    },
    /// The slot method needs Galois keys the server does not hold.
    #[error("the slot method needs Galois keys; none were installed")]
    MissingGaloisKeys,
    /// Decryption flooding has no noise bound for this method yet.
    #[error("decryption flooding is not available for the {method:?} method")]
    FloodingUnsupported {
        /// The layout's method.
        method: Method,
    },
    /// A flooding standard deviation that is negative, non-finite or above `2^60`.
    #[error("invalid flooding sigma {sigma}")]
    InvalidFloodingSigma {
        /// The value given.
        sigma: f64,
    },
    /// A link description that is no profile and no `RTT_MS,UP_MBIT,DOWN_MBIT` triple.
    #[error("invalid link {link:?}; expected lan, wan, home or RTT_MS,UP_MBIT,DOWN_MBIT (e.g. 20,100,100)")]
    InvalidLink {
        /// The text given (at most 64 characters).
        link: String,
    },
    /// A preset name that is none of [`crate::LinalgPreset::ALL`].
    #[error("unknown preset {name:?}; expected one of {}", crate::params::names())]
    UnknownPreset {
        /// The name given.
        name: String,
    },
    /// An error from the CKKS engine.
    #[error(transparent)]
    Ckks(#[from] selene_ckks::Error),
    /// An error from the canonical embedding.
    #[error(transparent)]
    Embedding(#[from] selene_ckks::embedding::EmbeddingError),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl From<selene_codec::CodecError> for Error {
    /// Every codec failure (short, over a maximum, trailing, bad magic or version) is a
    /// malformed message naming the field and its offset.
    fn from(e: selene_codec::CodecError) -> Self {
        Error::Malformed {
            what: e.what,
            offset: e.offset,
        }
    }
}
