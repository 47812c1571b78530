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
//!   CKKS secret (a seed for `selene_ckks::SecretKey::from_seed`).
//! - [`KeystoreGuard`] is the `selene_protocol::ReleaseGuard` that checks every selective
//!   release against the signed [`OwnerPolicy`] and appends it to the release log.
//! - [`open_or_ephemeral`] is what `selene run` calls.
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
pub mod keystore;
pub mod log;
pub mod open;
pub mod passphrase;
pub mod pkcs11;
pub mod policy;
pub mod secret;
pub mod session;

#[cfg(fuzzing)]
pub mod fuzzing;

pub use backend::{BackendDescriptor, RootKey};
/// The PIN type of the PKCS#11 backend (a zeroizing secret string).
pub use cryptoki::types::AuthPin;
pub use error::{Error, Result};
pub use guard::{KeystoreGuard, Refusal};
pub use keystore::{Header, Keystore, SessionInfo, Unlock, KEYSTORE_FILE};
pub use open::{default_dir, open_or_ephemeral, KeySource, SessionKeys};
pub use passphrase::{KdfParams, PassphraseRoot};
pub use pkcs11::{Pkcs11Root, TokenLocation};
pub use policy::{AllowedRelease, OwnerPolicy};
pub use secret::KeyBytes;
pub use session::SessionKey;
