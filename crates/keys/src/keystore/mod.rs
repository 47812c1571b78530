//! The keystore: one file, `keystore.bin`, in a private directory.
//!
//! ```text
//! "SELK" | version u16 | kind u8 | identity | keystore id [16] | generation u32 |
//! created u64 | backend descriptor                        <- header (AAD of the wrap)
//! wrapped keystore key (by the root)
//! policy TOML | HMAC-SHA256 tag (policy key)
//! n sessions u16 | per session: id [16] | CKKS parameters fingerprint [8] | created u64 |
//!                  XChaCha20-Poly1305(session-wrap key, seed;
//!                                     AAD = keystore id, id, parameters fingerprint)
//! HMAC-SHA256 (keystore MAC key) over everything above
//! ```
//!
//! Every subkey (MAC, policy, session wrap, log head) is HKDF-SHA256 of the keystore key
//! with the keystore id as salt and the purpose as info. Opening checks the file's mode,
//! parses with bounds checks, has the root unwrap the keystore key for this header,
//! then verifies the MAC and the policy's tag, so a truncated, bit-flipped or spliced
//! file fails before anything is used. Writes go to a temporary file, fsync, rename.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cryptoki::types::AuthPin;
use rand_core::{OsRng, RngCore};
use selene_codec::Writer;
use zeroize::Zeroizing;

mod file;

use file::{check_mode, now, parse, write_body, StoredSession};
pub use file::{write_private, Header, SessionInfo};

use crate::backend::{BackendDescriptor, RootKey};
use crate::envelope;
use crate::error::{io, Error, Result};
use crate::log;
use crate::passphrase::PassphraseRoot;
use crate::pkcs11::Pkcs11Root;
use crate::policy::{self, OwnerPolicy};
use crate::secret::KeyBytes;
use crate::session::{SessionKey, PARAMS_FINGERPRINT_LEN, SESSION_ID_LEN};

/// The keystore's file name in its directory.
pub const KEYSTORE_FILE: &str = "keystore.bin";
const MAGIC: &[u8; 4] = b"SELK";
/// Version 2: a session records its CKKS parameters' fingerprint (version 1 recorded a
/// one-byte linalg preset code and is refused with [`Error::UnsupportedVersion`]).
const VERSION: u16 = 2;
const KIND_KEYSTORE: u8 = 1;
/// Most persisted session keys one keystore holds.
pub const MAX_SESSIONS: usize = 1024;

/// The secret that unlocks a keystore's root.
#[derive(Clone, Copy)]
pub enum Unlock<'a> {
    /// The passphrase of a passphrase keystore.
    Passphrase(&'a [u8]),
    /// The user PIN of a PKCS#11 keystore, and optionally the module to load instead of
    /// the one the keystore names.
    Pin {
        /// The PIN.
        pin: &'a AuthPin,
        /// Module override.
        module: Option<&'a Path>,
    },
}

impl std::fmt::Debug for Unlock<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unlock::Passphrase(_) => f.write_str("Unlock::Passphrase([redacted])"),
            Unlock::Pin { module, .. } => write!(f, "Unlock::Pin([redacted], {module:?})"),
        }
    }
}

fn root_for(desc: &BackendDescriptor, unlock: Unlock<'_>) -> Result<Box<dyn RootKey>> {
    match (desc, unlock) {
        (BackendDescriptor::Passphrase { .. }, Unlock::Passphrase(p)) => {
            Ok(Box::new(PassphraseRoot::open(desc, p)?))
        }
        (BackendDescriptor::Pkcs11 { .. }, Unlock::Pin { pin, module }) => {
            Ok(Box::new(Pkcs11Root::open(desc, pin, module)?))
        }
        (BackendDescriptor::Passphrase { .. }, _) => Err(Error::WrongUnlock {
            backend: "passphrase",
            what: "passphrase",
        }),
        (BackendDescriptor::Pkcs11 { .. }, _) => Err(Error::WrongUnlock {
            backend: "pkcs11",
            what: "PIN",
        }),
    }
}

/// An open keystore: the root, the unwrapped keystore key, the signed policy and the
/// wrapped session keys.
pub struct Keystore {
    dir: PathBuf,
    header: Header,
    root: Box<dyn RootKey>,
    ksk: KeyBytes,
    wrapped_ksk: Vec<u8>,
    policy_text: String,
    policy_tag: [u8; 32],
    policy: OwnerPolicy,
    sessions: Vec<StoredSession>,
}

impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Keystore {{ dir: {:?}, identity: {:?}, backend: {}, generation: {}, sessions: {}, \
             keystore key: [redacted] }}",
            self.dir,
            self.header.identity,
            self.header.backend.kind(),
            self.header.generation,
            self.sessions.len()
        )
    }
}

