//! The protocol crate's error type.

use selene_model::LinearStage;

/// Errors of private generation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An encrypted product failed (shapes, layouts, parameters, malformed bytes).
    #[error(transparent)]
    Linalg(#[from] selene_linalg::Error),
    /// The model failed (loading, shapes).
    #[error(transparent)]
    Model(#[from] selene_model::Error),
    /// A request named a layer the prepared model does not have.
    #[error("layer {layer} out of range: the prepared model has {layers} layers")]
    LayerOutOfRange {
        /// Requested layer.
        layer: usize,
        /// Prepared layers.
        layers: usize,
    },
    /// A hidden-state release that does not decode.
    #[error("malformed release: {what}")]
    MalformedRelease {
        /// What is wrong.
        what: &'static str,
    },
    /// A flooding standard deviation that is negative or not finite.
    #[error("flooding sigma {sigma} must be finite and >= 0")]
    InvalidSigma {
        /// The value given.
        sigma: f64,
    },
    /// Decryption flooding sized for the release cap would destroy the products'
    /// precision at this parameter preset.
    #[error(
        "decryption flooding for {decryptions} decryptions (LMSS22, 30-bit statistical \
         security) leaves {precision_bits:.1} bits of precision at this preset, {min_bits} \
         needed (docs/hardening.md)"
    )]
    FloodingTooWide {
        /// Decryptions the key may release.
        decryptions: u64,
        /// Bits of precision the flooded products keep.
        precision_bits: f64,
        /// Bits required.
        min_bits: f64,
    },
    /// A request named a stage that does not run encrypted on the server.
    #[error("stage {stage:?} does not run on the server in strict mode")]
    NotEncrypted {
        /// Requested stage.
        stage: LinearStage,
    },
    /// A policy file that does not parse as a policy.
    #[error("policy file: {message}{}", span.as_ref().map_or(String::new(), |s| format!(" (bytes {}..{})", s.start, s.end)))]
    PolicyParse {
        /// The parser's message.
        message: String,
        /// Where in the file, when known.
        span: Option<std::ops::Range<usize>>,
    },
    /// A policy that parses but is incoherent or out of range.
    #[error("policy rejected: {why}")]
    Policy {
        /// What is wrong and how to fix it.
        why: String,
    },
    /// The release guard refused a release; nothing was sent.
    #[error("release refused, nothing was sent: {source}")]
    ReleaseRefused {
        /// The guard's reason.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
