//! The release policy a key's owner signs: which layer and tensor may be released, the
//! least flooding noise, and caps on released rows per session and per session key. It
//! is stored as TOML beside an HMAC-SHA256 tag (RFC 2104) under a key derived from the
//! keystore key, so anyone who can edit files but does not hold the keystore key cannot
//! loosen it.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{Error, Result};
pub use crate::release::AllowedRelease;
use crate::release::Tensor;
use crate::secret::KeyBytes;

/// Version of the owner-policy format.
pub const OWNER_POLICY_VERSION: u32 = 1;

/// The owner's release policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerPolicy {
    /// Format version, [`OWNER_POLICY_VERSION`].
    pub version: u32,
    /// Least flooding standard deviation a release must carry.
    pub min_flood_sigma: f64,
    /// Rows released per session, at most.
    pub max_per_session: u64,
    /// Rows released under one session key, at most, over every session that used it
    /// (a persisted key is reused; counted from the release log).
    pub max_per_key: u64,
    /// The releases allowed; empty means strict mode only.
    #[serde(default)]
    pub allow: Vec<AllowedRelease>,
}

impl OwnerPolicy {
    /// Strict mode only: no release is authorized.
    pub fn strict() -> Self {
        Self {
            version: OWNER_POLICY_VERSION,
            min_flood_sigma: 0.0,
            max_per_session: 0,
            max_per_key: 0,
            allow: Vec::new(),
        }
    }

    /// Allows residual releases after `after_layer` with at least `min_flood_sigma`
    /// noise and the given caps.
    pub fn selective(
        after_layer: usize,
        min_flood_sigma: f64,
        per_session: u64,
        per_key: u64,
    ) -> Self {
        Self {
            version: OWNER_POLICY_VERSION,
            min_flood_sigma,
            max_per_session: per_session,
            max_per_key: per_key,
            allow: vec![AllowedRelease {
                after_layer,
                tensor: Tensor::Residual,
            }],
        }
    }

    /// Checks the policy is coherent.
    ///
    /// # Errors
    /// [`Error::Policy`] naming the problem.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::Policy { why });
        if self.version != OWNER_POLICY_VERSION {
            return bad(format!(
                "version {} (this build reads {OWNER_POLICY_VERSION})",
                self.version
            ));
        }
        if !(self.min_flood_sigma.is_finite() && self.min_flood_sigma >= 0.0) {
            return bad(format!(
                "min_flood_sigma = {} must be finite and >= 0",
                self.min_flood_sigma
            ));
        }
        if !self.allow.is_empty() && (self.max_per_session == 0 || self.max_per_key == 0) {
            return bad("releases are allowed but a cap is 0".to_string());
        }
        Ok(())
    }

    /// The policy as TOML (the exact bytes that get signed).
    ///
    /// # Errors
    /// Never for a validated policy.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::Policy { why: e.to_string() })
    }

    /// Parses and validates a TOML policy.
    ///
    /// # Errors
    /// [`Error::Policy`].
    pub fn from_toml(text: &str) -> Result<Self> {
        let p: Self = toml::from_str(text).map_err(|e| Error::Policy {
            why: e.message().to_string(),
        })?;
        p.validate()?;
        Ok(p)
    }
}

/// HMAC-SHA256 of `text` under `key`.
pub(crate) fn tag(key: &KeyBytes, text: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail; the all-zero tag
    // of the impossible branch would fail every verification.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key.expose()) else {
        return [0; 32];
    };
    mac.update(text);
    mac.finalize().into_bytes().into()
}

/// Verifies `tag` over `text` in constant time.
pub(crate) fn verify(key: &KeyBytes, text: &[u8], tag: &[u8; 32]) -> bool {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key.expose()) else {
        return false;
    };
    mac.update(text);
    mac.verify_slice(tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn policy_round_trips_and_tags_detect_edits() {
        let p = OwnerPolicy::selective(4, 0.5, 100, 200);
        let text = p.to_toml().unwrap();
        assert_eq!(OwnerPolicy::from_toml(&text).unwrap(), p);
        let key = KeyBytes::random();
        let t = tag(&key, text.as_bytes());
        assert!(verify(&key, text.as_bytes(), &t));
        let loosened = text.replace("max_per_session = 100", "max_per_session = 999");
        assert_ne!(loosened, text);
        assert!(!verify(&key, loosened.as_bytes(), &t));
        assert!(!verify(&KeyBytes::random(), text.as_bytes(), &t));
        let mut bad = p.clone();
        bad.min_flood_sigma = f64::NAN;
        assert!(bad.validate().is_err());
        bad = p;
        bad.max_per_key = 0;
        assert!(bad.validate().is_err());
        OwnerPolicy::strict().validate().unwrap();
    }
}