impl Keystore {
    /// True when `dir` holds a keystore file.
    pub fn exists(dir: &Path) -> bool {
        dir.join(KEYSTORE_FILE).is_file()
    }

    /// Reads a keystore's public header without unlocking it.
    ///
    /// # Errors
    /// I/O, mode, and parse errors.
    pub fn peek(dir: &Path) -> Result<Header> {
        let path = dir.join(KEYSTORE_FILE);
        check_mode(&path)?;
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        Ok(parse(&bytes)?.header)
    }

    /// Creates a keystore in `dir` for `identity` under `root`, with a fresh keystore key
    /// and the owner's `policy`.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], an invalid policy, [`Error::TooLong`] for an identity
    /// (or backend name) longer than the file stores, backend and I/O errors.
    pub fn init(
        dir: &Path,
        identity: &str,
        mut root: Box<dyn RootKey>,
        policy: &OwnerPolicy,
    ) -> Result<Self> {
        let path = dir.join(KEYSTORE_FILE);
        if path.exists() {
            return Err(Error::AlreadyExists { path });
        }
        policy.validate()?;
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        let mut id = [0; 16];
        OsRng.fill_bytes(&mut id);
        let header = Header {
            identity: identity.to_string(),
            id,
            generation: 0,
            created: now(),
            backend: root.descriptor().clone(),
        };
        let ksk = KeyBytes::random();
        let wrapped_ksk = root.wrap(&ksk, &header.encode()?)?;
        let policy_text = policy.to_toml()?;
        let policy_tag = policy::tag(
            &ksk.derive(&id, b"selene policy mac"),
            policy_text.as_bytes(),
        );
        let ks = Self {
            dir: dir.to_path_buf(),
            header,
            root,
            ksk,
            wrapped_ksk,
            policy_text,
            policy_tag,
            policy: policy.clone(),
            sessions: Vec::new(),
        };
        ks.save()?;
        Ok(ks)
    }

