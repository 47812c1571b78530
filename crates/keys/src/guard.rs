//! [`KeystoreGuard`]: the [`ReleaseGuard`] of a session whose key lives in a keystore.
//! Every release the selective client is about to send is checked against the owner's
//! signed policy (layer, tensor, flooding level, caps per session and per key) and, if
//! allowed, appended to the hash-chained release log before it is let go; a refusal or a
//! failed log write stops the release.

use std::path::PathBuf;

use crate::error::Result;
use crate::keystore::Keystore;
use crate::log::{self, LogEntry, ReleaseLog};
use crate::policy::OwnerPolicy;
use crate::release::{
    check_kind_and_noise, check_session_cap, Refusal, ReleaseAuthorized, ReleaseGuard,
    ReleaseRequest,
};
use crate::secret::KeyBytes;
use crate::session::SessionKey;

/// Authorizes releases against a keystore's signed policy and logs each one.
pub struct KeystoreGuard {
    policy: OwnerPolicy,
    key_id: String,
    session_rows: u64,
    key_rows: u64,
    reusable: bool,
    log: ReleaseLog,
    dir: PathBuf,
    head_key: KeyBytes,
}

impl std::fmt::Debug for KeystoreGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystoreGuard")
            .field("key", &self.key_id)
            .field("session_rows", &self.session_rows)
            .field("key_rows", &self.key_rows)
            .finish_non_exhaustive()
    }
}

impl KeystoreGuard {
    pub(crate) fn new(ks: &Keystore, key: &SessionKey) -> Result<Self> {
        let dir = ks.dir().to_path_buf();
        let (log, summary) = ReleaseLog::open(&dir.join(log::LOG_FILE), &ks.header().id)?;
        let head_key = ks.log_head_key();
        log::check_head(&dir, &head_key, &summary)?;
        let key_id = key.id_hex();
        Ok(Self {
            policy: ks.policy().clone(),
            key_rows: summary.rows_per_key.get(&key_id).copied().unwrap_or(0),
            key_id,
            reusable: ks.is_persisted(key),
            session_rows: 0,
            log,
            dir,
            head_key,
        })
    }

    /// Rows released in this session.
    pub fn session_rows(&self) -> u64 {
        self.session_rows
    }

    /// Rows released under this session key, over all sessions.
    pub fn key_rows(&self) -> u64 {
        self.key_rows
    }

    /// The policy's checks; the session and key counts after `r` if it passes.
    fn check(&self, r: &ReleaseRequest) -> std::result::Result<(u64, u64), Refusal> {
        let p = &self.policy;
        check_kind_and_noise(r, &p.allow, p.min_flood_sigma)?;
        let session_rows = check_session_cap(r, self.session_rows, p.max_per_session)?;
        let key_rows = self.key_rows.saturating_add(r.rows as u64);
        if key_rows > p.max_per_key {
            return Err(Refusal::KeyCap {
                rows: r.rows,
                released: self.key_rows,
                cap: p.max_per_key,
                key: self.key_id.clone(),
            });
        }
        Ok((session_rows, key_rows))
    }
}

impl ReleaseGuard for KeystoreGuard {
    /// Checks `r` against the signed policy and both caps, appends it to the release log
    /// and updates the signed head; only then mints the proof.
    fn authorize(&mut self, r: &ReleaseRequest) -> std::result::Result<ReleaseAuthorized, Refusal> {
        let (session_rows, key_rows) = self.check(r)?;
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (lines, head) = self
            .log
            .append(LogEntry {
                seq: 0,
                time,
                key: self.key_id.clone(),
                after_layer: r.after_layer,
                tensor: r.tensor,
                rows: r.rows as u64,
                flood_sigma: r.flood_sigma,
                digest: hex::encode(r.digest),
                prev: String::new(),
            })
            .map_err(Refusal::Log)?;
        log::write_head(&self.dir, &self.head_key, lines, &head).map_err(Refusal::Log)?;
        self.session_rows = session_rows;
        self.key_rows = key_rows;
        Ok(ReleaseAuthorized::mint())
    }

    /// The policy's `max_per_key` for a persisted key (it may serve other sessions);
    /// `None` for a fresh one, which cannot be persisted once it has released
    /// ([`Keystore::persist_session`]).
    fn key_rows_cap(&self) -> Option<u64> {
        self.reusable.then_some(self.policy.max_per_key)
    }
}

impl Keystore {
    /// A release guard for a session under `key`: the signed policy, the per-session and
    /// per-key caps (the per-key count starts from the log), and the release log.
    ///
    /// # Errors
    /// A broken release log.
    pub fn guard(&self, key: &SessionKey) -> Result<KeystoreGuard> {
        KeystoreGuard::new(self, key)
    }
}

