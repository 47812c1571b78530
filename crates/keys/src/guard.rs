//! [`KeystoreGuard`]: the [`ReleaseGuard`] of a session whose key lives in a keystore.
//! Every release the selective client is about to send is checked against the owner's
//! signed policy (layer, tensor, flooding level, caps per session and per key) and, if
//! allowed, appended to the hash-chained release log before it is let go; a refusal or a
//! failed log write stops the release.

use std::path::PathBuf;

use selene_protocol::policy::{ReleaseGuard, ReleaseRequest, Tensor};

use crate::error::Result;
use crate::keystore::Keystore;
use crate::log::{self, LogEntry, ReleaseLog};
use crate::policy::{AllowedRelease, OwnerPolicy};
use crate::secret::KeyBytes;
use crate::session::SessionKey;

/// Why a [`KeystoreGuard`] refused a release.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The policy does not allow this layer or tensor.
    #[error("the owner's signed policy does not allow releasing {tensor:?} after layer {after_layer} (allowed: {allowed:?})")]
    NotAllowed {
        /// Layer of the request.
        after_layer: usize,
        /// Tensor of the request.
        tensor: Tensor,
        /// What the policy allows.
        allowed: Vec<AllowedRelease>,
    },
    /// Less flooding than the policy requires.
    #[error("release flooded with sigma {got}, the signed policy requires at least {required}")]
    TooLittleNoise {
        /// Sigma of the request.
        got: f64,
        /// Sigma required.
        required: f64,
    },
    /// The release would pass the per-session cap.
    #[error("{rows} more rows would pass the cap of {cap} rows per session ({released} released in this session)")]
    SessionCap {
        /// Rows requested.
        rows: usize,
        /// Released so far in the session.
        released: u64,
        /// The cap.
        cap: u64,
    },
    /// The release would pass the per-key cap.
    #[error("{rows} more rows would pass the cap of {cap} rows under session key {key} ({released} released under it, per the release log)")]
    KeyCap {
        /// Rows requested.
        rows: usize,
        /// Released so far under the key.
        released: u64,
        /// The cap.
        cap: u64,
        /// Key id.
        key: String,
    },
    /// The release could not be logged, so it is not sent.
    #[error("the release could not be logged, so it is not sent: {0}")]
    Log(#[from] crate::Error),
}

/// Authorizes releases against a keystore's signed policy and logs each one.
pub struct KeystoreGuard {
    policy: OwnerPolicy,
    key_id: String,
    session_rows: u64,
    key_rows: u64,
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

    fn check(&self, r: &ReleaseRequest) -> std::result::Result<(), Refusal> {
        let p = &self.policy;
        if !p
            .allow
            .iter()
            .any(|a| a.after_layer == r.after_layer && a.tensor == r.tensor)
        {
            return Err(Refusal::NotAllowed {
                after_layer: r.after_layer,
                tensor: r.tensor,
                allowed: p.allow.clone(),
            });
        }
        if r.flood_sigma.is_nan() || r.flood_sigma < p.min_flood_sigma {
            return Err(Refusal::TooLittleNoise {
                got: r.flood_sigma,
                required: p.min_flood_sigma,
            });
        }
        let rows = r.rows as u64;
        if self.session_rows.saturating_add(rows) > p.max_per_session {
            return Err(Refusal::SessionCap {
                rows: r.rows,
                released: self.session_rows,
                cap: p.max_per_session,
            });
        }
        if self.key_rows.saturating_add(rows) > p.max_per_key {
            return Err(Refusal::KeyCap {
                rows: r.rows,
                released: self.key_rows,
                cap: p.max_per_key,
                key: self.key_id.clone(),
            });
        }
        Ok(())
    }
}

impl ReleaseGuard for KeystoreGuard {
    fn authorize(
        &mut self,
        r: &ReleaseRequest,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.check(r)?;
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
        self.session_rows += r.rows as u64;
        self.key_rows += r.rows as u64;
        Ok(())
    }
}
