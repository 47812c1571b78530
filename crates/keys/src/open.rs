//! What `selene run` and `selene client` call: the keystore's session key and release
//! guard when a keystore exists, fresh ephemeral keys otherwise, and a line on stderr
//! saying which. Where the keystore lives (`$SELENE_HOME/keys` by default) is the
//! binary's decision; it passes the directory in.

use std::path::{Path, PathBuf};

use selene_ckks::Parameters;

use crate::error::Result;
use crate::guard::KeystoreGuard;
use crate::keystore::Keystore;
use crate::session::SessionKey;

/// Where a session's keys came from.
#[derive(Debug)]
pub enum KeySource {
    /// A keystore: its directory, identity and backend kind.
    Keystore {
        /// The keystore directory.
        dir: PathBuf,
        /// Its identity.
        identity: String,
        /// `passphrase` or `pkcs11`.
        backend: &'static str,
    },
    /// No keystore: a fresh key, never written anywhere, and no release log.
    Ephemeral,
}

/// A session's key, its release guard (keystore only) and where they came from.
#[derive(Debug)]
pub struct SessionKeys {
    /// The CKKS session key (fresh either way; persisted only on request).
    pub key: SessionKey,
    /// The keystore's release guard, `None` for ephemeral keys (a
    /// [`crate::PolicyGuard`] with the session policy's cap applies then).
    pub guard: Option<KeystoreGuard>,
    /// Where they came from.
    pub source: KeySource,
}

/// Opens the keystore in `dir` if there is one (unlocking it with the secret from the
/// environment variable recorded at init) and returns a fresh session key for `params`
/// and its guard; with no keystore, a fresh ephemeral key. Says which on stderr.
///
/// # Errors
/// A keystore that exists but does not open (wrong secret, damaged, tampered): that is
/// never silently replaced by ephemeral keys.
pub fn open_or_ephemeral(dir: &Path, params: &Parameters) -> Result<SessionKeys> {
    let key = SessionKey::fresh(params);
    if !Keystore::exists(dir) {
        eprintln!(
            "[keys: no keystore at {}; fresh ephemeral session key, no release log \
             (`selene keys init` creates one)]",
            dir.display()
        );
        return Ok(SessionKeys {
            key,
            guard: None,
            source: KeySource::Ephemeral,
        });
    }
    let ks = Keystore::open_env(dir, None)?;
    let guard = ks.guard(&key)?;
    let h = ks.header();
    eprintln!(
        "[keys: keystore {} ({}, identity {:?}); fresh session key {}, releases checked \
         against the signed policy and logged]",
        dir.display(),
        h.backend.kind(),
        h.identity,
        key.id_hex()
    );
    Ok(SessionKeys {
        key,
        guard: Some(guard),
        source: KeySource::Keystore {
            dir: dir.to_path_buf(),
            identity: h.identity.clone(),
            backend: h.backend.kind(),
        },
    })
}
