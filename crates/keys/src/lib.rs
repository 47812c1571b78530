//! Selene's key hierarchy and release authorization (ARCHITECTURE.md, crates/keys;
//! docs/keys.md).
//!
//! ```text
//! root key (per client identity; never leaves its token, or never stored: Argon2id of
//! │         a passphrase)                          backend: RootKey (pkcs11 | passphrase)
//! └─ wraps: keystore key (256-bit, keystore.bin; rotatable)
//!    ├─ HKDF: session-wrap key ── wraps: persisted CKKS session seeds (on request only)
//!    ├─ HKDF: policy key ──────── signs: the owner's release policy (HMAC-SHA256)
//!    ├─ HKDF: log-head key ────── signs: the release log's head (the log is hash-chained)
//!    └─ HKDF: keystore MAC key ── authenticates: the whole keystore file
//! ```
//!
//! - [`RootKey`] is the backend trait; [`PassphraseRoot`] and [`Pkcs11Root`] implement it.
//! - [`Keystore`] creates, opens, rotates and stores; [`SessionKey`] is one session's
//!   CKKS secret (a seed for `selene_ckks::SecretKey::from_seed`), tied to one CKKS
//!   parameter set by its fingerprint.
//! - [`release`]: what a release is ([`ReleaseRequest`], [`Tensor`]), why one is refused
//!   ([`Refusal`]), the [`ReleaseGuard`] trait and its proof [`ReleaseAuthorized`], which
//!   only this crate mints and without which the protocol cannot send a release.
//!   [`PolicyGuard`] checks the session policy's layer, flooding and cap and logs
//!   nothing; [`KeystoreGuard`] checks every release against the owner's signed
//!   [`OwnerPolicy`] and appends it to the release log before minting the proof.
//! - [`open_or_ephemeral`] is what `selene run` calls, with the keystore directory the
//!   binary chose.
//!
//! Among Selene's crates this one depends on `selene-ckks` only (scripts/check_deps.py):
//! the protocol depends on it, never the reverse.
//!
//! # Security
//! Only well-kept crates do cryptography here: Argon2id (`argon2`), XChaCha20-Poly1305
//! (`chacha20poly1305`), HKDF and HMAC with SHA-256 (`hkdf`, `hmac`, `sha2`), the OS
//! CSPRNG (`rand_core::OsRng`), and AES key wrap with padding inside the PKCS#11 token.
//! Every secret buffer is zeroized on drop and prints as `[redacted]`. There is no TEE:
//! while the client runs, its session secret is in ordinary process memory.

pub mod backend;
pub mod envelope;
pub mod error;
mod format;
pub mod guard;
pub mod kdf;
pub mod keystore;
pub mod log;
pub mod open;
pub mod passphrase;
pub mod pkcs11;
pub mod policy;
mod private_file;
pub mod release;
pub mod secret;
pub mod session;

#[cfg(fuzzing)]
pub mod fuzzing;

pub use backend::{BackendDescriptor, RootKey};
/// The PIN type of the PKCS#11 backend (a zeroizing secret string).
pub use cryptoki::types::AuthPin;
pub use error::{Error, Result};
pub use guard::KeystoreGuard;
pub use keystore::{Header, Keystore, SessionInfo, Unlock, KEYSTORE_FILE};
pub use open::{open_or_ephemeral, KeySource, SessionKeys};
pub use passphrase::{KdfParams, PassphraseRoot};
pub use pkcs11::{Pkcs11Root, TokenLocation};
pub use policy::{AllowedRelease, OwnerPolicy};
pub use release::{PolicyGuard, Refusal, ReleaseAuthorized, ReleaseGuard, ReleaseRequest, Tensor};
pub use secret::KeyBytes;
pub use session::SessionKey;
