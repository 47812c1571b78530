//! The audit crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while measuring leakage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A matrix handed to the Cholesky solver is not positive definite.
    #[error("matrix is not positive definite: pivot {pivot} is {value}")]
    NotPositiveDefinite {
        /// Index of the failing pivot.
        pivot: usize,
        /// Value of the pivot before the square root.
        value: f64,
    },
    /// Two arrays that must agree in size do not.
    #[error("{what}: expected {expected} values, got {got}")]
    Shape {
        /// What was being sized.
        what: &'static str,
        /// The size required.
        expected: usize,
        /// The size given.
        got: usize,
    },
    /// A layer count outside `0..=n_layers`.
    #[error("layer K = {k} is out of range: the model has {n_layers} layers")]
    LayerOutOfRange {
        /// The requested K.
        k: usize,
        /// Number of layers of the model.
        n_layers: usize,
    },
    /// A flooding standard deviation that is negative or not finite.
    #[error("flooding sigma must be finite and >= 0, got {sigma}")]
    InvalidSigma {
        /// The rejected sigma.
        sigma: f64,
    },
    /// A parameter that must be positive is zero.
    #[error("{what} must be at least 1")]
    Zero {
        /// Name of the parameter.
        what: &'static str,
    },
    /// The probe was trained on no samples, or scored against no tokens.
    #[error("no training samples for the probe at layer {k}")]
    NoSamples {
        /// Layer the probe was meant for.
        k: usize,
    },
    /// A prompt tokenizes to no tokens.
    #[error("prompt {index} has no tokens")]
    EmptyPrompt {
        /// Index of the prompt in its list.
        index: usize,
    },
    /// A sensitive field's span does not fall on character boundaries of its sentence.
    #[error("field span {start}..{end} is not inside a sentence of {len} bytes")]
    BadSpan {
        /// Start byte.
        start: usize,
        /// End byte.
        end: usize,
        /// Sentence length in bytes.
        len: usize,
    },
    /// Reading or writing a file failed.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The model failed (loading, tokenizing, a forward stage).
    #[error("the model failed")]
    Model(#[from] selene_model::Error),
    /// A measured table could not be encoded or decoded as JSON.
    #[error("the audit JSON could not be read or written")]
    Json(#[from] serde_json::Error),
    /// Drawing the plot failed.
    #[error("drawing the plot failed")]
    Plot(#[from] plotters::drawing::DrawingAreaErrorKind<std::io::Error>),
}

/// The audit crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
