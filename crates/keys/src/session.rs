//! Per-session CKKS key material: a 256-bit seed from which
//! `selene_ckks::SecretKey::from_seed` derives the ternary secret, a random id, and the
//! linalg preset it is for. Fresh per session by default; persisted (wrapped by the
//! keystore key) only when the user asks.

use rand_core::{OsRng, RngCore};
use selene_ckks::SecretKey;
use selene_linalg::{Client, LinalgPreset};

use crate::error::{Error, Result};
use crate::secret::KeyBytes;

/// Bytes of a session id.
pub const SESSION_ID_LEN: usize = 16;

/// The one-byte code of a preset in the keystore.
pub(crate) fn preset_code(p: LinalgPreset) -> u8 {
    match p {
        LinalgPreset::Coeff11 => 1,
        LinalgPreset::Coeff12 => 2,
        LinalgPreset::Slots13 => 3,
        LinalgPreset::Coeff12Wide => 4,
    }
}

/// The preset of a code.
pub(crate) fn preset_from_code(c: u8) -> Result<LinalgPreset> {
    match c {
        1 => Ok(LinalgPreset::Coeff11),
        2 => Ok(LinalgPreset::Coeff12),
        3 => Ok(LinalgPreset::Slots13),
        4 => Ok(LinalgPreset::Coeff12Wide),
        c => Err(Error::InvalidField {
            field: "session preset",
            value: c.into(),
        }),
    }
}

/// The preset's name.
pub fn preset_name(p: LinalgPreset) -> &'static str {
    match p {
        LinalgPreset::Coeff11 => "coeff11",
        LinalgPreset::Coeff12 => "coeff12",
        LinalgPreset::Slots13 => "slots13",
        LinalgPreset::Coeff12Wide => "coeff12wide",
    }
}

/// One session's CKKS secret, as a seed.
pub struct SessionKey {
    id: [u8; SESSION_ID_LEN],
    preset: LinalgPreset,
    seed: KeyBytes,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SessionKey {{ id: {}, preset: {}, seed: [redacted] }}",
            self.id_hex(),
            preset_name(self.preset)
        )
    }
}

impl SessionKey {
    /// A fresh key (random id and seed from the OS CSPRNG).
    pub fn fresh(preset: LinalgPreset) -> Self {
        let mut id = [0; SESSION_ID_LEN];
        OsRng.fill_bytes(&mut id);
        Self {
            id,
            preset,
            seed: KeyBytes::random(),
        }
    }

    pub(crate) fn from_parts(
        id: [u8; SESSION_ID_LEN],
        preset: LinalgPreset,
        seed: KeyBytes,
    ) -> Self {
        Self { id, preset, seed }
    }

    /// The session id.
    pub fn id(&self) -> &[u8; SESSION_ID_LEN] {
        &self.id
    }

    /// The session id in hex.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    /// The preset the key is for.
    pub fn preset(&self) -> LinalgPreset {
        self.preset
    }

    pub(crate) fn seed(&self) -> &KeyBytes {
        &self.seed
    }

    /// The CKKS secret key this seed determines.
    ///
    /// # Errors
    /// The preset's parameters fail to build (never for the shipped presets).
    pub fn secret_key(&self) -> Result<SecretKey> {
        let params = self.preset.build()?;
        Ok(SecretKey::from_seed(&params, self.seed.expose()))
    }

    /// A linalg client holding this session's secret key.
    ///
    /// # Errors
    /// As [`SessionKey::secret_key`].
    pub fn client(&self) -> Result<Client> {
        Ok(Client::from_secret_key(self.secret_key()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_secret_and_debug_is_redacted() {
        let a = SessionKey::fresh(LinalgPreset::Coeff11);
        let b = SessionKey::from_parts(
            *a.id(),
            a.preset(),
            KeyBytes::from_slice(a.seed().expose()).unwrap(),
        );
        // Equal seeds give equal secrets: compare their seeds through the CKKS API.
        assert_eq!(
            a.secret_key().unwrap().seed(),
            b.secret_key().unwrap().seed()
        );
        assert_ne!(a.id(), SessionKey::fresh(LinalgPreset::Coeff11).id());
        let shown = format!("{a:?}");
        assert!(shown.contains("[redacted]") && shown.contains(&a.id_hex()));
        assert!(!shown.contains(&hex::encode(a.seed().expose())));
        for p in [
            LinalgPreset::Coeff11,
            LinalgPreset::Coeff12,
            LinalgPreset::Coeff12Wide,
            LinalgPreset::Slots13,
        ] {
            assert_eq!(preset_from_code(preset_code(p)).unwrap(), p);
        }
        assert!(preset_from_code(9).is_err());
    }
}
