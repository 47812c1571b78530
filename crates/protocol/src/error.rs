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
    /// A public prefix's keys and values that do not decode.
    #[error("malformed public prefix: {what}")]
    MalformedPrefix {
        /// What is wrong.
        what: &'static str,
    },
    /// A public prefix installed where it does not cover exactly the layers needed.
    #[error("public prefix holds layers {have:?} but layers {need:?} are needed here")]
    PrefixLayers {
        /// Layers the prefix holds.
        have: std::ops::Range<usize>,
        /// Layers this side computes.
        need: std::ops::Range<usize>,
    },
    /// A public prefix installed into a cache that already holds positions.
    #[error("a public prefix takes positions 0..P, but layer {layer} already holds {len}")]
    PrefixCacheNotEmpty {
        /// First non-empty layer.
        layer: usize,
        /// Positions it holds.
        len: usize,
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
        "decryption flooding for {released} released coefficients (LMSS22, 30-bit \
         statistical security) leaves {precision_bits:.1} bits of precision at this preset, \
         {min_bits} needed (docs/hardening.md)"
    )]
    FloodingTooWide {
        /// Decrypted coefficients the key may release.
        released: u64,
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
    /// A frame or message that does not decode (the peer's bytes).
    #[error("malformed message: {what} at byte {offset}")]
    Wire {
        /// What was being read.
        what: &'static str,
        /// Byte offset in the frame.
        offset: usize,
    },
    /// A frame whose announced length passes the limit (refused before reading it).
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The server answered with an error message.
    #[error("server refused ({code:?}, code {}): {message}", *code as u16)]
    Remote {
        /// The stable error code.
        code: crate::wire::ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The server answered with a message that does not fit the request.
    #[error("unexpected reply {got:?} to a {to:?} request")]
    UnexpectedReply {
        /// Kind of the reply.
        got: crate::wire::Kind,
        /// Kind of the request.
        to: crate::wire::Kind,
    },
    /// The server's layout for an encrypted layer differs from the one expected.
    #[error("the server's layouts for layer {layer} differ from the expected ones")]
    LayoutMismatch {
        /// First differing layer.
        layer: usize,
    },
    /// The server's decoding scales for an encrypted product are not the ones the
    /// client derives from the model's column norms (an active server choosing them).
    #[error("the server's decoding scales for layer {layer} {stage:?} are not the model's")]
    ScaleMismatch {
        /// Layer.
        layer: usize,
        /// Stage.
        stage: LinearStage,
        /// Which column and values.
        #[source]
        source: selene_linalg::Error,
    },
    /// The client has no column norms to pin the server's decoding scales with (a client
    /// bundle without them: `Weights::stream_column_norms`, `Weights::with_column_norms`).
    #[error("no column norms to pin the server's decoding scales")]
    NoColumnNorms(#[source] selene_model::Error),
    /// A decrypted product failed a check (an output above `||x|| ||w_j||`): the server's
    /// answer is not the product. The step is aborted and nothing more is released.
    #[error("the server's answer for layer {layer} {stage:?} failed the output bound")]
    ProductCheck {
        /// Layer.
        layer: usize,
        /// Stage.
        stage: LinearStage,
        /// The bound that failed.
        #[source]
        source: selene_linalg::Error,
    },
    /// The next token's q|k|v a server sent ahead of a release's answer has the wrong
    /// number of values.
    #[error("the server sent {found} values of the next token's q|k|v, not {expected}")]
    AheadShape {
        /// Values sent.
        found: usize,
        /// The model's q|k|v width.
        expected: usize,
    },
    /// A spot check (`--verify-rate`) recomputed a product in plaintext and the server's
    /// answer differs by more than the tolerance.
    #[error(
        "spot check of layer {layer} {stage:?}: the server's answer deviates by {deviation:.3e} \
         of ||x|| ||w_j||, tolerance {tolerance:.1e}"
    )]
    SpotCheckFailed {
        /// Layer.
        layer: usize,
        /// Stage.
        stage: LinearStage,
        /// Largest deviation, relative to `||x_t|| ||w_j||`.
        deviation: f64,
        /// The tolerance.
        tolerance: f64,
    },
    /// An earlier product of this session failed a check: nothing more is computed or
    /// released in it.
    #[error(
        "an earlier product of this session failed a check: nothing more is computed or released"
    )]
    FailedCheckEarlier,
    /// Spot checks need the layer matrices, which a client bundle does not hold.
    #[error("--verify-rate > 0 needs the model's layer matrices (the full model); a client bundle has none")]
    VerifyNeedsWeights,
    /// A fused session cannot run as asked.
    #[error("fused products: {why}")]
    Fused {
        /// Why not.
        why: &'static str,
    },
    /// A fused session was asked for with something only the unfused pass carries
    /// ([`crate::Terms::fusion_blocker`]).
    #[error("a fused session cannot run with {by}")]
    FusionBlocked {
        /// What blocks it.
        by: &'static str,
    },
    /// A spot-check rate outside `[0, 1]`.
    #[error("verify rate {rate} must be within 0..=1")]
    InvalidVerifyRate {
        /// The value given.
        rate: f64,
    },
    /// Requests and replies out of step: a reply read with nothing outstanding, a third
    /// request sent ahead, or a plain request while pipelined ones wait.
    #[error("pipelined requests out of step: {why}")]
    Pipeline {
        /// What went wrong.
        why: &'static str,
    },
    /// The session is closed (after `Close`, an error that ended it, or a lost peer).
    #[error("the session is closed")]
    Closed,
    /// A socket or file failed.
    #[error("i/o failed")]
    Io(#[from] std::io::Error),
    /// TLS failed (handshake, certificate, pinning).
    #[error("TLS failed")]
    Tls(#[from] rustls::Error),
    /// A certificate, key or fingerprint given by the user that cannot be used.
    #[error("{what}: {why}")]
    Credentials {
        /// Which input.
        what: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The server's `Welcome` names another model than the client's (the model
    /// fingerprints differ), so its products would not match this client's model.
    #[error("the server runs another model than this client's (fingerprints differ)")]
    ModelMismatch,
    /// Evaluation keys the session cannot use (another element, a repeat, one missing).
    #[error("Galois keys rejected: {0}")]
    KeysRejected(String),
    /// The CKKS engine refused bytes or an operation (a malformed key).
    #[error(transparent)]
    Ckks(#[from] selene_ckks::Error),
    /// The release guard refused a release; nothing was sent.
    // The reason is the error's source, not part of this message, so `{:#}` chains
    // (anyhow) print it once.
    #[error("release refused, nothing was sent")]
    ReleaseRefused {
        /// The guard's reason.
        source: selene_keys::Refusal,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<selene_codec::CodecError> for Error {
    /// A frame field the codec refuses (short, over its bound, trailing, bad magic or
    /// version): a malformed message naming the field and its offset.
    fn from(e: selene_codec::CodecError) -> Self {
        Error::Wire {
            what: e.what,
            offset: e.offset,
        }
    }
}
