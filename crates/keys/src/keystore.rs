//! The keystore: one file, `keystore.bin`, in a private directory.
//!
//! ```text
//! "SELK" | version u16 | kind u8 | identity | keystore id [16] | generation u32 |
//! created u64 | backend descriptor                        <- header (AAD of the wrap)
//! wrapped keystore key (by the root)
//! policy TOML | HMAC-SHA256 tag (policy key)
//! n sessions u16 | per session: id [16] | preset u8 | created u64 |
//!                  XChaCha20-Poly1305(session-wrap key, seed; AAD = keystore id, id, preset)
//! HMAC-SHA256 (keystore MAC key) over everything above
//! ```
//!
//! Every subkey (MAC, policy, session wrap, log head) is HKDF-SHA256 of the keystore key
//! with the keystore id as salt and the purpose as info. Opening checks the file's mode,
//! parses with bounds checks, has the root unwrap the keystore key for this header,
//! then verifies the MAC and the policy's tag, so a truncated, bit-flipped or spliced
//! file fails before anything is used. Writes go to a temporary file, fsync, rename.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cryptoki::types::AuthPin;
use rand_core::{OsRng, RngCore};
use selene_linalg::LinalgPreset;
use zeroize::Zeroizing;

use crate::backend::{BackendDescriptor, RootKey};
use crate::envelope;
use crate::error::{io, Error, Result};
use crate::format::{Reader, Writer};
use crate::guard::KeystoreGuard;
use crate::log;
use crate::passphrase::PassphraseRoot;
use crate::pkcs11::Pkcs11Root;
use crate::policy::{self, OwnerPolicy};
use crate::secret::KeyBytes;
use crate::session::{preset_code, preset_from_code, preset_name, SessionKey, SESSION_ID_LEN};

/// The keystore's file name in its directory.
pub const KEYSTORE_FILE: &str = "keystore.bin";
const MAGIC: &[u8; 4] = b"SELK";
const VERSION: u16 = 1;
const KIND_KEYSTORE: u8 = 1;
/// Most persisted session keys one keystore holds.
pub const MAX_SESSIONS: usize = 1024;

/// Writes `bytes` to `path` with mode 0600, atomically (temporary file, fsync, rename).
///
/// # Errors
/// I/O errors.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    // The mode above applies only to a new file; make sure of it.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn check_mode(path: &Path) -> Result<()> {
    let mode = std::fs::metadata(path)
        .map_err(io(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The public header of a keystore.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    /// The client identity the root key belongs to.
    pub identity: String,
    /// Random keystore id (salt of every subkey).
    pub id: [u8; 16],
    /// Keystore-key generation: 0 at init, +1 per rotation.
    pub generation: u32,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// The root backend.
    pub backend: BackendDescriptor,
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.raw(MAGIC);
        w.u16(VERSION);
        w.u8(KIND_KEYSTORE);
        w.str16(&self.identity);
        w.raw(&self.id);
        w.u32(self.generation);
        w.u64(self.created);
        self.backend.write(&mut w);
        w.buf
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        if &r.array::<4>("magic")? != MAGIC {
            return Err(Error::InvalidField {
                field: "magic (not a Selene keystore)",
                value: 0,
            });
        }
        let v = r.u16("version")?;
        if v != VERSION {
            return Err(Error::InvalidField {
                field: "version",
                value: v.into(),
            });
        }
        let k = r.u8("kind")?;
        if k != KIND_KEYSTORE {
            return Err(Error::InvalidField {
                field: "kind",
                value: k.into(),
            });
        }
        Ok(Self {
            identity: r.str16("identity")?,
            id: r.array("keystore id")?,
            generation: r.u32("generation")?,
            created: r.u64("created")?,
            backend: BackendDescriptor::read(r)?,
        })
    }
}

/// A persisted session key, wrapped.
#[derive(Clone, Debug)]
struct StoredSession {
    id: [u8; SESSION_ID_LEN],
    preset: LinalgPreset,
    created: u64,
    wrapped: Vec<u8>,
}

/// A persisted session key as `selene keys list` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionInfo {
    /// Its id (hex).
    pub id: String,
    /// Its preset's name.
    pub preset: &'static str,
    /// When it was persisted.
    pub created: u64,
}

/// The parsed file, before the root is asked for anything.
struct Parsed {
    header: Header,
    header_len: usize,
    wrapped_ksk: Vec<u8>,
    policy_text: String,
    policy_tag: [u8; 32],
    sessions: Vec<StoredSession>,
    body_len: usize,
    mac: [u8; 32],
}