#[cfg(test)]
mod tests {
    use selene_ckks::ExampleParams;

    use super::*;
    use crate::passphrase::{KdfParams, PassphraseRoot};
    use crate::release::Tensor;

    fn request(after_layer: usize, rows: usize, flood_sigma: f64) -> ReleaseRequest {
        ReleaseRequest {
            after_layer,
            tensor: Tensor::Residual,
            rows,
            flood_sigma,
            digest: [7; 32],
        }
    }

    /// A keystore allowing residual releases after layer 2 with sigma >= 0.5, at most 4
    /// rows per session and 6 per key.
    fn keystore(dir: &std::path::Path) -> Keystore {
        let root =
            PassphraseRoot::create(b"guard unit test", KdfParams::INSECURE_TEST, "P").unwrap();
        Keystore::init(
            dir,
            "dora",
            Box::new(root),
            &OwnerPolicy::selective(2, 0.5, 4, 6),
        )
        .unwrap()
    }

    /// A persisted key tells the client to flood for the per-key cap (every session it
    /// serves adds to the same key's privacy loss); a fresh key does not, and once it has
    /// released it cannot be persisted for reuse.
    #[test]
    fn a_reused_key_floods_for_the_per_key_cap_and_a_used_one_is_not_persisted() {
        let tmp = tempfile::tempdir().unwrap();
        let mut ks = keystore(tmp.path());
        let params = ExampleParams::Test12.build().unwrap();
        let fresh = SessionKey::fresh(&params);
        assert_eq!(ks.guard(&fresh).unwrap().key_rows_cap(), None);

        let reused = SessionKey::fresh(&params);
        ks.persist_session(&reused).unwrap();
        let loaded = ks.load_session(&reused.id_hex()).unwrap();
        assert_eq!(ks.guard(&loaded).unwrap().key_rows_cap(), Some(6));

        let mut g = ks.guard(&fresh).unwrap();
        let _sent = g.authorize(&request(2, 1, 0.5)).unwrap();
        assert!(matches!(
            ks.persist_session(&fresh),
            Err(crate::Error::KeyAlreadyReleased { rows: 1, .. })
        ));
        assert!(!ks.is_persisted(&fresh));
    }

    #[test]
    fn a_proof_only_for_an_allowed_logged_release_and_refusals_log_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let ks = keystore(tmp.path());
        let key = SessionKey::fresh(&ExampleParams::Test12.build().unwrap());
        let mut g = ks.guard(&key).unwrap();

        let _sent = g.authorize(&request(2, 3, 0.5)).unwrap();
        assert_eq!(ks.verify_log().unwrap().lines, 1, "logged before the proof");
        assert_eq!((g.session_rows(), g.key_rows()), (3, 3));

        // Each refusal: no proof, no log line, no count.
        let refused = [
            (request(1, 1, 0.5), "NotAllowed"),
            (request(2, 1, 0.25), "TooLittleNoise"),
            (request(2, 1, f64::NAN), "TooLittleNoise"),
            (request(2, 2, 0.5), "SessionCap"),
        ];
        for (r, why) in refused {
            let e = g.authorize(&r).unwrap_err();
            assert!(format!("{e:?}").starts_with(why), "{why}: {e:?}");
            assert_eq!(ks.verify_log().unwrap().lines, 1, "{why} logged nothing");
            assert_eq!((g.session_rows(), g.key_rows()), (3, 3));
        }

        // The next session under the same key counts its rows from the log.
        let mut g = ks.guard(&key).unwrap();
        assert_eq!((g.session_rows(), g.key_rows()), (0, 3));
        let _sent = g.authorize(&request(2, 3, 0.5)).unwrap();
        assert!(matches!(
            g.authorize(&request(2, 1, 0.5)),
            Err(Refusal::KeyCap {
                rows: 1,
                released: 6,
                cap: 6,
                ..
            })
        ));
        assert_eq!(ks.verify_log().unwrap().lines, 2);

        // A log that cannot be written: refused, no proof.
        let other = SessionKey::fresh(&ExampleParams::Test12.build().unwrap());
        let mut g = ks.guard(&other).unwrap();
        let log = tmp.path().join(log::LOG_FILE);
        std::fs::rename(&log, tmp.path().join("moved.log")).unwrap();
        std::fs::create_dir(&log).unwrap();
        assert!(matches!(
            g.authorize(&request(2, 1, 0.5)),
            Err(Refusal::Log(crate::Error::Io { .. }))
        ));
        assert_eq!((g.session_rows(), g.key_rows()), (0, 0));
    }
}
