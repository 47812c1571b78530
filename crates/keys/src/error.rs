//! The keys crate's error type: every way a keystore, a backend, a policy or the release
//! log can fail, each with the offending values and a hint at the cause.

use std::path::PathBuf;

/// Errors of the key hierarchy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A keystore already exists where `init` was asked to create one.
    #[error("a keystore already exists at {path}; use `selene keys rotate` or another --keystore")]
    AlreadyExists {
        /// The keystore file.
        path: PathBuf,
    },
    /// A keystore file readable or writable by other users.
    #[error("{path} has mode {mode:o}; a keystore must be private to its owner (chmod 600)")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The keystore file ends before a field it announces.
    #[error(
        "keystore file truncated: {field} needs {needed} bytes at offset {offset}, {left} left"
    )]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Its offset.
        offset: usize,
        /// Bytes it needs.
        needed: usize,
        /// Bytes left.
        left: usize,
    },
    /// A keystore field holds a value this build does not accept.
    #[error("keystore file: invalid {field} ({value})")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// A field longer than the keystore format allows: on reading, a damaged file; on
    /// writing, an identity, path, label or policy too long to store (never cut).
    #[error("keystore field {field} is {len} bytes long, above its maximum of {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: u64,
        /// The maximum.
        max: u64,
    },
    /// A keystore file in a format version this build does not read.
    #[error("keystore format version {found} is not readable by this build (it reads version {supported}){}", version_hint(*found, *supported))]
    UnsupportedVersion {
        /// The version in the file.
        found: u16,
        /// The version this build reads and writes.
        supported: u16,
    },
    /// Bytes after the end of the keystore.
    #[error("keystore file has {extra} trailing bytes after its MAC")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// The passphrase does not derive this keystore's root key.
    #[error("wrong passphrase for this keystore (or its KDF salt, parameters or check value were altered)")]
    WrongPassphrase,
    /// The secret supplied does not fit the keystore's backend.
    #[error("this keystore's root is a {backend} backend: supply its {what}")]
    WrongUnlock {
        /// The keystore's backend.
        backend: &'static str,
        /// What it needs.
        what: &'static str,
    },
    /// A passphrase shorter than the minimum.
    #[error("passphrase has {len} characters; at least {min} are required")]
    WeakPassphrase {
        /// Its length.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// An environment variable that should hold a PIN or passphrase is unset or empty.
    #[error("environment variable {var} is unset or empty: it must hold the {what}")]
    MissingSecret {
        /// The variable.
        var: String,
        /// What it should hold.
        what: &'static str,
    },
    /// Argon2 refused its parameters or failed.
    #[error("Argon2id key derivation failed")]
    Kdf {
        /// The library's error.
        source: argon2::Error,
    },
    /// Argon2 parameters outside the range this build accepts.
    #[error(
        "Argon2id parameters m = {m_kib} KiB, t = {t}, p = {p} are outside the accepted range"
    )]
    KdfParams {
        /// Memory in KiB.
        m_kib: u32,
        /// Passes.
        t: u32,
        /// Lanes.
        p: u32,
    },
    /// An AEAD or key-wrap check failed: the wrapped bytes are not what the wrapping key
    /// produced for this context.
    #[error("wrapped {what} failed authentication: the keystore was altered, truncated, or the wrapped key was swapped in from elsewhere")]
    Unwrap {
        /// Which key.
        what: &'static str,
    },
    /// The keystore's MAC does not match its contents.
    #[error("keystore MAC mismatch: the file was altered, or its wrapped keystore key belongs to another keystore")]
    KeystoreMac,
    /// The signed release policy's MAC does not match.
    #[error("release policy signature mismatch: the policy was altered after its owner signed it")]
    PolicyMac,
    /// The release policy cannot be parsed or is incoherent.
    #[error("release policy: {why}")]
    Policy {
        /// What is wrong.
        why: String,
    },
    /// A session key that the keystore does not hold.
    #[error("no persisted session key {id} in this keystore")]
    NoSuchSession {
        /// Its id, hex.
        id: String,
    },
    /// A secret key asked for under another CKKS parameter set than the session key's.
    #[error("session key is for CKKS parameters {key:02x?}, not the parameters {given:02x?} it was asked for")]
    ParametersMismatch {
        /// Fingerprint of the parameters the session key was made for.
        key: [u8; 8],
        /// Fingerprint of the parameters given.
        given: [u8; 8],
    },
    /// A key that already released rows cannot be persisted for reuse: its flooding was
    /// sized for its own session only.
    #[error(
        "session key {key} already released {rows} rows under flooding sized for one \
         session; persist a key before its first session so every session floods for the \
         per-key cap"
    )]
    KeyAlreadyReleased {
        /// Hex id of the key.
        key: String,
        /// Rows it released.
        rows: u64,
    },
    /// Too many persisted session keys.
    #[error("keystore holds {count} session keys, the limit is {max}")]
    TooManySessions {
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The PKCS#11 module failed.
    #[error("PKCS#11 {op} failed")]
    Pkcs11 {
        /// What was being done.
        op: &'static str,
        /// The module's error.
        source: cryptoki::error::Error,
    },
    /// The token rejected the PIN.
    #[error("PKCS#11: the token rejected the PIN (wrong PIN, or the PIN is locked)")]
    WrongPin,
    /// No token matches.
    #[error("PKCS#11: no token {what}")]
    NoToken {
        /// What was searched for.
        what: String,
    },
    /// The root key is not on the token.
    #[error("PKCS#11: root key {label:?} not found on token {token:?}")]
    NoRootKey {
        /// Its label.
        label: String,
        /// The token.
        token: String,
    },
    /// The key with the root's label may not serve as a root: its value is or was
    /// readable off the token, or it is not the AES-256 wrapping key Selene generates.
    #[error(
        "PKCS#11: the key labelled {label:?} cannot be the root key: {why}; remove it from \
         the token (or pick another identity) so a sensitive, non-extractable one is generated"
    )]
    UnfitRootKey {
        /// Its label.
        label: String,
        /// What is wrong with it.
        why: String,
    },
    /// A line of the release log breaks the hash chain or does not parse.
    #[error("release log line {line}: {why}")]
    LogBroken {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// The release log's head does not match the keystore's signed head.
    #[error("release log head mismatch: {why}")]
    LogHead {
        /// What differs.
        why: String,
    },
    /// A JSON encoding error.
    #[error("JSON could not be read or written")]
    Json(#[from] serde_json::Error),
}

/// What to do about a keystore of another format version.
fn version_hint(found: u16, supported: u16) -> &'static str {
    if found < supported {
        ": it was written by an older Selene, whose session keys named a linalg preset \
         instead of a CKKS parameter fingerprint. Move the keystore directory aside and \
         create a new one with `selene keys init`; its persisted session keys and release \
         log do not carry over"
    } else {
        ": it was written by a newer Selene"
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<selene_codec::CodecError> for Error {
    /// The codec's errors as this crate's keystore-file variants.
    fn from(e: selene_codec::CodecError) -> Self {
        use selene_codec::ErrorKind as K;
        let field = e.what;
        match e.kind {
            K::Short { needed, left } => Error::Truncated {
                field,
                offset: e.offset,
                needed,
                left,
            },
            K::OverMax { value, max } => Error::TooLong {
                field,
                len: value,
                max,
            },
            K::Trailing { count } => Error::TrailingBytes { extra: count },
            K::BadMagic { .. } => Error::InvalidField {
                field: "magic (not a Selene keystore)",
                value: 0,
            },
            K::UnsupportedVersion { found, max, .. } => Error::UnsupportedVersion {
                found: u16::try_from(found).unwrap_or(u16::MAX),
                supported: u16::try_from(max).unwrap_or(u16::MAX),
            },
            K::BadUtf8 { valid_up_to } => Error::InvalidField {
                field,
                value: valid_up_to as u64,
            },
        }
    }
}

/// Maps an I/O error to [`Error::Io`] with its path.
pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}