    /// Opens the keystore in `dir` with `unlock`.
    ///
    /// # Errors
    /// [`Error::WrongPassphrase`] / [`Error::WrongPin`]; [`Error::Truncated`],
    /// [`Error::InvalidField`], [`Error::TooLong`], [`Error::TrailingBytes`] for a damaged
    /// file;
    /// [`Error::Unwrap`] / [`Error::KeystoreMac`] for an altered or spliced one;
    /// [`Error::PolicyMac`] for an edited policy; [`Error::Permissions`].
    pub fn open(dir: &Path, unlock: Unlock<'_>) -> Result<Self> {
        let path = dir.join(KEYSTORE_FILE);
        check_mode(&path)?;
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let p = parse(&bytes)?;
        let mut root = root_for(&p.header.backend, unlock)?;
        let ksk = root.unwrap(&p.wrapped_ksk, &bytes[..p.header_len])?;
        let id = p.header.id;
        if !policy::verify(
            &ksk.derive(&id, b"selene keystore mac"),
            &bytes[..p.body_len],
            &p.mac,
        ) {
            return Err(Error::KeystoreMac);
        }
        if !policy::verify(
            &ksk.derive(&id, b"selene policy mac"),
            p.policy_text.as_bytes(),
            &p.policy_tag,
        ) {
            return Err(Error::PolicyMac);
        }
        let policy = OwnerPolicy::from_toml(&p.policy_text)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            header: p.header,
            root,
            ksk,
            wrapped_ksk: p.wrapped_ksk,
            policy_text: p.policy_text,
            policy_tag: p.policy_tag,
            policy,
            sessions: p.sessions,
        })
    }

    /// Opens the keystore with the secret from an environment variable: `var`, else the
    /// one recorded at init. `SELENE_PKCS11_MODULE`, when set, overrides the module.
    ///
    /// # Errors
    /// [`Error::MissingSecret`] and those of [`Keystore::open`].
    pub fn open_env(dir: &Path, var: Option<&str>) -> Result<Self> {
        let header = Self::peek(dir)?;
        let var = var.unwrap_or(header.backend.secret_env()).to_string();
        let what = match header.backend {
            BackendDescriptor::Passphrase { .. } => "passphrase",
            BackendDescriptor::Pkcs11 { .. } => "PKCS#11 user PIN",
        };
        let secret = Zeroizing::new(std::env::var(&var).unwrap_or_default());
        if secret.is_empty() {
            return Err(Error::MissingSecret { var, what });
        }
        match header.backend {
            BackendDescriptor::Passphrase { .. } => {
                Self::open(dir, Unlock::Passphrase(secret.as_bytes()))
            }
            BackendDescriptor::Pkcs11 { .. } => {
                let pin = AuthPin::from(secret.as_str());
                let module = std::env::var_os("SELENE_PKCS11_MODULE").map(PathBuf::from);
                Self::open(
                    dir,
                    Unlock::Pin {
                        pin: &pin,
                        module: module.as_deref(),
                    },
                )
            }
        }
    }

    fn subkey(&self, purpose: &[u8]) -> KeyBytes {
        self.ksk.derive(&self.header.id, purpose)
    }

    pub(crate) fn log_head_key(&self) -> KeyBytes {
        self.subkey(b"selene log head")
    }

    fn session_aad(
        &self,
        id: &[u8; SESSION_ID_LEN],
        params: &[u8; PARAMS_FINGERPRINT_LEN],
    ) -> Vec<u8> {
        let mut aad = b"selene session key".to_vec();
        aad.extend_from_slice(&self.header.id);
        aad.extend_from_slice(id);
        aad.extend_from_slice(params);
        aad
    }

    fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::new();
        write_body(
            &mut w,
            &self.header,
            &self.wrapped_ksk,
            (&self.policy_text, &self.policy_tag),
            &self.sessions,
        )?;
        let mac = policy::tag(&self.subkey(b"selene keystore mac"), w.as_bytes());
        w.raw(&mac);
        Ok(w.into_bytes())
    }

    fn save(&self) -> Result<()> {
        write_private(&self.dir.join(KEYSTORE_FILE), &self.encode()?)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The public header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The owner's verified release policy.
    pub fn policy(&self) -> &OwnerPolicy {
        &self.policy
    }

    /// The signed policy text and its tag, as stored.
    pub fn signed_policy(&self) -> (&str, [u8; 32]) {
        (&self.policy_text, self.policy_tag)
    }

    /// A short public fingerprint of the current keystore key (a PRF output: reveals
    /// nothing of the key, changes on rotation).
    pub fn fingerprint(&self) -> String {
        hex::encode(&self.subkey(b"selene keystore fingerprint").expose()[..8])
    }

    /// The persisted session keys.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.sessions
            .iter()
            .map(|s| SessionInfo {
                id: hex::encode(s.id),
                params: s.params,
                created: s.created,
            })
            .collect()
    }

    /// Signs and stores a new release policy.
    ///
    /// # Errors
    /// An invalid policy; I/O errors.
    pub fn sign_policy(&mut self, policy: &OwnerPolicy) -> Result<()> {
        policy.validate()?;
        self.policy_text = policy.to_toml()?;
        self.policy_tag = policy::tag(
            &self.subkey(b"selene policy mac"),
            self.policy_text.as_bytes(),
        );
        self.policy = policy.clone();
        self.save()
    }

    /// Wraps `key` under the keystore key and stores it, so a later session can resume
    /// with it ([`Keystore::load_session`]). Sessions are ephemeral unless this is called.
    ///
    /// A persisted key may serve several sessions, so the decryption flooding of every
    /// one of them must be sized for all the rows the key may ever release (the policy's
    /// `max_per_key`; [`crate::ReleaseGuard::key_rows_cap`]), not for one session's: the
    /// LMSS22 divergence adds up over every release under the key. A key that has
    /// already released rows was flooded for its own session only, so it is refused.
    ///
    /// # Errors
    /// [`Error::KeyAlreadyReleased`] for a key with releases in the log;
    /// [`Error::TooManySessions`]; log and I/O errors.
    pub fn persist_session(&mut self, key: &SessionKey) -> Result<()> {
        if self.sessions.iter().any(|s| &s.id == key.id()) {
            return Ok(());
        }
        let (_, summary) =
            crate::log::ReleaseLog::open(&self.dir.join(crate::log::LOG_FILE), &self.header.id)?;
        if let Some(&rows) = summary.rows_per_key.get(&key.id_hex()) {
            return Err(Error::KeyAlreadyReleased {
                key: key.id_hex(),
                rows,
            });
        }
        if self.sessions.len() >= MAX_SESSIONS {
            return Err(Error::TooManySessions {
                count: self.sessions.len() + 1,
                max: MAX_SESSIONS,
            });
        }
        let aad = self.session_aad(key.id(), &key.params_fingerprint());
        let wrapped = envelope::seal(
            &self.subkey(b"selene session wrap"),
            key.seed().expose(),
            &aad,
        );
        self.sessions.push(StoredSession {
            id: *key.id(),
            params: key.params_fingerprint(),
            created: now(),
            wrapped,
        });
        self.save()
    }

    /// Whether `key` is persisted here, so it may serve more than one session.
    pub fn is_persisted(&self, key: &SessionKey) -> bool {
        self.sessions.iter().any(|s| &s.id == key.id())
    }

    fn unwrap_stored(&self, s: &StoredSession, wrap_key: &KeyBytes) -> Result<KeyBytes> {
        let seed = envelope::open(
            wrap_key,
            &s.wrapped,
            &self.session_aad(&s.id, &s.params),
            "session key",
        )?;
        KeyBytes::from_slice(&seed).ok_or(Error::Unwrap {
            what: "session key",
        })
    }

    /// Unwraps a persisted session key by its hex id. Its releases are capped and its
    /// flooding sized over every session that uses it ([`Keystore::persist_session`]).
    ///
    /// # Errors
    /// [`Error::NoSuchSession`]; [`Error::Unwrap`] for a wrapped key that is not this
    /// session's.
    pub fn load_session(&self, id_hex: &str) -> Result<SessionKey> {
        let s = self
            .sessions
            .iter()
            .find(|s| hex::encode(s.id) == id_hex)
            .ok_or_else(|| Error::NoSuchSession {
                id: id_hex.to_string(),
            })?;
        let seed = self.unwrap_stored(s, &self.subkey(b"selene session wrap"))?;
        Ok(SessionKey::from_parts(s.id, s.params, seed))
    }

    /// Replaces the keystore key: re-wraps the persisted session keys, re-signs the
    /// policy and the log head, and wraps the new key under the root. Session seeds, the
    /// release log and the root are unchanged.
    ///
    /// # Errors
    /// A broken release log (rotation re-signs its head, so it must verify first);
    /// backend and I/O errors.
    pub fn rotate(&mut self) -> Result<()> {
        let log_summary = self.verify_log()?;
        let old_wrap = self.subkey(b"selene session wrap");
        let seeds = self
            .sessions
            .iter()
            .map(|s| self.unwrap_stored(s, &old_wrap))
            .collect::<Result<Vec<_>>>()?;
        let mut next = self.header.clone();
        next.generation = next.generation.saturating_add(1);
        let new_ksk = KeyBytes::random();
        let wrapped_ksk = self.root.wrap(&new_ksk, &next.encode()?)?;
        self.header = next;
        self.ksk = new_ksk;
        self.wrapped_ksk = wrapped_ksk;
        let new_wrap = self.subkey(b"selene session wrap");
        for (i, seed) in seeds.iter().enumerate() {
            let (id, params) = (self.sessions[i].id, self.sessions[i].params);
            let aad = self.session_aad(&id, &params);
            self.sessions[i].wrapped = envelope::seal(&new_wrap, seed.expose(), &aad);
        }
        self.policy_tag = policy::tag(
            &self.subkey(b"selene policy mac"),
            self.policy_text.as_bytes(),
        );
        self.save()?;
        if log_summary.lines > 0 {
            log::write_head(
                &self.dir,
                &self.log_head_key(),
                log_summary.lines,
                &log_summary.head,
            )?;
        }
        Ok(())
    }

    /// Verifies the release log's chain and its signed head.
    ///
    /// # Errors
    /// [`Error::LogBroken`], [`Error::LogHead`].
    pub fn verify_log(&self) -> Result<log::LogSummary> {
        let s = log::verify(&self.dir.join(log::LOG_FILE), &self.header.id)?;
        log::check_head(&self.dir, &self.log_head_key(), &s)?;
        Ok(s)
    }

    #[cfg(test)]
    pub(crate) fn root_mut(&mut self) -> &mut dyn RootKey {
        self.root.as_mut()
    }
}

#[cfg(fuzzing)]
/// A parsed keystore file and what the fuzz target checks on it.
#[derive(Debug)]
pub struct KeystoreFile {
    /// The public header.
    pub header: Header,
    /// Bytes of the header as read (the associated data of the root's wrap).
    pub header_len: usize,
    /// Bytes of the header as re-encoded.
    pub header_encoded_len: usize,
    /// Bytes the keystore MAC covers.
    pub body_len: usize,
    /// The stored owner policy's text (parsed only after its tag verifies).
    pub policy_text: String,
    /// The parsed file encoded again.
    pub reencoded: Vec<u8>,
}

/// [`crate::fuzzing::keystore_file`]: the file parsed, and encoded again.
#[cfg(fuzzing)]
pub(crate) fn reparse(bytes: &[u8]) -> Result<KeystoreFile> {
    let p = parse(bytes)?;
    Ok(KeystoreFile {
        header_encoded_len: p.header.encode()?.len(),
        reencoded: p.encode()?,
        header: p.header,
        header_len: p.header_len,
        body_len: p.body_len,
        policy_text: p.policy_text,
    })
}

#[cfg(test)]
mod tests;