fn parse(bytes: &[u8]) -> Result<Parsed> {
    let mut r = Reader::new(bytes);
    let header = Header::read(&mut r)?;
    let header_len = r.pos;
    let wrapped_ksk = r.bytes16("wrapped keystore key")?.to_vec();
    let policy_bytes = r.bytes32("policy")?;
    let policy_text =
        String::from_utf8(policy_bytes.to_vec()).map_err(|e| Error::InvalidField {
            field: "policy (not UTF-8)",
            value: e.utf8_error().valid_up_to() as u64,
        })?;
    let policy_tag = r.array("policy tag")?;
    let n = r.u16("session count")? as usize;
    if n > MAX_SESSIONS {
        return Err(Error::TooManySessions {
            count: n,
            max: MAX_SESSIONS,
        });
    }
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        sessions.push(StoredSession {
            id: r.array("session id")?,
            preset: preset_from_code(r.u8("session preset")?)?,
            created: r.u64("session created")?,
            wrapped: r.bytes16("wrapped session key")?.to_vec(),
        });
    }
    let body_len = r.pos;
    let mac = r.array("keystore MAC")?;
    if r.left() != 0 {
        return Err(Error::TrailingBytes { extra: r.left() });
    }
    Ok(Parsed {
        header,
        header_len,
        wrapped_ksk,
        policy_text,
        policy_tag,
        sessions,
        body_len,
        mac,
    })
}

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
    /// [`Error::AlreadyExists`], an invalid policy, backend and I/O errors.
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
        let wrapped_ksk = root.wrap(&ksk, &header.encode())?;
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
    /// [`Error::InvalidField`], [`Error::TrailingBytes`] for a damaged file;
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

    fn session_aad(&self, id: &[u8; SESSION_ID_LEN], preset: LinalgPreset) -> Vec<u8> {
        let mut aad = b"selene session key".to_vec();
        aad.extend_from_slice(&self.header.id);
        aad.extend_from_slice(id);
        aad.push(preset_code(preset));
        aad
    }

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.raw(&self.header.encode());
        w.bytes16(&self.wrapped_ksk);
        w.bytes32(self.policy_text.as_bytes());
        w.raw(&self.policy_tag);
        w.u16(self.sessions.len().min(MAX_SESSIONS) as u16);
        for s in self.sessions.iter().take(MAX_SESSIONS) {
            w.raw(&s.id);
            w.u8(preset_code(s.preset));
            w.u64(s.created);
            w.bytes16(&s.wrapped);
        }
        let mac = policy::tag(&self.subkey(b"selene keystore mac"), &w.buf);
        w.raw(&mac);
        w.buf
    }

    fn save(&self) -> Result<()> {
        write_private(&self.dir.join(KEYSTORE_FILE), &self.encode())
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
                preset: preset_name(s.preset),
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
    /// # Errors
    /// [`Error::TooManySessions`]; I/O errors.
    pub fn persist_session(&mut self, key: &SessionKey) -> Result<()> {
        if self.sessions.iter().any(|s| &s.id == key.id()) {
            return Ok(());
        }
        if self.sessions.len() >= MAX_SESSIONS {
            return Err(Error::TooManySessions {
                count: self.sessions.len() + 1,
                max: MAX_SESSIONS,
            });
        }
        let aad = self.session_aad(key.id(), key.preset());
        let wrapped = envelope::seal(
            &self.subkey(b"selene session wrap"),
            key.seed().expose(),
            &aad,
        );
        self.sessions.push(StoredSession {
            id: *key.id(),
            preset: key.preset(),
            created: now(),
            wrapped,
        });
        self.save()
    }

    fn unwrap_stored(&self, s: &StoredSession, wrap_key: &KeyBytes) -> Result<KeyBytes> {
        let seed = envelope::open(
            wrap_key,
            &s.wrapped,
            &self.session_aad(&s.id, s.preset),
            "session key",
        )?;
        KeyBytes::from_slice(&seed).ok_or(Error::Unwrap {
            what: "session key",
        })
    }

    /// Unwraps a persisted session key by its hex id.
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
        Ok(SessionKey::from_parts(s.id, s.preset, seed))
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
        let wrapped_ksk = self.root.wrap(&new_ksk, &next.encode())?;
        self.header = next;
        self.ksk = new_ksk;
        self.wrapped_ksk = wrapped_ksk;
        let new_wrap = self.subkey(b"selene session wrap");
        for (i, seed) in seeds.iter().enumerate() {
            let (id, preset) = (self.sessions[i].id, self.sessions[i].preset);
            let aad = self.session_aad(&id, preset);
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

    /// A release guard for a session under `key`: the signed policy, the per-session and
    /// per-key caps (the per-key count starts from the log), and the release log.
    ///
    /// # Errors
    /// A broken release log.
    pub fn guard(&self, key: &SessionKey) -> Result<KeystoreGuard> {
        KeystoreGuard::new(self, key)
    }

    #[cfg(test)]
    pub(crate) fn root_mut(&mut self) -> &mut dyn RootKey {
        self.root.as_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passphrase::KdfParams;

    const PASS: &[u8] = b"correct horse battery";

    fn new_store(dir: &Path) -> Keystore {
        let root =
            PassphraseRoot::create(PASS, KdfParams::INSECURE_TEST, "SELENE_PASSPHRASE").unwrap();
        Keystore::init(
            dir,
            "alice",
            Box::new(root),
            &OwnerPolicy::selective(2, 0.5, 8, 16),
        )
        .unwrap()
    }

    fn open(dir: &Path) -> Result<Keystore> {
        Keystore::open(dir, Unlock::Passphrase(PASS))
    }

    #[test]
    fn wrapped_session_keys_round_trip_and_survive_rotation() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let mut ks = new_store(&dir);
        let mode = std::fs::metadata(dir.join(KEYSTORE_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let a = SessionKey::fresh(LinalgPreset::Coeff11);
        let b = SessionKey::fresh(LinalgPreset::Coeff12);
        ks.persist_session(&a).unwrap();
        ks.persist_session(&b).unwrap();
        let fp = ks.fingerprint();
        drop(ks);

        let mut ks = open(&dir).unwrap();
        assert_eq!(ks.sessions().len(), 2);
        assert_eq!(ks.policy(), &OwnerPolicy::selective(2, 0.5, 8, 16));
        let a2 = ks.load_session(&a.id_hex()).unwrap();
        assert!(a2.seed().ct_eq(a.seed()));
        assert_eq!(a2.preset(), LinalgPreset::Coeff11);
        assert!(matches!(
            ks.load_session("00"),
            Err(Error::NoSuchSession { .. })
        ));
        let before = std::fs::read(dir.join(KEYSTORE_FILE)).unwrap();
        ks.rotate().unwrap();
        assert_ne!(ks.fingerprint(), fp);
        assert_eq!(ks.header().generation, 1);
        drop(ks);
        let after = std::fs::read(dir.join(KEYSTORE_FILE)).unwrap();
        assert_ne!(before, after);
        let ks = open(&dir).unwrap();
        assert!(ks.load_session(&b.id_hex()).unwrap().seed().ct_eq(b.seed()));
        assert!(ks.load_session(&a.id_hex()).unwrap().seed().ct_eq(a.seed()));
        // The rotated file no longer opens under the old keystore key's wrap.
        assert!(format!("{ks:?}").contains("[redacted]"));
        assert!(matches!(
            Keystore::init(
                &dir,
                "alice",
                Box::new(PassphraseRoot::create(PASS, KdfParams::INSECURE_TEST, "P").unwrap()),
                &OwnerPolicy::strict()
            ),
            Err(Error::AlreadyExists { .. })
        ));
    }

    #[test]
    fn wrong_passphrase_and_wrong_kind_of_secret_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        new_store(tmp.path());
        assert!(matches!(
            Keystore::open(tmp.path(), Unlock::Passphrase(b"wrong horse battery")),
            Err(Error::WrongPassphrase)
        ));
        let pin = AuthPin::from("1234");
        assert!(matches!(
            Keystore::open(
                tmp.path(),
                Unlock::Pin {
                    pin: &pin,
                    module: None
                }
            ),
            Err(Error::WrongUnlock { .. })
        ));
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let mut ks = new_store(tmp.path());
        ks.persist_session(&SessionKey::fresh(LinalgPreset::Coeff12))
            .unwrap();
        drop(ks);
        let path = tmp.path().join(KEYSTORE_FILE);
        let good = std::fs::read(&path).unwrap();
        for cut in 0..good.len() {
            write_private(&path, &good[..cut]).unwrap();
            let e = open(tmp.path()).unwrap_err();
            assert!(
                matches!(e, Error::Truncated { .. } | Error::InvalidField { .. }),
                "cut at {cut}: {e}"
            );
        }
        let mut long = good.clone();
        long.push(0);
        write_private(&path, &long).unwrap();
        assert!(matches!(
            open(tmp.path()),
            Err(Error::TrailingBytes { extra: 1 })
        ));
        let mut kinds = std::collections::HashSet::new();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            write_private(&path, &bad).unwrap();
            let e = open(tmp.path()).unwrap_err();
            kinds.insert(std::mem::discriminant(&e));
            assert!(
                !matches!(e, Error::Io { .. }),
                "flip at {i} gave an unrelated error: {e}"
            );
        }
        // Header flips fail the wrap's AAD or the KDF check, body flips the MAC.
        assert!(kinds.len() >= 3, "{kinds:?}");
        write_private(&path, &good).unwrap();
        open(tmp.path()).unwrap();
    }

    #[test]
    fn swapped_wrapped_keys_are_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let (d1, d2) = (tmp.path().join("one"), tmp.path().join("two"));
        let mut k1 = new_store(&d1);
        new_store(&d2);
        let (s1, s2) = (
            SessionKey::fresh(LinalgPreset::Coeff12),
            SessionKey::fresh(LinalgPreset::Coeff12),
        );
        k1.persist_session(&s1).unwrap();
        k1.persist_session(&s2).unwrap();
        drop(k1);
        let b1 = std::fs::read(d1.join(KEYSTORE_FILE)).unwrap();
        let b2 = std::fs::read(d2.join(KEYSTORE_FILE)).unwrap();
        let (p1, p2) = (parse(&b1).unwrap(), parse(&b2).unwrap());

        // Keystore two's wrapped keystore key (same passphrase) in keystore one's file.
        let i = b1
            .windows(p1.wrapped_ksk.len())
            .position(|w| w == p1.wrapped_ksk)
            .unwrap();
        let mut spliced = b1.clone();
        spliced[i..i + p1.wrapped_ksk.len()].copy_from_slice(&p2.wrapped_ksk);
        write_private(&d1.join(KEYSTORE_FILE), &spliced).unwrap();
        assert!(matches!(
            open(&d1),
            Err(Error::Unwrap {
                what: "keystore key"
            })
        ));

        // The two sessions' wrapped seeds exchanged: the MAC catches the file...
        let (w1, w2) = (&p1.sessions[0].wrapped, &p1.sessions[1].wrapped);
        let (i1, i2) = (
            b1.windows(w1.len()).position(|w| w == &w1[..]).unwrap(),
            b1.windows(w2.len()).position(|w| w == &w2[..]).unwrap(),
        );
        let mut swapped = b1.clone();
        swapped[i1..i1 + w1.len()].copy_from_slice(w2);
        swapped[i2..i2 + w2.len()].copy_from_slice(w1);
        write_private(&d1.join(KEYSTORE_FILE), &swapped).unwrap();
        assert!(matches!(open(&d1), Err(Error::KeystoreMac)));
        // ... and the session AAD catches the seed itself, even past the MAC.
        write_private(&d1.join(KEYSTORE_FILE), &b1).unwrap();
        let mut ks = open(&d1).unwrap();
        ks.sessions.swap(0, 1);
        let (a, b) = (ks.sessions[0].id, ks.sessions[1].id);
        ks.sessions[0].id = b;
        ks.sessions[1].id = a;
        assert!(matches!(
            ks.load_session(&s1.id_hex()),
            Err(Error::Unwrap {
                what: "session key"
            })
        ));
    }

    #[test]
    fn edited_policy_and_loose_permissions_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut ks = new_store(tmp.path());
        // A policy rewritten in place (MAC recomputed as if by someone holding only the
        // keystore MAC key) still fails its own tag.
        let (text, tag) = ks.signed_policy();
        let (text, tag) = (text.to_string(), tag);
        ks.policy_text = text.replace("max_per_session = 8", "max_per_session = 9999");
        ks.save().unwrap();
        assert!(matches!(open(tmp.path()), Err(Error::PolicyMac)));
        ks.policy_text = text;
        ks.policy_tag = tag;
        ks.save().unwrap();
        open(tmp.path()).unwrap();
        let path = tmp.path().join(KEYSTORE_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            open(tmp.path()),
            Err(Error::Permissions { mode: 0o644, .. })
        ));
        // Root wraps are bound to the header: the same bytes under another header fail.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut ks = open(tmp.path()).unwrap();
        let k = KeyBytes::random();
        let w = ks.root_mut().wrap(&k, b"header one").unwrap();
        assert!(ks.root_mut().unwrap(&w, b"header two").is_err());
    }
}
