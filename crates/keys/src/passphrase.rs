//! The laptop backend: the root key is Argon2id(passphrase, salt) (RFC 9106), never
//! stored; the keystore key is wrapped under it with XChaCha20-Poly1305, the keystore
//! header as associated data.

use argon2::{Algorithm, Argon2, Params, Version};
use rand_core::{OsRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::backend::{BackendDescriptor, RootKey};
use crate::envelope;
use crate::error::{Error, Result};
pub use crate::kdf::KdfParams;
use crate::secret::{KeyBytes, KEY_LEN};

/// Shortest passphrase accepted at `init`.
pub const MIN_PASSPHRASE: usize = 8;

/// A root key derived from a passphrase.
pub struct PassphraseRoot {
    key: KeyBytes,
    desc: BackendDescriptor,
}

impl std::fmt::Debug for PassphraseRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PassphraseRoot {{ {:?}, key: [redacted] }}", self.desc)
    }
}

fn derive(passphrase: &[u8], salt: &[u8; 16], p: KdfParams) -> Result<KeyBytes> {
    p.validate()?;
    let params =
        Params::new(p.m_kib, p.t, p.p, Some(KEY_LEN)).map_err(|source| Error::Kdf { source })?;
    let mut out = [0u8; KEY_LEN];
    let result = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, &mut out)
        .map_err(|source| Error::Kdf { source });
    let key = KeyBytes::from_slice(&out);
    out.zeroize();
    result?;
    key.ok_or(Error::InvalidField {
        field: "kdf output",
        value: KEY_LEN as u64,
    })
}

fn check_value(key: &KeyBytes, salt: &[u8; 16]) -> [u8; 16] {
    let mut out = [0; 16];
    out.copy_from_slice(&key.derive(salt, b"selene passphrase check").expose()[..16]);
    out
}

impl PassphraseRoot {
    /// A new root for `passphrase` with a fresh salt; `env` is the variable that will
    /// hold the passphrase when the keystore is opened.
    ///
    /// # Errors
    /// A passphrase shorter than [`MIN_PASSPHRASE`], invalid parameters.
    pub fn create(passphrase: &[u8], params: KdfParams, env: &str) -> Result<Self> {
        if passphrase.len() < MIN_PASSPHRASE {
            return Err(Error::WeakPassphrase {
                len: passphrase.len(),
                min: MIN_PASSPHRASE,
            });
        }
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        let key = derive(passphrase, &salt, params)?;
        let desc = BackendDescriptor::Passphrase {
            salt,
            params,
            check: check_value(&key, &salt),
            env: env.to_string(),
        };
        Ok(Self { key, desc })
    }

    /// Re-derives the root of an existing keystore.
    ///
    /// # Errors
    /// [`Error::WrongPassphrase`]; a descriptor of another backend.
    pub fn open(desc: &BackendDescriptor, passphrase: &[u8]) -> Result<Self> {
        let BackendDescriptor::Passphrase {
            salt,
            params,
            check,
            ..
        } = desc
        else {
            return Err(Error::InvalidField {
                field: "backend (expected passphrase)",
                value: 0,
            });
        };
        let key = derive(passphrase, salt, *params)?;
        if !bool::from(check_value(&key, salt).ct_eq(check)) {
            return Err(Error::WrongPassphrase);
        }
        Ok(Self {
            key,
            desc: desc.clone(),
        })
    }
}

impl RootKey for PassphraseRoot {
    fn descriptor(&self) -> &BackendDescriptor {
        &self.desc
    }

    fn wrap(&mut self, key: &KeyBytes, context: &[u8]) -> Result<Vec<u8>> {
        Ok(envelope::seal(&self.key, key.expose(), context))
    }

    fn unwrap(&mut self, wrapped: &[u8], context: &[u8]) -> Result<KeyBytes> {
        let plain = envelope::open(&self.key, wrapped, context, "keystore key")?;
        KeyBytes::from_slice(&plain).ok_or(Error::Unwrap {
            what: "keystore key",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_matches_rfc9106_vector() {
        // RFC 9106 sec. 5.3 (Argon2id): password 32 x 0x01, salt 16 x 0x02, secret
        // 8 x 0x03, associated data 12 x 0x04, m = 32 KiB, t = 3, p = 4, tag 32 bytes.
        let params = argon2::ParamsBuilder::new()
            .m_cost(32)
            .t_cost(3)
            .p_cost(4)
            .output_len(32)
            .data(argon2::AssociatedData::new(&[4; 12]).unwrap())
            .build()
            .unwrap();
        let a =
            Argon2::new_with_secret(&[3; 8], Algorithm::Argon2id, Version::V0x13, params).unwrap();
        let mut out = [0u8; 32];
        a.hash_password_into(&[1; 32], &[2; 16], &mut out).unwrap();
        assert_eq!(
            hex::encode(out),
            "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"
        );
    }

    #[test]
    fn wrong_passphrase_is_told_apart_and_wrap_round_trips() {
        let mut root =
            PassphraseRoot::create(b"correct horse", KdfParams::INSECURE_TEST, "P").unwrap();
        let ksk = KeyBytes::random();
        let wrapped = root.wrap(&ksk, b"header").unwrap();
        let desc = root.descriptor().clone();
        let mut again = PassphraseRoot::open(&desc, b"correct horse").unwrap();
        assert!(again.unwrap(&wrapped, b"header").unwrap().ct_eq(&ksk));
        assert!(matches!(
            again.unwrap(&wrapped, b"other header"),
            Err(Error::Unwrap { .. })
        ));
        assert!(matches!(
            PassphraseRoot::open(&desc, b"wrong horse"),
            Err(Error::WrongPassphrase)
        ));
        assert!(matches!(
            PassphraseRoot::create(b"short", KdfParams::INSECURE_TEST, "P"),
            Err(Error::WeakPassphrase { len: 5, .. })
        ));
        assert!(format!("{again:?}").contains("[redacted]"));
        let huge = KdfParams {
            m_kib: u32::MAX,
            t: 1,
            p: 1,
        };
        assert!(huge.validate().is_err());
        KdfParams::DEFAULT.validate().unwrap();
    }
}
