//! Release authorization: what a release is ([`ReleaseRequest`], [`Tensor`]), the one
//! [`Refusal`] enum, the [`ReleaseGuard`] trait and its proof, [`ReleaseAuthorized`].
//!
//! A client value becomes server-visible only through a release, and a release is sent
//! only with a [`ReleaseAuthorized`] value, which only this crate can make: a guard mints
//! one after every check has passed (layer and tensor, flooding, caps) and, for the
//! [`crate::KeystoreGuard`], after the release is in the log. The protocol's sending
//! function takes the proof by value, so sending without authorization does not compile
//! (the habit of rustls's zero-sized proofs, `rustls:rustls/src/verify.rs`).
//!
//! Two guards implement the trait: [`PolicyGuard`] (the session policy's layer, sigma
//! and cap, no log; what a session without a keystore uses) and
//! [`crate::KeystoreGuard`] (the owner's signed policy, caps per session and per key,
//! and the hash-chained release log).

use serde::{Deserialize, Serialize};

/// One kind of release the owner allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedRelease {
    /// The tensor is the output of layers `0..after_layer`.
    pub after_layer: usize,
    /// Which tensor.
    pub tensor: Tensor,
}

/// Which tensor a release carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tensor {
    /// The residual stream after a layer (selective mode by depth).
    Residual,
}

/// One release the client is about to send, as a [`ReleaseGuard`] sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReleaseRequest {
    /// The released tensor is the output of layers `0..after_layer`.
    pub after_layer: usize,
    /// Which tensor.
    pub tensor: Tensor,
    /// Rows (positions) in this release.
    pub rows: usize,
    /// Flooding standard deviation applied to every value.
    pub flood_sigma: f64,
    /// SHA-256 of the release's wire bytes, for the release log.
    pub digest: [u8; 32],
}

/// Proof that a guard authorized one release: every check passed and, under a keystore,
/// the release is in the log. Zero-sized; only this crate makes one, it cannot be
/// copied, cloned or defaulted, and the protocol's sending function consumes it.
#[must_use = "a release is sent only with its authorization: pass it to the sending function"]
#[derive(Debug)]
pub struct ReleaseAuthorized {
    _private: (),
}

impl ReleaseAuthorized {
    /// Mints a proof. Call only after the request passed every check and, for a guard
    /// with a log, after its entry is written.
    pub(crate) fn mint() -> Self {
        Self { _private: () }
    }
}

/// Why a guard refused a release. Nothing is sent after a refusal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The policy does not allow this layer or tensor.
    #[error("the policy does not allow releasing {tensor:?} after layer {after_layer} (allowed: {allowed:?})")]
    NotAllowed {
        /// Layer of the request.
        after_layer: usize,
        /// Tensor of the request.
        tensor: Tensor,
        /// What the policy allows (empty: strict mode only).
        allowed: Vec<AllowedRelease>,
    },
    /// Less flooding than the policy requires.
    #[error("release flooded with sigma {got}, the policy requires at least {required}")]
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
    #[error("the release could not be logged, so it is not sent")]
    Log(#[from] crate::Error),
}

/// Authorizes each release before it leaves the client. A refusal stops the release:
/// nothing is sent.
pub trait ReleaseGuard {
    /// Checks `request` and returns the proof that lets it go, or the reason it may not.
    ///
    /// # Errors
    /// The [`Refusal`]; the guard's counts are unchanged by a refused request.
    fn authorize(&mut self, request: &ReleaseRequest) -> Result<ReleaseAuthorized, Refusal>;

    /// Rows the session key may release over **every** session that uses it, when that
    /// exceeds one session (a persisted, reused key): the client must size its decryption
    /// flooding for this many rows, since the privacy loss adds up over all releases under
    /// one key. `None` (the default): the key serves this session only.
    fn key_rows_cap(&self) -> Option<u64> {
        None
    }
}

