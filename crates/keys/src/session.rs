//! Per-session CKKS key material: a 256-bit seed from which
//! `selene_ckks::SecretKey::from_seed` derives the ternary secret, a random id, and the
//! fingerprint of the CKKS parameter set it is for (`selene_ckks::Parameters::fingerprint`,
//! the parameter-set id every serialized object carries). Fresh per session by default;
//! persisted (wrapped by the keystore key) only when the user asks.

use std::sync::Arc;

use rand_core::{OsRng, RngCore};
use selene_ckks::{Parameters, SecretKey};

use crate::error::{Error, Result};
use crate::secret::KeyBytes;

/// Bytes of a session id.
pub const SESSION_ID_LEN: usize = 16;

/// Bytes of a parameter-set fingerprint (`selene_ckks::Parameters::fingerprint`).
pub const PARAMS_FINGERPRINT_LEN: usize = 8;

/// One session's CKKS secret, as a seed, tied to one CKKS parameter set.
pub struct SessionKey {
    id: [u8; SESSION_ID_LEN],
    params: [u8; PARAMS_FINGERPRINT_LEN],
    seed: KeyBytes,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SessionKey {{ id: {}, params: {}, seed: [redacted] }}",
            self.id_hex(),
            hex::encode(self.params)
        )
    }
}

impl SessionKey {
    /// A fresh key for `params` (random id and seed from the OS CSPRNG).
    pub fn fresh(params: &Parameters) -> Self {
        let mut id = [0; SESSION_ID_LEN];
        OsRng.fill_bytes(&mut id);
        Self {
            id,
            params: params.fingerprint(),
            seed: KeyBytes::random(),
        }
    }

    pub(crate) fn from_parts(
        id: [u8; SESSION_ID_LEN],
        params: [u8; PARAMS_FINGERPRINT_LEN],
        seed: KeyBytes,
    ) -> Self {
        Self { id, params, seed }
    }

    /// The session id.
    pub fn id(&self) -> &[u8; SESSION_ID_LEN] {
        &self.id
    }

    /// The session id in hex.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    /// The fingerprint of the CKKS parameter set the key is for.
    pub fn params_fingerprint(&self) -> [u8; PARAMS_FINGERPRINT_LEN] {
        self.params
    }

    pub(crate) fn seed(&self) -> &KeyBytes {
        &self.seed
    }

    /// The CKKS secret key this seed determines under `params`.
    ///
    /// # Errors
    /// [`Error::ParametersMismatch`] when `params` is not the parameter set the key was
    /// made for.
    pub fn secret_key(&self, params: &Arc<Parameters>) -> Result<SecretKey> {
        let given = params.fingerprint();
        if given != self.params {
            return Err(Error::ParametersMismatch {
                key: self.params,
                given,
            });
        }
        Ok(SecretKey::from_seed(params, self.seed.expose()))
    }
}

#[cfg(test)]
mod tests {
    use selene_ckks::ExampleParams;

    use super::*;

    #[test]
    fn same_seed_same_secret_and_debug_is_redacted() {
        let params = ExampleParams::Test12.build().unwrap();
        let a = SessionKey::fresh(&params);
        let b = SessionKey::from_parts(
            *a.id(),
            a.params_fingerprint(),
            KeyBytes::from_slice(a.seed().expose()).unwrap(),
        );
        // Equal seeds give equal secrets: compare their seeds through the CKKS API.
        assert_eq!(
            a.secret_key(&params).unwrap().seed(),
            b.secret_key(&params).unwrap().seed()
        );
        assert_ne!(a.id(), SessionKey::fresh(&params).id());
        let shown = format!("{a:?}");
        assert!(shown.contains("[redacted]") && shown.contains(&a.id_hex()));
        assert!(shown.contains(&hex::encode(params.fingerprint())));
        assert!(!shown.contains(&hex::encode(a.seed().expose())));
    }

    #[test]
    fn secret_key_for_other_parameters_is_refused() {
        let (p12, p13) = (
            ExampleParams::Test12.build().unwrap(),
            ExampleParams::Anchor13.build().unwrap(),
        );
        let k = SessionKey::fresh(&p12);
        assert_eq!(k.params_fingerprint(), p12.fingerprint());
        match k.secret_key(&p13) {
            Err(Error::ParametersMismatch { key, given }) => {
                assert_eq!((key, given), (p12.fingerprint(), p13.fingerprint()));
            }
            other => panic!("expected a parameter mismatch, got {other:?}"),
        }
    }
}