/// The checks every guard makes: the request's layer and tensor are among `allowed`, and
/// its flooding is at least `min_sigma` (a NaN sigma is refused).
pub(crate) fn check_kind_and_noise(
    r: &ReleaseRequest,
    allowed: &[AllowedRelease],
    min_sigma: f64,
) -> Result<(), Refusal> {
    if !allowed
        .iter()
        .any(|a| a.after_layer == r.after_layer && a.tensor == r.tensor)
    {
        return Err(Refusal::NotAllowed {
            after_layer: r.after_layer,
            tensor: r.tensor,
            allowed: allowed.to_vec(),
        });
    }
    if r.flood_sigma.is_nan() || r.flood_sigma < min_sigma {
        return Err(Refusal::TooLittleNoise {
            got: r.flood_sigma,
            required: min_sigma,
        });
    }
    Ok(())
}

/// The rows released after `r` if it stays within `cap` rows per session.
pub(crate) fn check_session_cap(
    r: &ReleaseRequest,
    released: u64,
    cap: u64,
) -> Result<u64, Refusal> {
    let total = released.saturating_add(r.rows as u64);
    if total > cap {
        return Err(Refusal::SessionCap {
            rows: r.rows,
            released,
            cap,
        });
    }
    Ok(total)
}

/// The guard a session without a keystore uses: it enforces the session policy's layer,
/// flooding level and cap, and logs nothing.
#[derive(Debug)]
pub struct PolicyGuard {
    allowed: [AllowedRelease; 1],
    min_sigma: f64,
    cap: u64,
    released: u64,
}

impl PolicyGuard {
    /// A guard for residual releases after layer `after_layer` with at least `min_sigma`
    /// flooding and at most `cap` rows in all.
    pub fn new(after_layer: usize, min_sigma: f64, cap: u64) -> Self {
        Self {
            allowed: [AllowedRelease {
                after_layer,
                tensor: Tensor::Residual,
            }],
            min_sigma,
            cap,
            released: 0,
        }
    }

    /// Rows released so far.
    pub fn released(&self) -> u64 {
        self.released
    }
}

impl ReleaseGuard for PolicyGuard {
    fn authorize(&mut self, r: &ReleaseRequest) -> Result<ReleaseAuthorized, Refusal> {
        check_kind_and_noise(r, &self.allowed, self.min_sigma)?;
        self.released = check_session_cap(r, self.released, self.cap)?;
        Ok(ReleaseAuthorized::mint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(after_layer: usize, rows: usize, flood_sigma: f64) -> ReleaseRequest {
        ReleaseRequest {
            after_layer,
            tensor: Tensor::Residual,
            rows,
            flood_sigma,
            digest: [0; 32],
        }
    }

    #[test]
    fn guard_enforces_layer_sigma_and_cap() {
        let mut g = PolicyGuard::new(4, 0.5, 10);
        let _sent = g.authorize(&r(4, 6, 0.5)).unwrap();
        assert!(g.authorize(&r(3, 1, 0.5)).is_err());
        assert!(g.authorize(&r(4, 1, 0.25)).is_err());
        assert!(g.authorize(&r(4, 1, f64::NAN)).is_err());
        assert!(g.authorize(&r(4, 5, 0.5)).is_err());
        assert_eq!(g.released(), 6);
        let _sent = g.authorize(&r(4, 4, 1.0)).unwrap();
        assert_eq!(g.released(), 10);
        assert!(g.authorize(&r(4, 1, 1.0)).is_err());
    }

    #[test]
    fn refusals_name_the_reason_and_its_numbers() {
        let mut g = PolicyGuard::new(4, 0.5, 10);
        assert!(matches!(
            g.authorize(&r(3, 1, 0.5)),
            Err(Refusal::NotAllowed { after_layer: 3, ref allowed, .. })
                if allowed == &[AllowedRelease { after_layer: 4, tensor: Tensor::Residual }]
        ));
        assert!(matches!(
            g.authorize(&r(4, 1, 0.25)),
            Err(Refusal::TooLittleNoise { got, required }) if got == 0.25 && required == 0.5
        ));
        assert!(matches!(
            g.authorize(&r(4, 11, 0.5)),
            Err(Refusal::SessionCap {
                rows: 11,
                released: 0,
                cap: 10
            })
        ));
        assert_eq!(g.released(), 0, "refusals count nothing");
    }

    #[test]
    fn the_proof_is_zero_sized() {
        assert_eq!(std::mem::size_of::<ReleaseAuthorized>(), 0);
    }
}
